-- UPSERT guarded by version: a duplicate or stale event changes nothing.
INSERT INTO osago_offers (request_id, insurer_id, version, status, premium_kopecks, started_at, row, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (request_id, insurer_id) DO UPDATE
SET version = EXCLUDED.version,
    status = EXCLUDED.status,
    premium_kopecks = EXCLUDED.premium_kopecks,
    started_at = COALESCE(EXCLUDED.started_at, osago_offers.started_at),
    row = EXCLUDED.row,
    updated_at = now(),
    expires_at = EXCLUDED.expires_at
WHERE osago_offers.version < EXCLUDED.version
RETURNING version
