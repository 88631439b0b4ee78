-- refinery runs each migration in a transaction: SET LOCAL lifts the pool's statement_timeout (5 s)
-- for this one only, since building the indexes below on a large outbox takes longer. The build
-- (CREATE INDEX, not CONCURRENTLY, which a transaction does not allow) blocks inserts into the outbox
-- while it runs, so every write that records an event waits for it: on a large outbox, migrate in a
-- quiet window.
SET LOCAL statement_timeout = 0;
-- An admin asked for a parked event to be sent back through its consumer group; the group's consumer
-- clears it when the outcome is recorded (handled: the row goes; parked again: the new error).
ALTER TABLE parked_events ADD COLUMN redrive_requested_at TIMESTAMPTZ;
-- The admin event log filtered by aggregate (one claim's events) or by request (correlation id).
CREATE INDEX outbox_aggregate ON outbox (aggregate_id, seq);
CREATE INDEX outbox_correlation ON outbox (correlation_id, seq) WHERE correlation_id IS NOT NULL;
