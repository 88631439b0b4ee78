CREATE TABLE supplies (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    currency   TEXT NOT NULL,
    amount     TEXT NOT NULL,
    reserved   TEXT NOT NULL DEFAULT '0',
    status     TEXT NOT NULL CHECK (status IN ('active', 'paused', 'depleted', 'deleted')),
    version    INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX supplies_user ON supplies (user_id, id DESC);
CREATE INDEX supplies_currency ON supplies (currency, status, id DESC);
