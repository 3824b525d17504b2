//! Opening and creating a store directory (DESIGN section 2).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use crate::blob::BlobStore;
use crate::db::Conn;
use crate::durable::{self, Owner};
use crate::error::{Error, Result};
use crate::index;
use crate::objects::BlobLocation;

pub const INDEX_FILE: &str = "index.sqlite";

/// Where the index lives (DESIGN section 11).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum IndexLocation {
    /// `STORE/index.sqlite`: the embedded default.
    #[default]
    Sqlite,
    /// A shared PostgreSQL database, as a libpq-style URL or conninfo (`postgresql://user@host/db`,
    /// `host=/run/postgresql dbname=q`); a password may come from it or from `PGPASSWORD`. The local
    /// `index.sqlite` then only marks the directory as a store for `hold`, which never opens the network.
    Postgres(String),
}

/// The backends a store uses; [`Store::open`] is [`Store::open_with`] and the defaults.
#[derive(Debug, Clone, Default)]
pub struct Backends {
    pub index: IndexLocation,
    pub blobs: BlobLocation,
}

/// The settings key that marks a local index as a marker only: its data is in a shared database, and opening it
/// as the index would show an empty store.
pub(crate) const SHARED_INDEX_KEY: &str = "shared_index";
/// Beside it, the shared database's id (its settings `index_id`).
pub(crate) const SHARED_ID_KEY: &str = "shared_index_id";

/// An open store: its directory, blob tree and index connection.
pub struct Store {
    pub(crate) root: PathBuf,
    pub(crate) index_path: PathBuf,
    pub(crate) conn: Conn,
    pub(crate) blobs: BlobStore,
}

#[derive(Debug, PartialEq, Eq)]
pub enum InitOutcome {
    Created,
    AlreadyAStore,
}

impl Store {
    /// Creates a store in `root` (which may exist if empty). Harmless on an existing store; refuses any other
    /// non-empty directory, so `init` can never scatter files over someone's data.
    pub fn init(root: &Path) -> Result<(Store, InitOutcome)> {
        Store::init_with(root, &Backends::default())
    }

    /// [`Store::init`] with the given backends. With a shared index, the local directory (spool, marker index) is
    /// made here and the shared database is migrated.
    pub fn init_with(root: &Path, backends: &Backends) -> Result<(Store, InitOutcome)> {
        durable::create_dirs(root)?;
        let index_path = root.join(INDEX_FILE);
        let outcome = if index_path.exists() {
            let conn = index::connect(&index_path, false, Duration::from_secs(60))?;
            if !is_store_index(&conn, &index_path)? {
                return Err(Error::NotEmpty(root.to_path_buf()));
            }
            InitOutcome::AlreadyAStore
        } else {
            let mut entries = fs::read_dir(root).map_err(Error::io("list", root))?;
            if entries.next().is_some() {
                return Err(Error::NotEmpty(root.to_path_buf()));
            }
            InitOutcome::Created
        };
        durable::make_private(root)?;
        let owner = Owner::of(root)?;
        if outcome == InitOutcome::Created {
            durable::create_new(&index_path, &owner)?;
        }
        let store = Store::open_at(root, Duration::from_secs(60), owner, backends)?.with_blobs(backends);
        durable::ensure_dir(store.blobs.blobs_dir(), &owner)?;
        durable::ensure_dir(store.blobs.tmp_dir(), &owner)?;
        durable::fsync_dir(root)?;
        Ok((store, outcome))
    }

    /// Opens an existing store, migrating its index forward if needed. `busy` bounds how long any statement waits
    /// for another writer's lock.
    pub fn open(root: &Path, busy: Duration) -> Result<Store> {
        Store::open_with(root, busy, &Backends::default())
    }

