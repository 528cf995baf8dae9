SELECT row, started_at
FROM osago_offers
WHERE request_id = $1 AND expires_at > now()
ORDER BY insurer_id
