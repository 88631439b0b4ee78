-- Who caused the change: with occurred_at and correlation_id (the request id) the outbox is the audit trail.
ALTER TABLE outbox ADD COLUMN actor_id UUID;
