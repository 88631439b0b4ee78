CREATE TABLE claims (
    id             UUID PRIMARY KEY,
    order_id       UUID NOT NULL,
    user_id        UUID NOT NULL,
    buyer_id       UUID NOT NULL,
    supply_id      UUID NOT NULL,
    currency       TEXT NOT NULL,
    amount         NUMERIC NOT NULL CHECK (amount > 0),
    status         TEXT NOT NULL CHECK (status IN ('pending', 'processed', 'failed', 'released')),
    failure_reason TEXT,
    claimed_at     TIMESTAMPTZ NOT NULL,
    processed_at   TIMESTAMPTZ,
    updated_at     TIMESTAMPTZ NOT NULL,
    version        BIGINT NOT NULL
);
-- The guard: an order has at most one live claim, whatever the concurrency.
CREATE UNIQUE INDEX claims_one_live_per_order ON claims (order_id) WHERE status IN ('pending', 'processed');
CREATE INDEX claims_user ON claims (user_id, id DESC);
CREATE INDEX claims_order ON claims (order_id, id DESC);
