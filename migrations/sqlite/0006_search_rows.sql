-- 0006: search output at scale, continued (issue 13). Never edit or remove a shipped migration; add a new numbered
-- file instead.
--
-- `search --rcpt ADDR` wants the address's live messages newest first, and a table wants only the first 50 and
-- "more than 1000 more". With only (address_lc, message) in the index, every one of the address's messages had to
-- be read for `received_us` and `purged_us` before the first could be printed (a sort of 16,000 rows for the
-- busiest address at a million messages, or a walk of all mail newest first with a probe per message), and the
-- capped count read a row per match. Each recipient row now carries its message's `received_us` and whether the
-- message is live, copied by triggers whoever writes (hold, ingest, import, purge, the sqlite3 shell), so one
-- partial index answers both in order and without a table row.
ALTER TABLE recipients ADD COLUMN received_us INTEGER;   -- messages.received_us of `message`
ALTER TABLE recipients ADD COLUMN live INTEGER;          -- 1 while `message` is not purged, else 0

-- Not in an index that `quarantine migrate` left behind as a marker of the shared one: its triggers refuse every
-- write to these rows (migrate.rs, stale_writer_guards), and nothing reads them any more.
UPDATE recipients SET (received_us, live) =
    (SELECT m.received_us, m.purged_us IS NULL FROM messages m WHERE m.id = recipients.message)
WHERE NOT EXISTS (SELECT 1 FROM settings WHERE key = 'shared_index');

-- A recipient is written after its message (the foreign key), so the message row is there to copy from.
CREATE TRIGGER recipients_copy_insert AFTER INSERT ON recipients
BEGIN
    UPDATE recipients SET (received_us, live) =
        (SELECT m.received_us, m.purged_us IS NULL FROM messages m WHERE m.id = new.message)
    WHERE rowid = new.rowid;
END;

CREATE TRIGGER recipients_copy_move AFTER UPDATE OF message ON recipients
BEGIN
    UPDATE recipients SET (received_us, live) =
        (SELECT m.received_us, m.purged_us IS NULL FROM messages m WHERE m.id = new.message)
    WHERE rowid = new.rowid;
END;

CREATE TRIGGER recipients_copy_message AFTER UPDATE OF received_us, purged_us ON messages
    WHEN old.received_us IS NOT new.received_us OR (old.purged_us IS NULL) <> (new.purged_us IS NULL)
BEGIN
    UPDATE recipients SET received_us = new.received_us, live = new.purged_us IS NULL WHERE message = new.id;
END;

-- A live recipient selection, newest first: `WHERE address_lc = ? AND live = 1 ORDER BY received_us DESC`. The
-- recipient's own columns come with each entry: most messages have one recipient (see recipient_count below), and
-- then the entry is all `search` needs of it.
CREATE INDEX recipients_live ON recipients(address_lc, received_us, message, address, state, attempts, released_us,
    reply, last_error) WHERE live = 1;

-- How many recipients each message has, kept by triggers on `recipients` (insert, delete, change of `message`):
-- a message `search --rcpt` found with one has no other recipient to look up. Recipients are added by hold,
-- ingest and import, which write the message row anyway; a release only updates them, and never touches this.
ALTER TABLE messages ADD COLUMN recipient_count INTEGER;

UPDATE messages SET recipient_count = (SELECT count(*) FROM recipients r WHERE r.message = messages.id)
WHERE NOT EXISTS (SELECT 1 FROM settings WHERE key = 'shared_index');

-- Counted up and down, not recounted: a recount per inserted row made a message with n recipients cost n²/2
-- index steps (123,456 recipients on one message took minutes). The message row is always written first.
CREATE TRIGGER recipient_count_insert AFTER INSERT ON recipients
BEGIN
    UPDATE messages SET recipient_count = coalesce(recipient_count, 0) + 1 WHERE id = new.message;
END;

CREATE TRIGGER recipient_count_delete AFTER DELETE ON recipients
BEGIN
    UPDATE messages SET recipient_count = coalesce(recipient_count, 1) - 1 WHERE id = old.message;
END;

CREATE TRIGGER recipient_count_move AFTER UPDATE OF message ON recipients
    WHEN old.message IS NOT new.message
BEGIN
    UPDATE messages SET recipient_count = coalesce(recipient_count, 1) - 1 WHERE id = old.message;
    UPDATE messages SET recipient_count = coalesce(recipient_count, 0) + 1 WHERE id = new.message;
END;

-- The names of a message's attachments, in the order they were written, as a JSON array (NULL for none), kept by
-- triggers: a printed message read them with one more index seek (and a row for most) per message; now they come
-- with its row. Attachments are written with their message (hold, ingest, import) and never change after, so no
-- other writer touches the message row for them.
ALTER TABLE messages ADD COLUMN attachment_names TEXT;

UPDATE messages SET attachment_names =
    (SELECT json_group_array(name) FROM (SELECT name FROM attachments a WHERE a.message = messages.id ORDER BY a.rowid))
WHERE id IN (SELECT message FROM attachments)
    AND NOT EXISTS (SELECT 1 FROM settings WHERE key = 'shared_index');

CREATE TRIGGER attachment_names_insert AFTER INSERT ON attachments
BEGIN
    UPDATE messages SET attachment_names = (SELECT json_group_array(name)
        FROM (SELECT name FROM attachments a WHERE a.message = new.message ORDER BY a.rowid))
    WHERE id = new.message;
END;

CREATE TRIGGER attachment_names_delete AFTER DELETE ON attachments
BEGIN
    UPDATE messages SET attachment_names = nullif((SELECT json_group_array(name)
        FROM (SELECT name FROM attachments a WHERE a.message = old.message ORDER BY a.rowid)), '[]')
    WHERE id = old.message;
END;

CREATE TRIGGER attachment_names_update AFTER UPDATE OF message, name ON attachments
BEGIN
    UPDATE messages SET attachment_names = nullif((SELECT json_group_array(name)
        FROM (SELECT name FROM attachments a WHERE a.message = messages.id ORDER BY a.rowid)), '[]')
    WHERE id IN (old.message, new.message);
END;
