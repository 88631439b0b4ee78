CREATE TABLE orders (
    id         UUID PRIMARY KEY,
    user_id    UUID NOT NULL,
    currency   TEXT NOT NULL,
    amount     NUMERIC NOT NULL CHECK (amount > 0),
    status     TEXT NOT NULL CHECK (status IN ('pending', 'claimed', 'completed', 'cancelled', 'deleted')),
    claim_id   UUID,
    version    BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX orders_user ON orders (user_id, id DESC);
CREATE INDEX orders_status ON orders (status, currency, id DESC);

CREATE TABLE order_items (
    id           UUID PRIMARY KEY,
    order_id     UUID NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    product_id   TEXT NOT NULL,
    product_name TEXT NOT NULL,
    price        NUMERIC NOT NULL CHECK (price > 0),
    quantity     INTEGER NOT NULL CHECK (quantity BETWEEN 1 AND 10000)
);
CREATE INDEX order_items_order ON order_items (order_id, position);
