-- Deposits from EVM chains (DESIGN D12); see the PostgreSQL migration for the meaning of each table.
CREATE TABLE chain_address_indexes (
    user_id    TEXT PRIMARY KEY,
    idx        INTEGER NOT NULL UNIQUE CHECK (idx >= 0 AND idx < 2147483648),
    created_at TEXT NOT NULL
);
CREATE TABLE chain_addresses (
    chain      TEXT NOT NULL,
    address    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    idx        INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (chain, address),
    UNIQUE (chain, user_id)
);
CREATE TABLE chain_cursors (
    chain        TEXT PRIMARY KEY,
    block_number INTEGER NOT NULL,
    block_hash   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE TABLE chain_blocks (
    chain  TEXT NOT NULL,
    number INTEGER NOT NULL,
    hash   TEXT NOT NULL,
    PRIMARY KEY (chain, number)
);
CREATE TABLE chain_deposits (
    id           TEXT PRIMARY KEY,
    chain        TEXT NOT NULL,
    tx_hash      TEXT NOT NULL,
    log_index    INTEGER NOT NULL,
    transfer_index INTEGER NOT NULL,
    block_number INTEGER NOT NULL,
    block_hash   TEXT NOT NULL,
    address      TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    currency     TEXT NOT NULL,
    amount       TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('seen', 'credited', 'dropped', 'reorged')),
    deposit_id   TEXT REFERENCES wallet_deposits (id),
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    UNIQUE (chain, tx_hash, transfer_index)
);
CREATE INDEX chain_deposits_user ON chain_deposits (user_id, id DESC);
CREATE INDEX chain_deposits_pending ON chain_deposits (chain, block_number) WHERE status = 'seen';
CREATE INDEX chain_deposits_status ON chain_deposits (status, id DESC);
