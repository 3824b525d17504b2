-- 0002: text search. Never edit or remove a shipped migration; add a new numbered file instead.
--
-- `--subject TEXT` and `--header-from TEXT` are case-insensitive substring searches. A scan of every subject takes
-- hundreds of milliseconds at a million messages; an FTS5 trigram index answers a substring of three or more
-- characters by index lookups (select.rs falls back to a scan for shorter text, which a trigram cannot match).
--
-- message_text is contentless (the text is stored once, in messages) and keyed by message_text_docs.docid, a
-- stable integer per message: messages has no INTEGER PRIMARY KEY, so its rowid may change under VACUUM and cannot
-- key the index. The triggers keep both in step with every INSERT, DELETE and UPDATE of the indexed columns, whoever
-- runs it. Rows leave a contentless table through the 'delete' command with the old values, which works on every
-- SQLite with the trigram tokenizer (3.34+), not only on 3.43+ with contentless_delete, so the system sqlite3 shell
-- can still write to the index. FTS5 is an innocuous virtual table, so the triggers run under trusted_schema=OFF.
CREATE TABLE message_text_docs (
    docid  INTEGER PRIMARY KEY,
    id     TEXT NOT NULL UNIQUE               -- messages.id
) STRICT;

CREATE VIRTUAL TABLE message_text USING fts5(
    subject, hdr_from, content = '', tokenize = 'trigram case_sensitive 0'
);

CREATE TRIGGER message_text_insert AFTER INSERT ON messages
BEGIN
    INSERT INTO message_text_docs (id) VALUES (new.id);
    INSERT INTO message_text (rowid, subject, hdr_from)
        SELECT docid, new.subject, new.hdr_from FROM message_text_docs WHERE id = new.id;
END;

CREATE TRIGGER message_text_delete AFTER DELETE ON messages
BEGIN
    INSERT INTO message_text (message_text, rowid, subject, hdr_from)
        SELECT 'delete', docid, old.subject, old.hdr_from FROM message_text_docs WHERE id = old.id;
    DELETE FROM message_text_docs WHERE id = old.id;
END;

CREATE TRIGGER message_text_update AFTER UPDATE OF subject, hdr_from ON messages
BEGIN
    INSERT INTO message_text (message_text, rowid, subject, hdr_from)
        SELECT 'delete', docid, old.subject, old.hdr_from FROM message_text_docs WHERE id = old.id;
    INSERT INTO message_text (rowid, subject, hdr_from)
        SELECT docid, new.subject, new.hdr_from FROM message_text_docs WHERE id = old.id;
END;

-- Messages held before this migration.
INSERT INTO message_text_docs (id) SELECT id FROM messages ORDER BY received_us, rowid;
INSERT INTO message_text (rowid, subject, hdr_from)
    SELECT d.docid, m.subject, m.hdr_from FROM message_text_docs d JOIN messages m ON m.id = d.id;

-- Live messages by time: `search` with no selector or only --since/--until, and the count of live messages a
-- table's "N more match" needs, read this small index instead of every row of the table.
CREATE INDEX messages_live_received ON messages(received_us) WHERE purged_us IS NULL;
