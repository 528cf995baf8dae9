-- Dead-lettered messages back in line (the relay's next poll takes them).
WITH requeued AS (
    UPDATE osago_outbox
    SET dead = false, attempts = 0, claimed_until = NULL
    WHERE dead
    RETURNING 1
)
SELECT count(*) FROM requeued
