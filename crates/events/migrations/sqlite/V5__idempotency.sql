-- Idempotency-Key on POST: the first answer per principal and key, for 24 hours.
CREATE TABLE idempotency_keys (
    principal_id TEXT NOT NULL,
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    status       INTEGER,
    headers      TEXT,
    body         BLOB,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (principal_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
