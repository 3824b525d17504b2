//! The SQLite index: connection set-up and forward-only migrations.
//!
//! # Durability
//! WAL with `synchronous=FULL`: a commit fsyncs the WAL, so an acknowledged hold survives power loss. Writes use
//! `BEGIN IMMEDIATE` so the write lock is taken up front and a busy store fails at `BEGIN`, inside the deadline,
//! not half way through.
//!
//! # Compatibility
//! Migrations are the numbered files in `migrations/sqlite/` and `migrations/postgres/` (one version sequence: file
//! N means the same schema on both engines), embedded at build time and applied in order inside one transaction,
//! tracked by `PRAGMA user_version` on SQLite and by the one-row table `quarantine_schema` on PostgreSQL. Never
//! edit or remove a shipped migration: add a new file for both engines. An index newer than this binary is refused
//! rather than guessed at.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::db::Conn;

use crate::error::{Error, Result};

/// 'QRNT': marks an SQLite file as a quarantine index, so `init` can tell a store from some other database.
pub const APPLICATION_ID: i64 = 0x5152_4e54;

/// Every migration, in order. `migrations_are_all_registered` checks this against the directory.
pub const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_initial.sql", include_str!("../../../migrations/sqlite/0001_initial.sql")),
    ("0002_search.sql", include_str!("../../../migrations/sqlite/0002_search.sql")),
    ("0003_incident.sql", include_str!("../../../migrations/sqlite/0003_incident.sql")),
    ("0004_scan.sql", include_str!("../../../migrations/sqlite/0004_scan.sql")),
    ("0005_search_cover.sql", include_str!("../../../migrations/sqlite/0005_search_cover.sql")),
    ("0006_search_rows.sql", include_str!("../../../migrations/sqlite/0006_search_rows.sql")),
    ("0007_message_rowid.sql", include_str!("../../../migrations/sqlite/0007_message_rowid.sql")),
];

/// The same versions for PostgreSQL; `migrations_are_all_registered` checks both lists name the same files.
#[cfg(feature = "postgres")]
pub const PG_MIGRATIONS: &[(&str, &str)] = &[
    ("0001_initial.sql", include_str!("../../../migrations/postgres/0001_initial.sql")),
    ("0002_search.sql", include_str!("../../../migrations/postgres/0002_search.sql")),
    ("0003_incident.sql", include_str!("../../../migrations/postgres/0003_incident.sql")),
    ("0004_scan.sql", include_str!("../../../migrations/postgres/0004_scan.sql")),
    ("0005_search_cover.sql", include_str!("../../../migrations/postgres/0005_search_cover.sql")),
    ("0006_search_rows.sql", include_str!("../../../migrations/postgres/0006_search_rows.sql")),
    ("0007_message_rowid.sql", include_str!("../../../migrations/postgres/0007_message_rowid.sql")),
];

/// A line `-- @rust NAME` in a migration marks a step SQL cannot do (hashing): the SQL before it runs, then the
/// step, then the SQL after it, all in the migration's one transaction.
const RUST_STEP: &str = "-- @rust ";

fn rust_step(name: &str, tx: &Conn) -> rusqlite::Result<()> {
    match name {
        "chain-audit-rows" => crate::audit::chain_existing(tx),
        "trace-secret" => crate::trace::secret_or_create(tx).map(|_| ()),
        other => panic!("migration names an unknown Rust step {other:?}"),
    }
}

/// Runs one migration's SQL with its Rust steps.
fn apply(tx: &Conn, sql: &str) -> rusqlite::Result<()> {
    let mut parts = sql.split(RUST_STEP);
    tx.execute_batch(parts.next().unwrap_or(""))?;
    for part in parts {
        let (name, rest) = part.split_once('\n').unwrap_or((part, ""));
        rust_step(name.trim(), tx)?;
        tx.execute_batch(rest)?;
    }
    Ok(())
}

/// The error for a failed statement: on the SQLite index at `path`, or on the shared database (which names itself:
/// the local `index.sqlite` is then only a marker, not where the statement ran).
pub(crate) fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |source| match crate::db::shared_target(&source) {
        Some(target) => Error::Postgres { target, source },
        None => Error::Sqlite { path: path.to_path_buf(), source },
    }
}

/// Opens the index with the pragmas every connection needs. `create` allows creating a missing file (init only).
pub fn open(path: &Path, create: bool, busy: Duration) -> Result<Connection> {
    let conn = connect(path, create, busy)?;
    configure(&conn, path)?;
    Ok(conn)
}

/// Opens the file without touching it: no pragma that writes, so a foreign database can be inspected and refused.
pub fn connect(path: &Path, create: bool, busy: Duration) -> Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let e = sql_err(path);
    let conn = Connection::open_with_flags(path, flags).map_err(&e)?;
    conn.busy_timeout(busy).map_err(&e)?;
    Ok(conn)
}

