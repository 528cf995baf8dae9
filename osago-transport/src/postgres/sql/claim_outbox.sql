-- Oldest unclaimed (or lease-expired) messages, locked so concurrent relays
-- skip them, then leased for $2 seconds.
WITH picked AS (
    SELECT id
    FROM osago_outbox
    WHERE NOT dead AND NOT expired AND (claimed_until IS NULL OR claimed_until < now())
    ORDER BY seq
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE osago_outbox AS o
SET claimed_until = now() + make_interval(secs => $2)
FROM picked
WHERE o.id = picked.id
RETURNING o.id, o.seq, o.stream, o.key, o.payload, o.created_at, o.attempts, o.publish_by, o.traceparent
