SELECT count(*) FROM osago_outbox WHERE dead
