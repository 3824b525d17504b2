//! `quarantine-store` owns a mail quarantine store: content-addressed zstd blobs named by the BLAKE3 of the
//! original bytes, an SQLite index of envelopes, headers, verdicts and per-recipient release state, and the
//! operations on them (hold, show, verify; search, release and purge build on these).
//!
//! # Invariants
//! - A row that references a blob is committed only after the blob is renamed into place and its directory is
//!   fsynced: a live row never points at a missing blob.
//! - Blob bytes are checked against their name whenever they are read for a person or a relay.
//! - Every file and directory in the store is 0600/0700 and belongs to the store directory's owner.
//!
//! The CLI (`quarantine-cli`) only parses arguments and prints; everything that touches the store is here.

pub mod address;
pub mod audit;
pub mod blob;
pub mod check;
pub mod config;
pub mod durable;
pub mod duration;
pub mod error;
pub mod export;
pub mod headers;
pub mod hold;
pub mod ids;
pub mod import;
pub mod index;
pub mod ingest;
pub mod message;
pub mod progress;
pub mod purge;
pub mod release;
pub mod search;
pub mod select;
pub mod spool;
pub mod stats;
pub mod store;
pub mod timeexpr;
pub mod verify;

pub use error::{Error, Result};
pub use hold::{HoldOutcome, HoldRequest};
pub use message::{MessageRecord, Recipient};
pub use progress::{Progress, Silent};
pub use store::{InitOutcome, Store};
pub use verify::VerifyReport;
