CREATE TABLE supplies (
    id         UUID PRIMARY KEY,
    user_id    UUID NOT NULL,
    currency   TEXT NOT NULL,
    amount     NUMERIC NOT NULL CHECK (amount >= 0),
    reserved   NUMERIC NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= amount),
    status     TEXT NOT NULL CHECK (status IN ('active', 'paused', 'depleted', 'deleted')),
    version    BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX supplies_user ON supplies (user_id, id DESC);
CREATE INDEX supplies_currency ON supplies (currency, status, id DESC);
