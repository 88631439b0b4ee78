-- Withdrawals to EVM chains; see the PostgreSQL migration for the meaning of each table.
CREATE TABLE chain_withdrawals (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    chain           TEXT NOT NULL,
    currency        TEXT NOT NULL,
    to_address      TEXT NOT NULL,
    amount          TEXT NOT NULL,
    hold_id         TEXT NOT NULL REFERENCES wallet_holds (id),
    status          TEXT NOT NULL CHECK (status IN ('requested', 'signed', 'broadcast', 'confirmed', 'failed')),
    nonce           INTEGER,
    tx_hash         TEXT,
    raw_tx          TEXT,
    max_fee_per_gas TEXT,
    priority_fee    TEXT,
    replacements    INTEGER NOT NULL DEFAULT 0,
    block_number    INTEGER,
    failure_reason  TEXT,
    broadcast_at    TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    UNIQUE (chain, nonce)
);
CREATE INDEX chain_withdrawals_user ON chain_withdrawals (user_id, id DESC);
CREATE INDEX chain_withdrawals_open ON chain_withdrawals (chain, status, id) WHERE status IN ('requested', 'signed', 'broadcast');
CREATE TABLE chain_withdrawal_txs (
    tx_hash       TEXT PRIMARY KEY,
    withdrawal_id TEXT NOT NULL REFERENCES chain_withdrawals (id),
    raw_tx        TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE INDEX chain_withdrawal_txs_withdrawal ON chain_withdrawal_txs (withdrawal_id);
CREATE TABLE chain_signers (
    chain      TEXT PRIMARY KEY,
    address    TEXT NOT NULL,
    next_nonce INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
