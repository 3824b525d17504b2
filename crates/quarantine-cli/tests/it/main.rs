//! The integration tests of the `quarantine` binary, in one test binary (one module per area). Every helper comes
//! from `quarantine-testkit`; this file only hands it the binary under test.
//!
//! Peers these tests drive (strace, sqlite3, zstd, faketime, swaks, Postfix's smtp-sink and postfix, rspamd, ClamAV's
//! clamscan and clamd, python3,
//! util-linux's setpriv) are installed by `scripts/install-test-deps`; a test whose peer is missing fails and
//! names the Debian package.

mod cli_output;
mod config;
mod gateways;
mod hardening;
mod hold;
mod import;
mod incident;
mod migrate;
mod objects;
mod ownership;
mod packaging;
mod postfix;
mod postgres;
mod purge;
mod release;
mod search;
mod serve;
mod spool;
mod torture;

use quarantine_testkit::{Scratch, Store};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_quarantine");

/// A fresh scratch store (`quarantine init` done).
pub fn store() -> Store {
    Store::new(BIN)
}

/// Opens `s` through the library with the backends its config names (QUARANTINE_TEST_INDEX=postgres: the shared
/// index), as the binary would.
pub fn open_store(s: &Store, busy: std::time::Duration) -> quarantine_store::Store {
    let backends = quarantine_store::Backends {
        index: match s.shared_index() {
            Some(url) => quarantine_store::IndexLocation::Postgres(url),
            None => quarantine_store::IndexLocation::Sqlite,
        },
        ..Default::default()
    };
    quarantine_store::Store::open_with(&s.root, busy, &backends).expect("open the store")
}

/// The `index = ...` line of `s`'s config (empty on SQLite), for a test that writes a config file of its own.
pub fn index_line(s: &Store) -> String {
    s.shared_index().map(|u| format!("index = \"{u}\"\n")).unwrap_or_default()
}

/// A fresh scratch directory with the hermetic environment, no store.
pub fn scratch() -> Scratch {
    Scratch::new(BIN)
}

/// The sqlite3 shell (Debian package `sqlite3`), for reading the index without the code under test.
pub fn sqlite3() -> std::path::PathBuf {
    quarantine_testkit::require("sqlite3", "sqlite3")
}

/// One scratch directory shared by the tests that build their own command lines (readable by `nobody`, for the
/// tests that switch users).
fn shared() -> &'static Scratch {
    use std::os::unix::fs::PermissionsExt;
    static SHARED: std::sync::OnceLock<Scratch> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        let s = Scratch::new(BIN);
        std::fs::set_permissions(s.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(s.config(), std::fs::Permissions::from_mode(0o644)).unwrap();
        s
    })
}

/// `quarantine` with the hermetic environment and no arguments yet.
pub fn quarantine() -> std::process::Command {
    shared().cmd::<&str>(&[])
}

/// Any program with the hermetic environment.
pub fn program(p: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    shared().program(p)
}
