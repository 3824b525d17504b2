-- 0001: the initial index. Never edit or remove a shipped migration; add a new numbered file instead.

-- One row per held message. A purged message keeps its row as a tombstone (purged_us set) so the helpdesk can
-- answer "when and why did it go"; only rows with purged_us IS NULL reference a live blob.
CREATE TABLE messages (
    id            TEXT PRIMARY KEY,          -- short stable id printed by `hold`
    hash          TEXT NOT NULL,             -- BLAKE3 hex of the original bytes = blob name
    size          INTEGER NOT NULL,          -- original (uncompressed) size in bytes
    received_us   INTEGER NOT NULL,          -- unix time, microseconds, UTC
    env_from      TEXT NOT NULL,             -- envelope sender as given; '' is the null sender <>
    env_from_lc   TEXT NOT NULL,
    verdict       TEXT NOT NULL,
    scanner       TEXT,
    reason        TEXT,
    queue_id      TEXT,                      -- the MTA's queue id, the key for idempotent retries
    hdr_from      TEXT,
    hdr_to        TEXT,
    hdr_cc        TEXT,
    subject       TEXT,
    message_id    TEXT,
    hdr_date      TEXT,
    parse_note    TEXT,                      -- why some header fields are missing, if they are
    purged_us     INTEGER,
    purged_by     TEXT,
    purge_reason  TEXT
) STRICT;
CREATE INDEX messages_hash ON messages(hash);
CREATE INDEX messages_received ON messages(received_us);
CREATE INDEX messages_verdict_received ON messages(verdict, received_us);
CREATE INDEX messages_env_from ON messages(env_from_lc, received_us);
CREATE INDEX messages_message_id ON messages(message_id);
CREATE INDEX messages_queue_id ON messages(queue_id) WHERE queue_id IS NOT NULL;

-- One row per envelope recipient: the release journal.
CREATE TABLE recipients (
    message      TEXT NOT NULL REFERENCES messages(id),
    address      TEXT NOT NULL,
    address_lc   TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'held'
                 CHECK (state IN ('held', 'releasing', 'released', 'failed', 'purged')),
    release_id   TEXT,
    released_us  INTEGER,
    reply        TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    UNIQUE (message, address_lc)
) STRICT;                                    -- rowid order = envelope order
CREATE INDEX recipients_address ON recipients(address_lc);
CREATE INDEX recipients_state ON recipients(state);

CREATE TABLE attachments (
    message  TEXT NOT NULL REFERENCES messages(id),
    name     TEXT NOT NULL
) STRICT;
CREATE INDEX attachments_message ON attachments(message);

-- Hashes that lost their last live reference; purge's GC unlinks them one write transaction at a time, and hold
-- deletes its hash from here under the same write lock (DESIGN section 7).
CREATE TABLE gc_queue (
    hash       TEXT PRIMARY KEY,
    queued_us  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Append-only audit trail.
CREATE TABLE audit (
    seq        INTEGER PRIMARY KEY,
    at_us      INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    selection  TEXT NOT NULL,
    counts     TEXT NOT NULL,               -- JSON object
    reason     TEXT
) STRICT;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;

-- Store-wide switches such as the purge freeze.
CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
) STRICT, WITHOUT ROWID;
