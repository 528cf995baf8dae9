-- core-app's tables: requests, the transactional outbox, the read model
-- ("quote showcase") and the audit log.

CREATE TABLE osago_requests (
    request_id  uuid PRIMARY KEY,
    created_at  timestamptz NOT NULL,
    deadline_at timestamptz NOT NULL,
    -- The request as submitted: personal data, deleted at expires_at.
    request     jsonb NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX osago_requests_expires_at ON osago_requests (expires_at);

CREATE TABLE osago_outbox (
    id            uuid PRIMARY KEY,
    seq           bigserial NOT NULL,
    stream        text NOT NULL,
    key           text NOT NULL,
    payload       bytea NOT NULL,
    created_at    timestamptz NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    claimed_until timestamptz,
    dead          boolean NOT NULL DEFAULT false
);
CREATE INDEX osago_outbox_pending ON osago_outbox (seq) WHERE NOT dead;

-- Wakes the relay (LISTEN osago_outbox) when the inserting transaction commits.
CREATE FUNCTION osago_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('osago_outbox', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER osago_outbox_notify AFTER INSERT ON osago_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION osago_outbox_notify();

CREATE TABLE osago_offers (
    request_id      uuid NOT NULL,
    insurer_id      text NOT NULL,
    version         integer NOT NULL,
    status          text NOT NULL,
    premium_kopecks bigint,
    started_at      timestamptz,
    -- The read-model row (OfferRow JSON; no personal data).
    row             jsonb NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (request_id, insurer_id)
);
CREATE INDEX osago_offers_expires_at ON osago_offers (expires_at);

CREATE TABLE osago_audit (
    id          bigserial PRIMARY KEY,
    event_id    uuid NOT NULL UNIQUE,
    request_id  uuid NOT NULL,
    insurer_id  text NOT NULL,
    stream      text NOT NULL,
    version     integer NOT NULL,
    applied     boolean NOT NULL,
    event       jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX osago_audit_request ON osago_audit (request_id);
CREATE INDEX osago_audit_expires_at ON osago_audit (expires_at);
