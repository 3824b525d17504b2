-- 0007: the busiest recipient's messages without an id lookup each (issue 13). Never edit or remove a shipped
-- migration; add a new numbered file instead.
--
-- `search --rcpt ADDR` walks the address's `recipients_live` entries and joined each to its message by id: one
-- descent of the id index per message, a random leaf each, ~16,000 of them for the busiest address at a million
-- messages, which the page cache could not hold beside the rows (0.15-0.22 s of the query; through the message's
-- rowid, 0.07-0.10 s). Each recipient row now carries its message's rowid, copied by the same triggers as
-- `received_us`.
--
-- A rowid that is not an INTEGER PRIMARY KEY may change in a VACUUM. So the copies are trusted only while the
-- schema cookie (which every VACUUM and every schema change bumps) equals the one recorded in `settings` under
-- `message_rowids_at` when they were last made right: by the migration runner after every upgrade and by `purge
-- --vacuum` (search.rs, refresh_message_rowids). Otherwise, say after a VACUUM in the sqlite3 shell, search joins
-- by id as before. The join checks the id as well, so a stale copy can hide a row but never show another one.
ALTER TABLE recipients ADD COLUMN message_rowid INTEGER;   -- messages.rowid of `message`

DROP TRIGGER recipients_copy_insert;
DROP TRIGGER recipients_copy_move;

CREATE TRIGGER recipients_copy_insert AFTER INSERT ON recipients
BEGIN
    UPDATE recipients SET (received_us, live, message_rowid) =
        (SELECT m.received_us, m.purged_us IS NULL, m.rowid FROM messages m WHERE m.id = new.message)
    WHERE rowid = new.rowid;
END;

CREATE TRIGGER recipients_copy_move AFTER UPDATE OF message ON recipients
BEGIN
    UPDATE recipients SET (received_us, live, message_rowid) =
        (SELECT m.received_us, m.purged_us IS NULL, m.rowid FROM messages m WHERE m.id = new.message)
    WHERE rowid = new.rowid;
END;

-- The rowid comes with each entry, beside the id the other joins use.
DROP INDEX recipients_live;
CREATE INDEX recipients_live ON recipients(address_lc, received_us, message_rowid, message, address, state, attempts,
    released_us, reply, last_error) WHERE live = 1;

-- The copies themselves are made by the runner's refresh at the end of this upgrade.
