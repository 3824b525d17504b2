-- 0003: the incident (issue 15), PostgreSQL; see migrations/sqlite/0003_incident.sql for the why of each part.
ALTER TABLE messages ADD COLUMN scanner_version TEXT;
CREATE INDEX messages_scanner_version ON messages(scanner_version, received_us) WHERE scanner_version IS NOT NULL;

ALTER TABLE messages ADD COLUMN requarantined_from TEXT;
CREATE INDEX messages_requarantined ON messages(requarantined_from) WHERE requarantined_from IS NOT NULL;

ALTER TABLE audit ADD COLUMN prev_hash TEXT;
ALTER TABLE audit ADD COLUMN hash TEXT;

DROP TRIGGER audit_no_update ON audit;
-- @rust chain-audit-rows
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit FOR EACH ROW EXECUTE FUNCTION audit_append_only();

-- @rust trace-secret
