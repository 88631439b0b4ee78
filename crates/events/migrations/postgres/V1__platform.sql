CREATE TABLE outbox (
    seq            BIGSERIAL PRIMARY KEY,
    id             UUID NOT NULL UNIQUE,
    event_type     TEXT NOT NULL,
    version        INTEGER NOT NULL,
    topic          TEXT NOT NULL,
    aggregate_id   UUID NOT NULL,
    occurred_at    TIMESTAMPTZ NOT NULL,
    region         TEXT NOT NULL,
    correlation_id TEXT,
    data           JSONB NOT NULL,
    published_at   TIMESTAMPTZ
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;

CREATE TABLE users (
    id         UUID PRIMARY KEY,
    address    TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE auth_nonces (
    nonce      TEXT PRIMARY KEY,
    address    TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX auth_nonces_expiry ON auth_nonces (expires_at);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family_id  UUID NOT NULL,
    user_id    UUID NOT NULL REFERENCES users (id),
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    rotated_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
