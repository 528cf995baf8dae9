-- Outbox messages past their request's deadline are marked expired by the
-- relay instead of being published late or dead-lettered; every row is
-- deleted with the retention (it holds personal data), found by created_at.
ALTER TABLE osago_outbox
    ADD COLUMN publish_by timestamptz,
    ADD COLUMN expired boolean NOT NULL DEFAULT false;
DROP INDEX osago_outbox_pending;
CREATE INDEX osago_outbox_pending ON osago_outbox (seq) WHERE NOT dead AND NOT expired;
CREATE INDEX osago_outbox_created_at ON osago_outbox (created_at);