    /// [`Store::open`] with the given backends.
    pub fn open_with(root: &Path, busy: Duration, backends: &Backends) -> Result<Store> {
        let index_path = root.join(INDEX_FILE);
        match fs::metadata(&index_path) {
            // An empty index is what a crashed `init` leaves: only `init` may finish it.
            Ok(m) if m.is_file() && m.len() > 0 => {}
            Ok(_) => return Err(Error::NotAStore(root.to_path_buf())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotAStore(root.to_path_buf())),
            Err(e) => return Err(permission_hint(e, &index_path)),
        }
        let owner = Owner::of(root)?;
        Store::open_at(root, busy, owner, backends).map(|s| s.with_blobs(backends))
    }

    /// The blobs in an object store instead of `blobs/` when `backends.blobs` says so (DESIGN section 11). The
    /// spool and `tmp/` stay local either way.
    fn with_blobs(mut self, backends: &Backends) -> Store {
        if let BlobLocation::Remote(remote) = &backends.blobs {
            self.blobs = self.blobs.clone().with_remote(remote.clone());
        }
        self
    }

    fn open_at(root: &Path, busy: Duration, owner: Owner, backends: &Backends) -> Result<Store> {
        let index_path = root.join(INDEX_FILE);
        let conn = index::connect(&index_path, false, busy)?;
        // Checked on the one connection, before any pragma that writes: a foreign database is refused untouched.
        if !is_store_index(&conn, &index_path)? {
            return Err(Error::NotAStore(root.to_path_buf()));
        }
        let wal = index_path.with_extension("sqlite-wal");
        let had_wal = wal.exists();
        index::configure(&conn, &index_path)?;
        if !had_wal && wal.exists() {
            // SQLite fsyncs the directory for a new -wal but ignores a failure of that fsync.
            durable::fsync_dir(root)?;
        }
        let mut conn = Conn::Sqlite(conn);
        index::migrate(&mut conn, &index_path)?;
        // SQLite gives -wal/-shm the database file's owner when run as root; the index file itself we check here.
        owner.apply(&index_path)?;
        // A store made before the spool existed gets `spool/` and `spool/bad/` here (DESIGN section 4).
        crate::spool::Spool::new(root, owner).ensure_dirs()?;
        let marked = shared_index_mark(&conn).map_err(index::sql_err(&index_path))?;
        if let BlobLocation::Local = backends.blobs {
            use rusqlite::OptionalExtension;
            let moved: Option<String> = conn
                .query_row("SELECT value FROM settings WHERE key = ?1", [crate::migrate::MIGRATED_BLOBS_KEY], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(index::sql_err(&index_path))?;
            // New mail in `blobs/` would be invisible to every other gateway reading the object store.
            if let Some(to) = moved {
                return Err(Error::Invalid(format!(
                    "{}: `quarantine migrate` moved this store's blobs to {to}; set `blobs` (and `[s3]`) in the \
                     config",
                    root.display()
                )));
            }
        }
        let conn = match &backends.index {
            IndexLocation::Sqlite => {
                if let Some(url) = marked {
                    return Err(Error::Invalid(format!(
                        "{}: this store's index is the shared database {url}; set `index` in the config",
                        root.display()
                    )));
                }
                conn
            }
            IndexLocation::Postgres(url) => {
                if marked.is_none() {
                    // Only an empty local index may become a marker: never hide messages it already holds.
                    let n: i64 = conn
                        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
                        .map_err(index::sql_err(&index_path))?;
                    if n > 0 {
                        return Err(Error::Invalid(format!(
                            "{}: the local index holds {n} messages; a store cannot switch to a shared index in \
                             place (copy it with `quarantine migrate`)",
                            root.display()
                        )));
                    }
                }
                let mut pg = open_postgres(url)?;
                index::migrate(&mut pg, &index_path).map_err(|e| pg_context(e, url))?;
                let id = shared_index_id(&pg).map_err(|e| Error::Postgres { target: redact(url), source: e })?;
                let local = |e| index::sql_err(&index_path)(e);
                match shared_id_mark(&conn).map_err(local)? {
                    // Another database than the one this store's mail went into: ingesting here would move the
                    // spool into the wrong quarantine, so nothing runs until the config is right.
                    Some(m) if m != id => {
                        return Err(Error::Invalid(format!(
                            "{}: this store's index is the shared database {} (id {m}), but the config's `index` \
                             is {} (id {id}); fix `index` in the config",
                            root.display(),
                            marked.as_deref().unwrap_or("?"),
                            redact(url)
                        )))
                    }
                    Some(_) => {}
                    None => {
                        conn.execute(
                            "INSERT INTO settings (key, value) VALUES (?1, ?2), (?3, ?4) ON CONFLICT DO NOTHING",
                            [SHARED_INDEX_KEY, &redact(url), SHARED_ID_KEY, &id],
                        )
                        .map_err(local)?;
                    }
                }
                pg
            }
        };
        Ok(Store { root: root.to_path_buf(), index_path, blobs: BlobStore::new(root, owner), conn })
    }

    /// For `hold`: commits never run SQLite's autocheckpoint, so copying someone else's WAL (a large purge or
    /// import running beside it) back into the index never delays an acknowledgement. Call
    /// [`Store::checkpoint_after_ack`] once the message is acknowledged.
    pub fn defer_checkpoints(&self) -> Result<()> {
        if self.conn.is_postgres() {
            return Ok(());
        }
        self.conn.execute_batch("PRAGMA wal_autocheckpoint=0").map_err(self.sql_err())
    }

    /// After the acknowledgement: if the WAL has grown past 4 MiB, copy it back into the index (PASSIVE: never
    /// waits for a lock). The last connection to close checkpoints anyway; this bounds the WAL when holds overlap
    /// so that none is ever the last.
    pub fn checkpoint_after_ack(&self) {
        let wal = self.index_path.with_extension("sqlite-wal");
        if fs::metadata(wal).map(|m| m.len()).unwrap_or(0) > 4 << 20 {
            let _ = self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn index_path(&self) -> &Path {
        &self.index_path
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// With an object store: objects uploaded within `grace` survive purge's GC (DESIGN section 11); purge sets
    /// it to its orphan grace. No effect on `blobs/`, whose GC is protected by the index write lock alone.
    pub fn set_upload_grace(&mut self, grace: Duration) {
        self.blobs.set_upload_grace(grace);
    }

    /// The index connection, for this crate's unit tests.
    #[cfg(test)]
    pub(crate) fn conn(&self) -> &Conn {
        &self.conn
    }

    pub(crate) fn sql_err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        index::sql_err(&self.index_path)
    }

    /// True when the index is a shared PostgreSQL database.
    pub fn is_shared_index(&self) -> bool {
        self.conn.is_postgres()
    }
}

/// The shared database's own id (settings `index_id`, random, made by the first gateway that opens it), so a
/// store can tell its database from another one however the URL is spelt.
pub(crate) fn shared_index_id(pg: &Conn) -> rusqlite::Result<String> {
    use rusqlite::OptionalExtension;
    // Read first: every command opens the store, and only the first gateway ever needs the insert.
    let select = "SELECT value FROM settings WHERE key = 'index_id'";
    if let Some(id) = pg.query_row(select, [], |r| r.get(0)).optional()? {
        return Ok(id);
    }
    let mut seed = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut seed);
    let fresh: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    pg.execute("INSERT INTO settings (key, value) VALUES ('index_id', ?1) ON CONFLICT DO NOTHING", [&fresh])?;
    pg.query_row(select, [], |r| r.get(0))
}

/// The id of the shared database this marker belongs to.
fn shared_id_mark(conn: &Conn) -> rusqlite::Result<Option<String>> {
    use rusqlite::OptionalExtension;
    conn.query_row("SELECT value FROM settings WHERE key = ?1", [SHARED_ID_KEY], |r| r.get(0)).optional()
}

/// The shared index this local marker names, if it is one.
pub(crate) fn shared_index_mark(conn: &Conn) -> rusqlite::Result<Option<String>> {
    use rusqlite::OptionalExtension;
    conn.query_row("SELECT value FROM settings WHERE key = ?1", [SHARED_INDEX_KEY], |r| r.get(0)).optional()
}

/// `url` without a password, for messages and the marker.
pub fn redact(url: &str) -> String {
    match url.split_once("://").and_then(|(scheme, rest)| Some((scheme, rest.split_once('@')?))) {
        Some((scheme, (userinfo, host))) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}")
        }
        None => url.split_whitespace().filter(|kv| !kv.starts_with("password=")).collect::<Vec<_>>().join(" "),
    }
}

