-- 0006: search output at scale, continued, PostgreSQL; see migrations/sqlite/0006_search_rows.sql. Never edit or
-- remove a shipped migration.
ALTER TABLE recipients ADD COLUMN received_us BIGINT;   -- messages.received_us of `message`
ALTER TABLE recipients ADD COLUMN live BIGINT;          -- 1 while `message` is not purged, else 0

UPDATE recipients r SET received_us = m.received_us, live = CASE WHEN m.purged_us IS NULL THEN 1 ELSE 0 END
    FROM messages m WHERE m.id = r.message;

-- The recipient's own row is filled in before it is written (no second write of it, and no lock on the message
-- row: release claims on several gateways update recipients of one message at once).
CREATE FUNCTION recipients_copy_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT m.received_us, CASE WHEN m.purged_us IS NULL THEN 1 ELSE 0 END INTO NEW.received_us, NEW.live
        FROM messages m WHERE m.id = NEW.message;
    RETURN NEW;
END $$;
CREATE TRIGGER recipients_copy_insert BEFORE INSERT ON recipients
    FOR EACH ROW EXECUTE FUNCTION recipients_copy_row();
CREATE TRIGGER recipients_copy_move BEFORE UPDATE OF message ON recipients
    FOR EACH ROW EXECUTE FUNCTION recipients_copy_row();

CREATE FUNCTION recipients_copy_message() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.received_us IS DISTINCT FROM NEW.received_us
        OR (OLD.purged_us IS NULL) <> (NEW.purged_us IS NULL) THEN
        UPDATE recipients SET received_us = NEW.received_us,
            live = CASE WHEN NEW.purged_us IS NULL THEN 1 ELSE 0 END
            WHERE message = NEW.id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER recipients_copy_message AFTER UPDATE OF received_us, purged_us ON messages
    FOR EACH ROW EXECUTE FUNCTION recipients_copy_message();

-- Not covering the recipient's own columns as on SQLite: a B-tree entry here is limited to ~2.7 KB, and a relay's
-- reply or last error can be longer (see 0005). They come from the row.
CREATE INDEX recipients_live ON recipients(address_lc, received_us, message) WHERE live = 1;

-- How many recipients each message has (see the SQLite file). Recipients are inserted and deleted only by
-- exclusive writers, so the message row these triggers update is never contended by a release's claims.
ALTER TABLE messages ADD COLUMN recipient_count BIGINT;

UPDATE messages m SET recipient_count = c.n
    FROM (SELECT message, count(*) AS n FROM recipients GROUP BY message) c WHERE c.message = m.id;

CREATE FUNCTION recipient_count_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Counted up and down, not recounted: a recount per row made n recipients of one message cost n²/2.
    IF TG_OP = 'UPDATE' AND OLD.message IS NOT DISTINCT FROM NEW.message THEN
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        UPDATE messages SET recipient_count = coalesce(recipient_count, 0) + 1 WHERE id = NEW.message;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        UPDATE messages SET recipient_count = coalesce(recipient_count, 1) - 1 WHERE id = OLD.message;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER recipient_count_sync AFTER INSERT OR DELETE OR UPDATE OF message ON recipients
    FOR EACH ROW EXECUTE FUNCTION recipient_count_sync();

-- The names of a message's attachments in the order they were written, a JSON array (NULL for none). Attachments
-- are written with their message by an exclusive writer, so the message row it updates is never contended.
ALTER TABLE messages ADD COLUMN attachment_names TEXT;

UPDATE messages m SET attachment_names = a.names
    FROM (SELECT message, json_agg(name ORDER BY rowid)::text AS names FROM attachments GROUP BY message) a
    WHERE a.message = m.id;

CREATE FUNCTION attachment_names_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'DELETE' THEN
        UPDATE messages SET attachment_names =
            (SELECT json_agg(name ORDER BY rowid)::text FROM attachments WHERE message = NEW.message)
            WHERE id = NEW.message;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        UPDATE messages SET attachment_names =
            (SELECT json_agg(name ORDER BY rowid)::text FROM attachments WHERE message = OLD.message)
            WHERE id = OLD.message;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER attachment_names_sync AFTER INSERT OR DELETE OR UPDATE OF message, name ON attachments
    FOR EACH ROW EXECUTE FUNCTION attachment_names_sync();
