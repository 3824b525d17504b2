-- 0003: the incident (issue 15). Never edit or remove a shipped migration; add a new numbered file instead.

-- Provenance: the scanner's version / signature-database version, so "every message one bad signature update
-- hit" is one query (`--scanner-version`, a glob like `--verdict`).
ALTER TABLE messages ADD COLUMN scanner_version TEXT;
CREATE INDEX messages_scanner_version ON messages(scanner_version, received_us) WHERE scanner_version IS NOT NULL;

-- Re-quarantine after release: the id of the message whose release carried a valid trace MAC when this copy came
-- back through the filter (`search --requarantined`).
ALTER TABLE messages ADD COLUMN requarantined_from TEXT;
CREATE INDEX messages_requarantined ON messages(requarantined_from) WHERE requarantined_from IS NOT NULL;

-- A provable audit trail: each row carries the hash of the row before it (`prev_hash`; the first row the store's
-- genesis value in settings 'audit_genesis') and its own `hash`, BLAKE3 over a canonical encoding of its fields
-- and prev_hash (audit.rs). `log --verify` recomputes the chain.
ALTER TABLE audit ADD COLUMN prev_hash TEXT;
ALTER TABLE audit ADD COLUMN hash TEXT;

-- The rows written before this migration get their hashes in the same transaction: the append-only trigger on
-- UPDATE goes while Rust fills them in (SQL has no BLAKE3), and comes back right after.
DROP TRIGGER audit_no_update;
-- @rust chain-audit-rows
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;

-- The release trace header's MAC key (trace.rs): settings 'trace_secret', 32 random bytes as hex, made here so
-- that `init` and the upgrade both create it.
-- @rust trace-secret