#[cfg(feature = "postgres")]
pub(crate) fn open_postgres(url: &str) -> Result<Conn> {
    crate::db::pg::PgConn::connect(url)
        .map(|c| Conn::Pg(Box::new(c)))
        .map_err(|e| Error::Postgres { target: redact(url), source: crate::db::pg_error(e) })
}

#[cfg(not(feature = "postgres"))]
pub(crate) fn open_postgres(url: &str) -> Result<Conn> {
    Err(Error::Invalid(format!(
        "index {}: this quarantine was built without PostgreSQL support (cargo feature `postgres`)",
        redact(url)
    )))
}

/// For `config check`: connects to the shared index and says what is wrong with it — unreachable, refused
/// credentials, no pg_trgm on the server, a schema newer than this binary — or, when nothing is, what it found.
pub fn probe_shared_index(url: &str) -> Result<String> {
    let conn = open_postgres(url)?;
    let e = |source| Error::Postgres { target: redact(url), source };
    let version: String = conn.query_row("SHOW server_version", [], |r| r.get(0)).map_err(e)?;
    let trgm: i64 = conn
        .query_row("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_trgm'", [], |r| r.get(0))
        .map_err(e)?;
    if trgm == 0 {
        return Err(Error::Invalid(format!(
            "index {}: the server has no pg_trgm extension (text search needs it): install PostgreSQL's contrib \
             modules there (Debian: postgresql-contrib)",
            redact(url)
        )));
    }
    let has_schema: i64 = conn
        .query_row(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'quarantine_schema' AND schemaname = current_schema()",
            [],
            |r| r.get(0),
        )
        .map_err(e)?;
    let known = index::MIGRATIONS.len() as i64;
    let found: i64 = if has_schema > 0 {
        conn.query_row("SELECT version FROM quarantine_schema", [], |r| r.get(0)).map_err(e)?
    } else {
        0
    };
    if found > known {
        return Err(Error::SchemaTooNew { found, known });
    }
    Ok(format!("PostgreSQL {version}, schema version {found} of {known}"))
}

