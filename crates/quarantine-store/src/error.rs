//! The store's one error type: every failure with the path or id a person needs to act on it.

use std::path::PathBuf;

/// Everything that can go wrong in the store, with the path or id a person needs to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {op}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the message: {0}")]
    Input(#[source] std::io::Error),
    #[error("writing output: {0}")]
    Output(#[source] std::io::Error),
    #[error("index {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The shared index (DESIGN section 11); `source` carries the PostgreSQL error (db.rs).
    #[error("index {target}: {}", crate::db::describe_error(source))]
    Postgres {
        target: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{0} is not a quarantine store (run `quarantine init` to create one)")]
    NotAStore(PathBuf),
    #[error("{0} is not empty and is not a quarantine store; refusing to initialise it")]
    NotEmpty(PathBuf),
    #[error("index schema version {found} is newer than this quarantine understands ({known}); upgrade quarantine")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("no message with id {0}")]
    NoSuchMessage(String),
    #[error("blob {hash} is missing from {path}")]
    MissingBlob { hash: String, path: PathBuf },
    #[error("blob {hash} is corrupt: {detail}")]
    CorruptBlob { hash: String, detail: String },
    #[error(transparent)]
    BadAddress(#[from] quarantine_mail::BadAddress),
    #[error("{0}")]
    Invalid(String),
    /// The remote blob store failed or refused; `detail` says which (unreachable, no such bucket, access denied).
    #[error("object store {store}: {op} {name}: {detail}")]
    ObjectStore { store: String, op: &'static str, name: String, detail: String },
    /// A write to the spool would leave less than `min_free_space` free ([`crate::Spool::set_reserve`]).
    #[error(
        "{}: only {} free on its filesystem, below the {} kept in reserve for indexing what is held (min_free_space); \
         free space or lower min_free_space",
        dir.display(),
        crate::units::human_bytes(*free),
        crate::units::human_bytes(*reserve)
    )]
    LowSpace { dir: PathBuf, free: u64, reserve: u64 },
    #[error("the deadline passed before the message was committed")]
    DeadlinePassed,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    /// True when the shared index could not be reached (server down, network, connection lost): an outage
    /// that ends by itself, as opposed to a wrong setting or a bug.
    pub fn is_outage(&self) -> bool {
        match self {
            Error::Postgres { source, .. } => crate::db::is_outage(source),
            _ => false,
        }
    }

    /// True when the index was locked by another writer for longer than the busy timeout.
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            Error::Sqlite { source: rusqlite::Error::SqliteFailure(e, _), .. }
                if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    }
}
