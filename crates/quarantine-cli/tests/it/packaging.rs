//! The Debian package, end to end: `tests/packaging/run` builds the .deb (with this test build's binary, so no
//! second, release, build), installs it with dpkg on this machine, holds a message as the `quarantine` user,
//! searches as root, finds the man page, loads the bash completion, removes and purges the package and checks
//! that the store kept its mail. About 30 s once cargo-deb is installed (installing it: about 3 minutes, once).
//!
//! It changes the machine (a package, a system user), so it runs only with `QUARANTINE_PACKAGING_TEST=1`, which
//! scripts/test sets in CI; `QUARANTINE_PACKAGING_TEST=release` packages a real release build instead.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

#[test]
fn debian_package_installs_runs_and_keeps_the_store_when_purged() {
    let mode = std::env::var("QUARANTINE_PACKAGING_TEST").unwrap_or_default();
    if mode != "1" && mode != "release" {
        eprintln!(
            "skipped: the packaging test installs a .deb and a system user on this machine; \
             set QUARANTINE_PACKAGING_TEST=1 to run it (as root; scripts/test does in CI)"
        );
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut cmd = Command::new(repo.join("tests/packaging/run"));
    if mode == "1" {
        cmd.env("QUARANTINE_BINARY", env!("CARGO_BIN_EXE_quarantine"));
    }
    let started = Instant::now();
    let out = cmd.output().expect("run tests/packaging/run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "tests/packaging/run failed ({}) after {:.0?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status,
        started.elapsed()
    );
}
