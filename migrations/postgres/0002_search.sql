-- 0002: text search, PostgreSQL. The same selectors as SQLite's FTS5 trigram index (migrations/sqlite/0002):
-- `--subject` and `--header-from` are case-insensitive substring matches. Here `message_text` is an ordinary table
-- kept by triggers, with pg_trgm GIN indexes on the lower-cased text; db.rs writes the FTS5 query
-- `message_text MATCH 'subject : "text"'` as `quarantine_fts(subject, hdr_from, phrase)`.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE message_text_docs (
    docid  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id     TEXT NOT NULL UNIQUE
);
CREATE TABLE message_text (
    rowid     BIGINT PRIMARY KEY,
    subject   TEXT,
    hdr_from  TEXT
);
CREATE INDEX message_text_subject ON message_text USING gin (lower(subject) gin_trgm_ops);
CREATE INDEX message_text_hdr_from ON message_text USING gin (lower(hdr_from) gin_trgm_ops);

CREATE FUNCTION message_text_sync() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    d BIGINT;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO message_text_docs (id) VALUES (NEW.id) RETURNING docid INTO d;
        INSERT INTO message_text (rowid, subject, hdr_from) VALUES (d, NEW.subject, NEW.hdr_from);
        RETURN NEW;
    ELSIF TG_OP = 'UPDATE' THEN
        UPDATE message_text SET subject = NEW.subject, hdr_from = NEW.hdr_from
            WHERE rowid = (SELECT docid FROM message_text_docs WHERE id = OLD.id);
        RETURN NEW;
    ELSE
        DELETE FROM message_text WHERE rowid = (SELECT docid FROM message_text_docs WHERE id = OLD.id);
        DELETE FROM message_text_docs WHERE id = OLD.id;
        RETURN OLD;
    END IF;
END;
$$;
CREATE TRIGGER message_text_insert AFTER INSERT ON messages FOR EACH ROW EXECUTE FUNCTION message_text_sync();
CREATE TRIGGER message_text_delete AFTER DELETE ON messages FOR EACH ROW EXECUTE FUNCTION message_text_sync();
CREATE TRIGGER message_text_update AFTER UPDATE OF subject, hdr_from ON messages
    FOR EACH ROW EXECUTE FUNCTION message_text_sync();

-- The FTS5 phrase `COLUMN : "TEXT"` (text.rs, `""` for a quote) as a case-insensitive substring test.
CREATE FUNCTION quarantine_fts(subject TEXT, hdr_from TEXT, phrase TEXT) RETURNS BOOLEAN
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT strpos(
        lower(CASE WHEN split_part(phrase, ' : ', 1) = 'subject' THEN subject ELSE hdr_from END),
        lower(replace(substr(phrase, strpos(phrase, ' : "') + 4, length(phrase) - strpos(phrase, ' : "') - 4),
                      '""', '"'))) > 0
$$;

CREATE INDEX messages_live_received ON messages(received_us) WHERE purged_us IS NULL;
