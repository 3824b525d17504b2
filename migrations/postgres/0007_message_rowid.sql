-- 0007: the SQLite index's recipients carry their message's rowid (see migrations/sqlite/0007_message_rowid.sql),
-- because SQLite's implicit rowid is the cheap way into a message row there. PostgreSQL reaches a message through
-- the primary key's index either way, so this version changes nothing here; it exists to keep one version sequence.
SELECT 1;
