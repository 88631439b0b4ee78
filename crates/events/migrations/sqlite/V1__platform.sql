CREATE TABLE outbox (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL UNIQUE,
    event_type     TEXT NOT NULL,
    version        INTEGER NOT NULL,
    topic          TEXT NOT NULL,
    aggregate_id   TEXT NOT NULL,
    occurred_at    TEXT NOT NULL,
    region         TEXT NOT NULL,
    correlation_id TEXT,
    data           TEXT NOT NULL,
    published_at   TEXT
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;

CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    address    TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

CREATE TABLE auth_nonces (
    nonce      TEXT PRIMARY KEY,
    address    TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX auth_nonces_expiry ON auth_nonces (expires_at);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id),
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    rotated_at TEXT,
    revoked_at TEXT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
