CREATE TABLE orders (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    currency   TEXT NOT NULL,
    amount     TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('pending', 'claimed', 'completed', 'cancelled', 'deleted')),
    claim_id   TEXT,
    version    INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX orders_user ON orders (user_id, id DESC);
CREATE INDEX orders_status ON orders (status, currency, id DESC);

CREATE TABLE order_items (
    id           TEXT PRIMARY KEY,
    order_id     TEXT NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    product_id   TEXT NOT NULL,
    product_name TEXT NOT NULL,
    price        TEXT NOT NULL,
    quantity     INTEGER NOT NULL CHECK (quantity BETWEEN 1 AND 10000)
);
CREATE INDEX order_items_order ON order_items (order_id, position);
