-- 0005: search output at scale, PostgreSQL; see migrations/sqlite/0005_search_cover.sql.

-- The number of live (not purged) messages, kept by a trigger whoever writes. One row. (The SQLite table's `only`
-- key is a reserved word here, and not needed: the code reads the one row.)
CREATE TABLE message_count (
    live  BIGINT NOT NULL
);
INSERT INTO message_count (live) SELECT count(*) FROM messages WHERE purged_us IS NULL;

CREATE FUNCTION message_count_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.purged_us IS NULL THEN UPDATE message_count SET live = live + 1; END IF;
    ELSIF TG_OP = 'DELETE' THEN
        IF OLD.purged_us IS NULL THEN UPDATE message_count SET live = live - 1; END IF;
    ELSIF (OLD.purged_us IS NULL) <> (NEW.purged_us IS NULL) THEN
        UPDATE message_count SET live = live + CASE WHEN NEW.purged_us IS NULL THEN 1 ELSE -1 END;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER message_count_insert AFTER INSERT ON messages FOR EACH ROW EXECUTE FUNCTION message_count_sync();
CREATE TRIGGER message_count_delete AFTER DELETE ON messages FOR EACH ROW EXECUTE FUNCTION message_count_sync();
CREATE TRIGGER message_count_purge AFTER UPDATE OF purged_us ON messages
    FOR EACH ROW EXECUTE FUNCTION message_count_sync();

-- A recipient selection reads message ids from the index (it replaces recipients_address, a prefix of it).
CREATE INDEX recipients_address_message ON recipients(address_lc, message);
DROP INDEX recipients_address;
-- No covering index of a message's recipients as on SQLite: a B-tree entry here is limited to ~2.7 KB, and a
-- relay's reply or last error can be longer, which would fail the write that records it. The unique
-- (message, address_lc) index serves the lookup.
