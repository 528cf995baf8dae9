INSERT INTO osago_outbox (id, stream, key, payload, created_at, publish_by, traceparent)
VALUES ($1, $2, $3, $4, $5, $6, $7)
