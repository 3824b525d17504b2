//! `quarantine-serve`: the intake daemon behind `quarantine serve` (DESIGN section 10). It owns the listeners
//! (LMTP/ESMTP on a unix socket or a TCP port, HTTP for rspamd's metadata_exporter), the protocol state machines
//! and the group commit; the store is reached only through its spool API (`Spool::stage` + `Spool::sync_dir`), so
//! `serve` writes the same self-checking spool files as `hold`, never opens the index, and is as independent of a
//! locked or damaged index as `hold` is.
//!
//! # Invariants
//! - **A success reply (LMTP/SMTP 250 after the dot, HTTP 200) is sent only once every spool file of the message
//!   is fsynced, renamed and its directory fsynced** (`intake::deliver` → `commit::GroupCommit`). Anything else is
//!   451 / 503, and what was written for that message is discarded.
//! - **Nothing partial is stored**: a message is spooled only after its final dot (or its whole HTTP body) arrived
//!   and passed the limits.
//! - **One thread per session**, capped; a client's slowness costs only its own thread; time limits per read,
//!   idle and total.
//!
//! Threads, not async: the store is synchronous and every session's cost is dominated by its fsyncs, which the
//! group commit shares.

pub mod commit;
pub mod config;
pub mod http;
mod intake;
mod server;
pub mod session;
pub mod verdict;

pub use config::{defaults, HeaderRule, Limits, Listen, Mapping, ServeConfig};
pub use server::run;
