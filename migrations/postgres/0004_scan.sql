-- 0004: a filter's own findings beside the verdict, PostgreSQL; see migrations/sqlite/0004_scan.sql.
CREATE TABLE message_scan (
    message  TEXT PRIMARY KEY REFERENCES messages(id),
    action   TEXT,
    score    DOUBLE PRECISION,
    symbols  TEXT
);
