-- Past their publish_by: no longer claimed, kept until the retention purge.
UPDATE osago_outbox
SET expired = true, claimed_until = NULL
WHERE id = ANY($1)
