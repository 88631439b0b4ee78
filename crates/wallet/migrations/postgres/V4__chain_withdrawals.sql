-- Withdrawals to EVM chains (DESIGN D12). Requested with a hold on the user's account, in the same
-- transaction; the signer (one per chain, under a lease) signs each with the next nonce of its own
-- counter, stores the signed bytes, then broadcasts them. status: requested -> signed -> broadcast
-- -> confirmed (the hold posted to @withdrawals), or failed (the hold voided).
CREATE TABLE chain_withdrawals (
    id              UUID PRIMARY KEY,
    user_id         UUID NOT NULL,
    chain           TEXT NOT NULL,
    currency        TEXT NOT NULL,
    to_address      TEXT NOT NULL,
    amount          NUMERIC NOT NULL CHECK (amount > 0),
    hold_id         UUID NOT NULL REFERENCES wallet_holds (id),
    status          TEXT NOT NULL CHECK (status IN ('requested', 'signed', 'broadcast', 'confirmed', 'failed')),
    nonce           BIGINT,
    tx_hash         TEXT,
    raw_tx          TEXT,
    max_fee_per_gas TEXT,
    priority_fee    TEXT,
    replacements    INTEGER NOT NULL DEFAULT 0,
    block_number    BIGINT,
    failure_reason  TEXT,
    broadcast_at    TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    UNIQUE (chain, nonce)
);
CREATE INDEX chain_withdrawals_user ON chain_withdrawals (user_id, id DESC);
CREATE INDEX chain_withdrawals_open ON chain_withdrawals (chain, status, id) WHERE status IN ('requested', 'signed', 'broadcast');
-- Every transaction signed for a withdrawal (a replacement adds one at the same nonce): whichever is
-- mined, it is known.
CREATE TABLE chain_withdrawal_txs (
    tx_hash       TEXT PRIMARY KEY,
    withdrawal_id UUID NOT NULL REFERENCES chain_withdrawals (id),
    raw_tx        TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX chain_withdrawal_txs_withdrawal ON chain_withdrawal_txs (withdrawal_id);
-- The signer's own nonce counter per chain (never the node's pending count).
CREATE TABLE chain_signers (
    chain      TEXT PRIMARY KEY,
    address    TEXT NOT NULL,
    next_nonce BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
