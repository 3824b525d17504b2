//! `quarantine-store`: the durable core of a mail quarantine, and the only code that writes under `STORE/`.
//!
//! A store is one directory (DESIGN section 2): content-addressed zstd blobs named by the BLAKE3 of the original
//! bytes, an SQLite index of envelopes, headers, verdicts and per-recipient release state, and the audit trail.
//! The operations on it mirror the CLI's commands: [`Store::hold`], [`Store::import`], [`Store::search`],
//! [`Store::show`](Store::message), [`Store::export`], [`Store::plan_release`] / [`Store::execute_release`],
//! [`Store::plan_purge`] / [`Store::purge`], [`Store::verify`], [`Store::stats`], [`check`]. Destructive ones are
//! *plan, then execute*, so `--dry-run` is the plan printed. Long ones report through [`Progress`], so the
//! library never touches a terminal. Released mail leaves through a [`Transport`] (`quarantine-relay`).
//!
//! # Invariants, and where each is kept
//! - **Every durable write follows one fsync discipline** (create 0600/0700 with the store's owner, write, fsync,
//!   rename, fsync the directory; an fsync error is returned, never retried): `durable`, the only module that
//!   creates, renames or unlinks under the store.
//! - **A row never references a blob that is not durably in place**: the blob is renamed and its directory
//!   fsynced inside the write transaction, before the row is inserted (`hold`, `import::batch`). With an object
//!   store ([`Backends`], [`ObjectStore`]) the PUT is acknowledged before that transaction and the object is
//!   confirmed with a HEAD inside it (`blob`).
//! - **Blob bytes are checked against their name whenever they are read** for a person or a relay, and a corrupt
//!   blob is never trusted for a new message: `blob` (`read_verified`, `stream_verified`, `exists`).
//! - **Each recipient is delivered at most once by release**, and a crash between send and record leaves the
//!   recipient *in doubt*, never silently released: the journal in `release::journal` / `release::exec`.
//! - **A blob is deleted only when no committed row references it**, and orphans only after a grace period:
//!   `purge` (GC queue under the index write lock).
//! - **Every change to the index writes its audit row in the same transaction**: `audit`.
//! - **The schema only moves forward**, in one transaction, from numbered SQL files: `index` (`migrations/`).

mod audit;
mod blob;
mod check;
mod db;
mod durable;
mod duration;
mod error;
mod export;
mod hold;
mod ids;
mod import;
mod index;
mod ingest;
mod message;
mod migrate;
mod objects;
mod probe;
mod progress;
mod purge;
mod release;
mod search;
mod select;
mod spike;
mod spool;
mod state;
mod stats;
mod store;
mod text;
mod timeexpr;
mod trace;
mod units;
mod verify;

pub use audit::{actor, AuditRow, ChainProblem, ChainReport, Head as AuditHead};
pub use check::{check, check_with, CheckFailure, CheckReport};
pub use durable::available_space;
pub use error::{Error, Result};
pub use export::{ExportRequest, Format as ExportFormat};
pub use hold::{HoldOutcome, HoldRequest};
pub use ids::new_id;
pub use import::{ImportOptions, ImportReport, DEFAULT_JOBS};
pub use ingest::{IngestOptions, IngestReport, SpoolWatcher};
pub use message::{header_block, rfc3339_us, MessageRecord, Recipient};
pub use migrate::MigrateReport;
pub use objects::{BlobLocation, ObjectInfo, ObjectStore, PutOutcome};
pub use probe::{cached as probe_cached, remember as probe_remember};
pub use progress::{Progress, Silent};
pub use purge::{PurgePlan, PurgeRule, RetentionPolicy};
pub use quarantine_mail::source::{Format as ImportFormat, MboxVariant, Skipped};
pub use release::{
    describe_tag, Action, Down, ExecOptions, OpenTransport, Outcome, Plan, PlanCounts, PlanRequest, PlannedMessage,
    PlannedRecipient, Problem as ReleaseProblem, ProblemKind, Report as ReleaseReport, Rescan, ScanVerdict, Skip,
    Transport, BATCH,
};
pub use select::Selector;
pub use spike::{Spike, SpikeRule, SPIKE_ACTOR};
pub use spool::{check as check_spool, ScanMeta, Spool, Staged as SpoolStaged};
pub use state::{AuditAction, RecipientState};
pub use stats::{Bucket as StatsBucket, Stats, StatsBy};
pub use store::{
    now_us, probe_shared_index, redact as redact_url, Backends, IndexLocation, InitOutcome, Store, INDEX_FILE,
};
pub use timeexpr::{parse as parse_time, parse_now as parse_time_now};
pub use trace::{TRACE_HEADER, TRACE_MAX_AGE, TRACE_SKEW};
pub use units::{human_bytes, parse_size};
pub use verify::VerifyReport;

/// Durations as admins write them: `90s`, `15m`, `6h`, `2d`, `1w`.
pub use duration::parse as parse_duration;

/// Internals for the fuzz targets in `fuzz/` (feature `fuzzing`): not part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::index::migrate;
    pub use crate::timeexpr::parse as parse_time;

    /// A selector's `WHERE` clause over `messages m` and its parameters.
    pub fn where_clause(sel: &crate::Selector) -> (String, Vec<rusqlite::types::Value>) {
        let sql = sel.to_sql();
        (sql.clause, sql.params)
    }
}
