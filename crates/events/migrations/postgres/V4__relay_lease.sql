-- At most one active relay per outbox: whoever holds an unexpired lease publishes.
CREATE TABLE relay_leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
