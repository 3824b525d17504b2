-- 0004: a filter's own findings beside the verdict (rspamd's action, score and symbols, from `serve`). Never edit
-- or remove a shipped migration; add a new numbered file instead.
--
-- One optional row per message, in a table of its own rather than columns on `messages`: most messages (every
-- `hold`) have none, and `messages` stays as it was for everything that reads it. Written by ingest from the
-- spool header's `scan` record (spool format version 2), with INSERT OR IGNORE, so re-ingesting a spool file
-- after a crash converges. `symbols` is the JSON list the filter sent.
CREATE TABLE message_scan (
    message  TEXT PRIMARY KEY REFERENCES messages(id),
    action   TEXT,
    score    REAL,
    symbols  TEXT
) STRICT;