/// The pragmas every connection needs.
///
/// # Performance
/// The last connection to close checkpoints the WAL and deletes it, so a one-message `hold` pays for creating
/// the WAL and for a checkpoint. Keeping the WAL across processes (`SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE`) would save
/// about four fsyncs per hold, but then the frames of a commit whose WAL fsync *failed* stay visible to the next
/// process: a hold that exited 75 would still have added its row. Until that is handled, correctness wins.
pub fn configure(conn: &Connection, path: &Path) -> Result<()> {
    let e = sql_err(path);
    // journal_mode needs a lock when it changes something; on an existing WAL index it is a no-op read.
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(&e)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Invalid(format!("{}: could not switch the index to WAL (got {mode})", path.display())));
    }
    conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA trusted_schema=OFF;").map_err(&e)?;
    Ok(())
}

pub fn application_id(conn: &Connection, path: &Path) -> Result<i64> {
    conn.query_row("PRAGMA application_id", [], |r| r.get(0)).map_err(sql_err(path))
}

/// Applies every migration newer than the index's schema version, in one write transaction.
pub fn migrate(conn: &mut Conn, path: &Path) -> Result<()> {
    #[cfg(feature = "postgres")]
    if conn.is_postgres() {
        return migrate_pg(conn, path);
    }
    let e = sql_err(path);
    let known = MIGRATIONS.len() as i64;
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(&e)?;
    if current == known {
        return Ok(());
    }
    if current > known {
        return Err(Error::SchemaTooNew { found: current, known });
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
    // Re-read under the lock: another process may have migrated while we waited.
    let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(&e)?;
    for (_, sql) in MIGRATIONS.iter().skip(current as usize) {
        apply(&tx, sql).map_err(&e)?;
    }
    // Every upgrade changes the schema cookie the rowid copies are trusted under (migration 0007).
    crate::search::refresh_message_rowids(&tx).map_err(&e)?;
    tx.execute_batch(&format!("PRAGMA user_version = {known}; PRAGMA application_id = {APPLICATION_ID};"))
        .map_err(&e)?;
    tx.commit().map_err(&e)
}

/// PostgreSQL: the version lives in `quarantine_schema`, created by the first migration run. Several gateways may
/// open a fresh database at once: the writers' lock (taken by the write transaction) lets one migrate, and the
/// others re-read the version after it.
#[cfg(feature = "postgres")]
fn migrate_pg(conn: &mut Conn, path: &Path) -> Result<()> {
    let e = sql_err(path);
    let known = PG_MIGRATIONS.len() as i64;
    // Outside a transaction a failed statement costs nothing, so the version is read straight away (one round
    // trip on every open); only when that fails does the catalog say whether the table is missing.
    let current = conn.query_row("SELECT version FROM quarantine_schema", [], |r| r.get::<_, i64>(0)).ok();
    if current == Some(known) {
        return Ok(());
    }
    let read = |c: &Conn| -> rusqlite::Result<i64> {
        let exists: i64 = c.query_row(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'quarantine_schema' AND schemaname = current_schema()",
            [],
            |r| r.get(0),
        )?;
        if exists == 0 {
            return Ok(0);
        }
        c.query_row("SELECT version FROM quarantine_schema", [], |r| r.get(0))
    };
    let current = match current {
        Some(v) => v,
        None => read(conn).map_err(&e)?,
    };
    if current == known {
        return Ok(());
    }
    if current > known {
        return Err(Error::SchemaTooNew { found: current, known });
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
    let current = read(&tx).map_err(&e)?;
    if current > known {
        return Err(Error::SchemaTooNew { found: current, known });
    }
    if current == 0 {
        tx.execute_batch("CREATE TABLE quarantine_schema (version BIGINT NOT NULL, application_id BIGINT NOT NULL); INSERT INTO quarantine_schema VALUES (0, 0)").map_err(&e)?;
    }
    for (_, sql) in PG_MIGRATIONS.iter().skip(current as usize) {
        apply(&tx, sql).map_err(&e)?;
    }
    tx.execute("UPDATE quarantine_schema SET version = ?1, application_id = ?2", [known, APPLICATION_ID])
        .map_err(&e)?;
    tx.commit().map_err(&e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrate_twice_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let mut conn = Conn::Sqlite(open(&path, true, Duration::from_secs(1)).unwrap());
        migrate(&mut conn, &path).unwrap();
        migrate(&mut conn, &path).unwrap();
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        assert_eq!(application_id(conn.as_sqlite().unwrap(), &path).unwrap(), APPLICATION_ID);
        let n: i64 = conn.query_row("SELECT count(*) FROM messages", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn migrations_are_all_registered() {
        let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
        let listing = |dir: &Path| {
            let mut on_disk: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.ends_with(".sql"))
                .collect();
            on_disk.sort();
            on_disk
        };
        assert!(listing(&top).is_empty(), "migrations belong in migrations/sqlite/ and migrations/postgres/");
        let registered: Vec<String> = MIGRATIONS.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(listing(&top.join("sqlite")), registered, "every file in migrations/sqlite/ must be in MIGRATIONS");
        // One version sequence: PostgreSQL has a file for every version, under the same name.
        assert_eq!(listing(&top.join("postgres")), registered, "migrations/postgres/ must mirror migrations/sqlite/");
        #[cfg(feature = "postgres")]
        assert_eq!(PG_MIGRATIONS.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>(), registered);
        for (i, name) in registered.iter().enumerate() {
            assert!(name.starts_with(&format!("{:04}_", i + 1)), "{name} is out of sequence");
        }
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let mut conn = Conn::Sqlite(open(&path, true, Duration::from_secs(1)).unwrap());
        conn.execute_batch("PRAGMA user_version = 999").unwrap();
        assert!(matches!(migrate(&mut conn, &path), Err(Error::SchemaTooNew { found: 999, .. })));
    }

    /// An index at schema 2 (the shipped files 0001 and 0002, as an older binary made it) with audit rows is
    /// chained by the upgrade, in the migration's transaction, and the chain verifies.
    #[test]
    fn upgrade_chains_existing_audit_rows() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("q");
        let (store, _) = crate::Store::init(&root).unwrap();
        drop(store);
        let path = root.join("index.sqlite");
        std::fs::remove_file(&path).unwrap();
        crate::durable::create_new(&path, &crate::durable::Owner::of(&root).unwrap()).unwrap();
        let conn = open(&path, true, Duration::from_secs(1)).unwrap();
        for (_, sql) in &MIGRATIONS[..2] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(&format!("PRAGMA user_version = 2; PRAGMA application_id = {APPLICATION_ID};")).unwrap();
        for i in 0..5 {
            conn.execute(
                "INSERT INTO audit (at_us, actor, action, selection, counts, reason) VALUES (?1, 'old', 'purge', '{}', '{}', ?2)",
                rusqlite::params![i, if i % 2 == 0 { Some("nightly") } else { None }],
            )
            .unwrap();
        }
        drop(conn);
        let store = crate::Store::open(&root, Duration::from_secs(1)).unwrap();
        let report = store.verify_audit(None).unwrap();
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.rows, 5);
        let head = store.audit_head().unwrap().unwrap();
        assert_eq!(head.seq, 5);
        assert!(store.verify_audit(Some(&head.hash)).unwrap().ok());
        // Still append-only after the upgrade.
        assert!(store.conn().execute("UPDATE audit SET actor = 'b'", []).is_err());
    }

    /// Migration 0006 fills in columns of existing recipients, except in an index `quarantine migrate` turned into
    /// a marker of a shared one, whose triggers refuse every write to them: opening that store must still work.
    #[test]
    fn upgrade_fills_recipients_but_not_in_a_marker_index() {
        for marker in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("index.sqlite");
            let mut conn = Conn::Sqlite(open(&path, true, Duration::from_secs(1)).unwrap());
            for (_, sql) in &MIGRATIONS[..5] {
                apply(&conn, sql).unwrap();
            }
            conn.execute_batch(
                "PRAGMA user_version = 5;
                 INSERT INTO messages (id, hash, size, received_us, env_from, env_from_lc, verdict)
                     VALUES ('M1', 'h', 1, 42, '', '', 'SPAM');
                 INSERT INTO recipients (message, address, address_lc) VALUES ('M1', 'a@x', 'a@x');",
            )
            .unwrap();
            if marker {
                conn.execute_batch(
                    "INSERT INTO settings (key, value) VALUES ('shared_index', 'postgresql://db/q');
                     CREATE TRIGGER moved_no_update_recipients BEFORE UPDATE ON recipients
                     BEGIN SELECT RAISE(ABORT, 'moved'); END;",
                )
                .unwrap();
            }
            migrate(&mut conn, &path).unwrap();
            let copied: (Option<i64>, Option<i64>) =
                conn.query_row("SELECT received_us, live FROM recipients", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
            assert_eq!(copied, if marker { (None, None) } else { (Some(42), Some(1)) });
        }
    }

    #[test]
    fn audit_rows_are_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let mut conn = Conn::Sqlite(open(&path, true, Duration::from_secs(1)).unwrap());
        migrate(&mut conn, &path).unwrap();
        conn.execute(
            "INSERT INTO audit (at_us, actor, action, selection, counts) VALUES (1, 'a', 'purge', '', '{}')",
            [],
        )
        .unwrap();
        assert!(conn.execute("UPDATE audit SET actor = 'b'", []).is_err());
        assert!(conn.execute("DELETE FROM audit", []).is_err());
    }
}
