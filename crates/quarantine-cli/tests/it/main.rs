//! The integration tests of the `quarantine` binary, in one test binary (one module per area). Every helper comes
//! from `quarantine-testkit`; this file only hands it the binary under test.
//!
//! Peers these tests drive (strace, sqlite3, zstd, faketime, swaks, Postfix's smtp-sink and postfix, python3,
//! util-linux's setpriv) are installed by `scripts/install-test-deps`; a test whose peer is missing fails and
//! names the Debian package.

// mod cli_output;
// mod config;
mod hold;
mod import;
// mod ownership;
// mod packaging;
// mod postfix;
// mod purge;
mod release;
mod search;
// mod torture;

use quarantine_testkit::{Scratch, Store};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_quarantine");

/// A fresh scratch store (`quarantine init` done).
pub fn store() -> Store {
    Store::new(BIN)
}

/// A fresh scratch directory with the hermetic environment, no store.
pub fn scratch() -> Scratch {
    Scratch::new(BIN)
}

/// The sqlite3 shell (Debian package `sqlite3`), for reading the index without the code under test.
pub fn sqlite3() -> std::path::PathBuf {
    quarantine_testkit::require("sqlite3", "sqlite3")
}
