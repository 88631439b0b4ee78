-- The ledger (DESIGN D11). An account is a user's (owner = the user id) or a system account
-- (owner starts with '@': '@world' for money entering or leaving, '@withdrawals'); only system
-- accounts may go below zero. Balances are a projection of the entries, kept in the same
-- transaction; `walletd wallet verify` recomputes them.
CREATE TABLE wallet_accounts (
    owner      TEXT NOT NULL,
    currency   TEXT NOT NULL,
    balance    NUMERIC NOT NULL DEFAULT 0,
    held       NUMERIC NOT NULL DEFAULT 0,
    version    BIGINT NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (owner, currency),
    CONSTRAINT wallet_user_accounts_never_below_zero
        CHECK (owner LIKE '@%' OR (balance >= 0 AND held >= 0 AND held <= balance))
);
-- A journal transaction: two or more entries summing to zero per asset. Never updated or deleted.
CREATE TABLE wallet_transactions (
    id         UUID PRIMARY KEY,
    kind       TEXT NOT NULL,
    reference  TEXT,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE wallet_entries (
    id             UUID PRIMARY KEY,
    transaction_id UUID NOT NULL REFERENCES wallet_transactions (id),
    owner          TEXT NOT NULL,
    currency       TEXT NOT NULL,
    amount         NUMERIC NOT NULL CHECK (amount <> 0),
    kind           TEXT NOT NULL,
    reference      TEXT,
    created_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX wallet_entries_owner ON wallet_entries (owner, id DESC);
CREATE INDEX wallet_entries_transaction ON wallet_entries (transaction_id);
-- Two-phase holds: pending reserves `available`; posted (paid out) or voided (released), once.
CREATE TABLE wallet_holds (
    id             UUID PRIMARY KEY,
    user_id        UUID NOT NULL,
    currency       TEXT NOT NULL,
    amount         NUMERIC NOT NULL CHECK (amount > 0),
    status         TEXT NOT NULL CHECK (status IN ('pending', 'posted', 'voided')),
    order_id       UUID,
    transaction_id UUID REFERENCES wallet_transactions (id),
    created_at     TIMESTAMPTZ NOT NULL,
    resolved_at    TIMESTAMPTZ
);
CREATE INDEX wallet_holds_user ON wallet_holds (user_id, id DESC);
CREATE UNIQUE INDEX wallet_holds_one_pending_per_order ON wallet_holds (order_id) WHERE status = 'pending';
CREATE TABLE wallet_deposits (
    id             UUID PRIMARY KEY,
    user_id        UUID NOT NULL,
    currency       TEXT NOT NULL,
    amount         NUMERIC NOT NULL CHECK (amount > 0),
    reference      TEXT NOT NULL UNIQUE,
    source         TEXT NOT NULL,
    transaction_id UUID NOT NULL REFERENCES wallet_transactions (id),
    created_at     TIMESTAMPTZ NOT NULL
);
CREATE TABLE wallet_transfers (
    id             UUID PRIMARY KEY,
    from_user_id   UUID NOT NULL,
    to_user_id     UUID NOT NULL,
    currency       TEXT NOT NULL,
    amount         NUMERIC NOT NULL CHECK (amount > 0),
    transaction_id UUID NOT NULL REFERENCES wallet_transactions (id),
    created_at     TIMESTAMPTZ NOT NULL
);
