//! Opening and creating a store directory (DESIGN section 2).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use crate::blob::BlobStore;
use crate::durable::{self, Owner};
use crate::error::{Error, Result};
use crate::index;
use crate::objects::{Backends, BlobLocation};

pub const INDEX_FILE: &str = "index.sqlite";

/// An open store: its directory, blob tree and index connection.
pub struct Store {
    pub(crate) root: PathBuf,
    pub(crate) index_path: PathBuf,
    pub(crate) conn: Connection,
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
        let store = Store::open_at(root, Duration::from_secs(60), owner)?;
        durable::ensure_dir(store.blobs.blobs_dir(), &owner)?;
        durable::ensure_dir(store.blobs.tmp_dir(), &owner)?;
        durable::fsync_dir(root)?;
        Ok((store, outcome))
    }

    /// Opens an existing store, migrating its index forward if needed. `busy` bounds how long any statement waits
    /// for another writer's lock.
    pub fn open(root: &Path, busy: Duration) -> Result<Store> {
        let index_path = root.join(INDEX_FILE);
        match fs::metadata(&index_path) {
            // An empty index is what a crashed `init` leaves: only `init` may finish it.
            Ok(m) if m.is_file() && m.len() > 0 => {}
            Ok(_) => return Err(Error::NotAStore(root.to_path_buf())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotAStore(root.to_path_buf())),
            Err(e) => return Err(permission_hint(e, &index_path)),
        }
        let owner = Owner::of(root)?;
        Store::open_at(root, busy, owner)
    }

    /// [`Store::open`] with the given backends (DESIGN section 11): the blobs in an object store instead of
    /// `blobs/` when `backends.blobs` says so. The spool and `tmp/` stay local either way.
    pub fn open_with(root: &Path, busy: Duration, backends: &Backends) -> Result<Store> {
        let mut store = Store::open(root, busy)?;
        if let BlobLocation::Remote(remote) = &backends.blobs {
            store.blobs = store.blobs.clone().with_remote(remote.clone());
        }
        Ok(store)
    }

    fn open_at(root: &Path, busy: Duration, owner: Owner) -> Result<Store> {
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
        let mut conn = conn;
        index::migrate(&mut conn, &index_path)?;
        // SQLite gives -wal/-shm the database file's owner when run as root; the index file itself we check here.
        owner.apply(&index_path)?;
        // A store made before the spool existed gets `spool/` and `spool/bad/` here (DESIGN section 4).
        crate::spool::Spool::new(root, owner).ensure_dirs()?;
        Ok(Store { root: root.to_path_buf(), index_path, blobs: BlobStore::new(root, owner), conn })
    }

    /// For `hold`: commits never run SQLite's autocheckpoint, so copying someone else's WAL (a large purge or
    /// import running beside it) back into the index never delays an acknowledgement. Call
    /// [`Store::checkpoint_after_ack`] once the message is acknowledged.
    pub fn defer_checkpoints(&self) -> Result<()> {
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
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn sql_err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        index::sql_err(&self.index_path)
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
