-- Deposits from EVM chains (DESIGN D12). A user's BIP-32 child index, the same on every chain.
CREATE TABLE chain_address_indexes (
    user_id    UUID PRIMARY KEY,
    idx        BIGINT NOT NULL UNIQUE CHECK (idx >= 0 AND idx < 2147483648),
    created_at TIMESTAMPTZ NOT NULL
);
-- The derived address per chain (lower-case hex), which the watcher matches transfers against.
CREATE TABLE chain_addresses (
    chain      TEXT NOT NULL,
    address    TEXT NOT NULL,
    user_id    UUID NOT NULL,
    idx        BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (chain, address),
    UNIQUE (chain, user_id)
);
-- Where the watcher stands on each chain: the last block it processed, and the hashes of recent
-- blocks it processed (to find where a reorg forked).
CREATE TABLE chain_cursors (
    chain        TEXT PRIMARY KEY,
    block_number BIGINT NOT NULL,
    block_hash   TEXT NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE TABLE chain_blocks (
    chain  TEXT NOT NULL,
    number BIGINT NOT NULL,
    hash   TEXT NOT NULL,
    PRIMARY KEY (chain, number)
);
-- Each transfer to a deposit address, from when it is first seen, keyed by its transaction and its
-- place among the transaction's Transfer logs of the chain's tokens (transfer_index; -1 for the value
-- of a plain transaction): unlike log_index (its place in the block, kept for reference), that place
-- stays the same when a reorg mines the transaction in another block. status: seen -> credited; seen -> dropped (its block left the chain before it
-- was final); credited -> reorged (a deeper reorg removed it after it was credited: for admins).
CREATE TABLE chain_deposits (
    id           UUID PRIMARY KEY,
    chain        TEXT NOT NULL,
    tx_hash      TEXT NOT NULL,
    log_index    BIGINT NOT NULL,
    transfer_index BIGINT NOT NULL,
    block_number BIGINT NOT NULL,
    block_hash   TEXT NOT NULL,
    address      TEXT NOT NULL,
    user_id      UUID NOT NULL,
    currency     TEXT NOT NULL,
    amount       NUMERIC NOT NULL CHECK (amount > 0),
    status       TEXT NOT NULL CHECK (status IN ('seen', 'credited', 'dropped', 'reorged')),
    deposit_id   UUID REFERENCES wallet_deposits (id),
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (chain, tx_hash, transfer_index)
);
CREATE INDEX chain_deposits_user ON chain_deposits (user_id, id DESC);
CREATE INDEX chain_deposits_pending ON chain_deposits (chain, block_number) WHERE status = 'seen';
CREATE INDEX chain_deposits_status ON chain_deposits (status, id DESC);
