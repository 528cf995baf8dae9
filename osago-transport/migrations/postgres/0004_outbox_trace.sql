-- The W3C trace context of the POST that enqueued the message, sent on as
-- the Kafka record's `traceparent` header (NULL: none, or an older row).
ALTER TABLE osago_outbox ADD COLUMN traceparent text;
