-- The W3C trace context of the span that wrote the event (NULL with tracing off): the consumer
-- that handles the event continues that trace.
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
