INSERT INTO osago_requests (request_id, created_at, deadline_at, request, expires_at, consent)
VALUES ($1, $2, $3, $4, $5, $6)
