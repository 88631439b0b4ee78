-- An admin asked for a parked event to be sent back through its consumer group; the group's consumer
-- clears it when the outcome is recorded (handled: the row goes; parked again: the new error).
ALTER TABLE parked_events ADD COLUMN redrive_requested_at TEXT;
-- The admin event log filtered by aggregate (one claim's events) or by request (correlation id).
CREATE INDEX outbox_aggregate ON outbox (aggregate_id, seq);
CREATE INDEX outbox_correlation ON outbox (correlation_id, seq) WHERE correlation_id IS NOT NULL;
