DELETE FROM osago_outbox WHERE id = ANY($1)
