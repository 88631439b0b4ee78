-- The ledger (DESIGN D11); see the PostgreSQL migration. Amounts are exact decimal TEXT: the store
-- computes in exact decimals inside one IMMEDIATE transaction, and the CHECKs below compare signs
-- (exact) and, for `held <= balance`, as REAL (a backstop; the store's exact check comes first).
CREATE TABLE wallet_accounts (
    owner      TEXT NOT NULL,
    currency   TEXT NOT NULL,
    balance    TEXT NOT NULL DEFAULT '0',
    held       TEXT NOT NULL DEFAULT '0',
    version    INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (owner, currency),
    CONSTRAINT wallet_user_accounts_never_below_zero
        CHECK (owner LIKE '@%' OR (balance NOT LIKE '-%' AND held NOT LIKE '-%'
                                   AND CAST(held AS REAL) <= CAST(balance AS REAL)))
);
CREATE TABLE wallet_transactions (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    reference  TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE wallet_entries (
    id             TEXT PRIMARY KEY,
    transaction_id TEXT NOT NULL REFERENCES wallet_transactions (id),
    owner          TEXT NOT NULL,
    currency       TEXT NOT NULL,
    amount         TEXT NOT NULL CHECK (amount NOT IN ('0', '-0')),
    kind           TEXT NOT NULL,
    reference      TEXT,
    created_at     TEXT NOT NULL
);
CREATE INDEX wallet_entries_owner ON wallet_entries (owner, id DESC);
CREATE INDEX wallet_entries_transaction ON wallet_entries (transaction_id);
CREATE TABLE wallet_holds (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL,
    currency       TEXT NOT NULL,
    amount         TEXT NOT NULL CHECK (amount NOT LIKE '-%'),
    status         TEXT NOT NULL CHECK (status IN ('pending', 'posted', 'voided')),
    order_id       TEXT,
    transaction_id TEXT REFERENCES wallet_transactions (id),
    created_at     TEXT NOT NULL,
    resolved_at    TEXT
);
CREATE INDEX wallet_holds_user ON wallet_holds (user_id, id DESC);
CREATE UNIQUE INDEX wallet_holds_one_pending_per_order ON wallet_holds (order_id) WHERE status = 'pending';
CREATE TABLE wallet_deposits (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL,
    currency       TEXT NOT NULL,
    amount         TEXT NOT NULL,
    reference      TEXT NOT NULL UNIQUE,
    source         TEXT NOT NULL,
    transaction_id TEXT NOT NULL REFERENCES wallet_transactions (id),
    created_at     TEXT NOT NULL
);
CREATE TABLE wallet_transfers (
    id             TEXT PRIMARY KEY,
    from_user_id   TEXT NOT NULL,
    to_user_id     TEXT NOT NULL,
    currency       TEXT NOT NULL,
    amount         TEXT NOT NULL,
    transaction_id TEXT NOT NULL REFERENCES wallet_transactions (id),
    created_at     TEXT NOT NULL
);
