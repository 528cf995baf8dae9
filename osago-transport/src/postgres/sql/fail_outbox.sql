UPDATE osago_outbox
SET attempts = attempts + 1,
    claimed_until = NULL,
    dead = attempts + 1 >= $2
WHERE id = $1
