INSERT INTO osago_audit (event_id, request_id, insurer_id, stream, version, applied, event, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (event_id) DO NOTHING
