WITH r AS (DELETE FROM osago_requests WHERE expires_at <= now() RETURNING 1),
     o AS (DELETE FROM osago_offers WHERE expires_at <= now() RETURNING 1),
     a AS (DELETE FROM osago_audit WHERE expires_at <= now() RETURNING 1),
     -- Outbox rows hold the request (personal data): whatever their state
     -- (pending, dead or expired), none outlives the retention ($1 seconds).
     m AS (DELETE FROM osago_outbox
           WHERE created_at <= now() - make_interval(secs => $1) RETURNING 1)
SELECT (SELECT count(*) FROM r) + (SELECT count(*) FROM o) + (SELECT count(*) FROM a)
     + (SELECT count(*) FROM m)
