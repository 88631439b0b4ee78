-- Durable delivery of the event log: a position per consumer group, the ids each group has
-- handled (inbox), and the events a group gave up on after its retries (parked).
CREATE TABLE consumer_offsets (
    group_name TEXT PRIMARY KEY,
    position   BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE inbox (
    group_name TEXT NOT NULL,
    event_id   UUID NOT NULL,
    handled_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (group_name, event_id)
);
CREATE TABLE parked_events (
    group_name TEXT NOT NULL,
    event_id   UUID NOT NULL,
    seq        BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    attempts   INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    parked_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (group_name, event_id)
);
