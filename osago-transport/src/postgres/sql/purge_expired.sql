WITH r AS (DELETE FROM osago_requests WHERE expires_at <= now() RETURNING 1),
     o AS (DELETE FROM osago_offers WHERE expires_at <= now() RETURNING 1),
     a AS (DELETE FROM osago_audit WHERE expires_at <= now() RETURNING 1)
SELECT (SELECT count(*) FROM r) + (SELECT count(*) FROM o) + (SELECT count(*) FROM a)
