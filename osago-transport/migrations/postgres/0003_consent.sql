-- The consents as core-app recorded them (time, text versions, client
-- address): personal data, kept in the request's row and deleted with it.
ALTER TABLE osago_requests ADD COLUMN consent jsonb;
