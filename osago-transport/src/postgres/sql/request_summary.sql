SELECT request_id, created_at, deadline_at
FROM osago_requests
WHERE request_id = $1 AND expires_at > now()
