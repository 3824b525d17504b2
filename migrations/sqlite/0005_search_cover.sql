-- 0005: search output at scale (issue 13). Never edit or remove a shipped migration; add a new numbered file instead.

-- The number of live (not purged) messages, kept by triggers whoever writes (ingest, import, purge, the sqlite3
-- shell): a table's "... and N more match" with no selector needs it, and counting the live index took ~25 ms at a
-- million messages where this is one row. One row, `only` = 1.
CREATE TABLE message_count (
    only  INTEGER PRIMARY KEY CHECK (only = 1),
    live  INTEGER NOT NULL
) STRICT;
INSERT INTO message_count (only, live) SELECT 1, count(*) FROM messages WHERE purged_us IS NULL;

CREATE TRIGGER message_count_insert AFTER INSERT ON messages WHEN new.purged_us IS NULL
BEGIN
    UPDATE message_count SET live = live + 1;
END;

CREATE TRIGGER message_count_delete AFTER DELETE ON messages WHEN old.purged_us IS NULL
BEGIN
    UPDATE message_count SET live = live - 1;
END;

CREATE TRIGGER message_count_purge AFTER UPDATE OF purged_us ON messages
    WHEN (old.purged_us IS NULL) <> (new.purged_us IS NULL)
BEGIN
    UPDATE message_count SET live = live + CASE WHEN new.purged_us IS NULL THEN 1 ELSE -1 END;
END;

-- Covering indexes for the rows `search` prints. A busy recipient's messages are scattered over the index, so each
-- printed message cost 4-6 page reads; these let two of them be index-only:
-- - a recipient selection (`m.id IN (SELECT message FROM recipients WHERE address_lc = ?)`) reads the message ids
--   from the index instead of one recipients row per match (it replaces recipients_address, a prefix of it);
-- - the recipients of a batch of messages (`Store::fill_details_many`) come from one index entry each, in message
--   order, instead of an entry of the (message, address_lc) unique index and then the row.
CREATE INDEX recipients_address_message ON recipients(address_lc, message);
DROP INDEX recipients_address;
CREATE INDEX recipients_by_message
    ON recipients(message, address, state, attempts, released_us, reply, last_error);
