CREATE TABLE claims (
    id             TEXT PRIMARY KEY,
    order_id       TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    buyer_id       TEXT NOT NULL,
    supply_id      TEXT NOT NULL,
    currency       TEXT NOT NULL,
    amount         TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'processed', 'failed', 'released')),
    failure_reason TEXT,
    claimed_at     TEXT NOT NULL,
    processed_at   TEXT,
    updated_at     TEXT NOT NULL,
    version        INTEGER NOT NULL
);
-- The guard: an order has at most one live claim, whatever the concurrency.
CREATE UNIQUE INDEX claims_one_live_per_order ON claims (order_id) WHERE status IN ('pending', 'processed');
CREATE INDEX claims_user ON claims (user_id, id DESC);
CREATE INDEX claims_order ON claims (order_id, id DESC);