/// A migration failure on the shared index names the database, not the local marker file.
pub(crate) fn pg_context(e: Error, url: &str) -> Error {
    match e {
        Error::Sqlite { source, .. } => Error::Postgres { target: redact(url), source },
        other => other,
    }
}

/// True if `path` is an SQLite file carrying our application id (an empty file, as `init` leaves it before the
/// first migration, counts too).
fn is_store_index(conn: &Connection, path: &Path) -> Result<bool> {
    let meta = fs::metadata(path).map_err(Error::io("stat", path))?;
    if meta.len() == 0 {
        return Ok(true);
    }
    match index::application_id(conn, path) {
        Ok(id) => Ok(id == index::APPLICATION_ID),
        Err(Error::Sqlite { source: rusqlite::Error::SqliteFailure(e, _), .. })
            if e.code == rusqlite::ErrorCode::NotADatabase =>
        {
            Ok(false)
        }
        // Unreadable (permissions, I/O): say so, rather than "not a store" and a useless hint to run init.
        Err(e) => Err(e),
    }
}

/// A permission error on the store says whose it is: the usual cause is running as the wrong account.
pub(crate) fn permission_hint(e: std::io::Error, path: &Path) -> Error {
    let op = if e.kind() == std::io::ErrorKind::PermissionDenied {
        "open (run as the store's owner, the account the MTA runs `hold` as, or as root)"
    } else {
        "stat"
    };
    Error::Io { op, path: path.to_path_buf(), source: e }
}

pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}
