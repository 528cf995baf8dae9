SELECT count(*), min(created_at) FROM osago_outbox WHERE NOT dead AND NOT expired
