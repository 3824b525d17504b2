//! `check`: would a hold succeed right now? A probe for monitoring and for filters that want to know before they
//! hand a message over (a content filter can tempfail at SMTP time instead of piling mail into a broken store).
//!
//! It walks the path of a hold without holding anything: the store opens (it is a store, the index migrates and
//! opens in WAL mode), `blobs/` and `tmp/` are directories, a probe file can be created in `tmp/`, written,
//! fsynced and removed, the index write lock can be taken (`BEGIN IMMEDIATE; ROLLBACK`) within the busy time,
//! and the filesystem has at least `min_free` bytes and some inodes available to an unprivileged user. The
//! first thing that fails is the answer.
//!
//! Run it as the account `hold` runs as: root can write where that account cannot.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::Rng;
use rusqlite::TransactionBehavior;
use serde::Serialize;

use crate::durable::{self, available_space, Owner};
use crate::store::Store;
use crate::units::human_bytes as human;

/// Fewer free inodes than this and a hold (temp file, maybe two fan-out directories) may fail.
const MIN_FREE_INODES: u64 = 64;

#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub store: PathBuf,
    /// Bytes available to an unprivileged user on the store's filesystem.
    pub free_bytes: u64,
    /// Inodes available, when the filesystem counts them.
    pub free_inodes: Option<u64>,
    pub min_free: u64,
}

/// Why a hold would not succeed now, in one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckFailure(pub String);

impl std::fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Runs every check against the store at `root`; `busy` bounds the wait for the index write lock.
pub fn check(root: &Path, min_free: u64, busy: Duration) -> Result<CheckReport, CheckFailure> {
    check_with(root, min_free, busy, &crate::Backends::default())
}

/// [`check`] with the given backends. A shared index that cannot be reached fails the check (75) naming it: holds
/// still succeed (they only write the spool), but nothing is indexed until it is back.
pub fn check_with(
    root: &Path,
    min_free: u64,
    busy: Duration,
    backends: &crate::Backends,
) -> Result<CheckReport, CheckFailure> {
    let fail = |s: String| CheckFailure(s.replace('\n', " "));
    let shown = root.display();
    match std::fs::metadata(root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fail(format!("{shown} does not exist (create the store with `quarantine init`)")))
        }
        Err(e) => return Err(fail(format!("{shown}: {e}"))),
        Ok(m) if !m.is_dir() => return Err(fail(format!("{shown} is not a directory"))),
        Ok(_) => {}
    }
    let mut store = Store::open_with(root, busy, backends).map_err(|e| {
        if e.is_outage() {
            fail(format!("the shared index is unreachable, mail waits in the spool: {e}"))
        } else {
            fail(e.to_string())
        }
    })?;
    for dir in [store.blobs.blobs_dir().to_path_buf(), store.blobs.tmp_dir().to_path_buf()] {
        match std::fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(fail(format!("{} is not a directory", dir.display()))),
            Err(e) => return Err(fail(format!("{}: {e}", dir.display()))),
        }
    }
    probe_tmp(store.blobs.tmp_dir(), &Owner::of(root).map_err(|e| fail(e.to_string()))?)
        .map_err(|e| fail(format!("cannot write a file in {}: {e}", store.blobs.tmp_dir().display())))?;
    let index = store.index_path.clone();
    let tx = store.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| {
        if matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        ) {
            fail(format!(
                "{}: another process has held the write lock for more than {}s",
                index.display(),
                busy.as_secs_f64()
            ))
        } else {
            fail(format!("{}: cannot take the write lock: {e}", index.display()))
        }
    })?;
    tx.rollback().map_err(|e| fail(format!("{}: {e}", index.display())))?;

    let tmp = store.blobs.tmp_dir();
    let free_bytes = available_space(tmp).map_err(|e| fail(format!("{}: statvfs: {e}", tmp.display())))?;
    let free_inodes = rustix::fs::statvfs(tmp).ok().filter(|s| s.f_files > 0).map(|s| s.f_favail);
    if free_bytes < min_free {
        return Err(fail(format!(
            "{shown}: only {} free on its filesystem, less than the minimum {} (--min-free / min_free_space)",
            human(free_bytes),
            human(min_free)
        )));
    }
    if let Some(n) = free_inodes.filter(|&n| n < MIN_FREE_INODES) {
        return Err(fail(format!("{shown}: only {n} free inodes on its filesystem")));
    }
    Ok(CheckReport { store: root.to_path_buf(), free_bytes, free_inodes, min_free })
}

/// Creates, writes, fsyncs and removes a file in `tmp/`, as the first step of a hold does.
fn probe_tmp(tmp: &Path, owner: &Owner) -> std::io::Result<()> {
    let name: u64 = rand::thread_rng().gen();
    let path = tmp.join(format!("{name:016x}.{}.check", std::process::id()));
    let as_io = |e: crate::Error| match e {
        crate::Error::Io { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    };
    let mut f = durable::create_new(&path, owner).map_err(as_io)?;
    let written = f.write_all(b"quarantine check\n").and_then(|()| f.sync_all());
    drop(f);
    let removed = durable::unlink(&path);
    written?;
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_and_broken_stores() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        Store::init(&root).unwrap();
        let r = check(&root, 0, Duration::from_secs(1)).unwrap();
        assert!(r.free_bytes > 0);
        assert!(std::fs::read_dir(root.join("tmp")).unwrap().next().is_none(), "the probe file is gone");

        assert!(check(&root, u64::MAX, Duration::from_secs(1)).unwrap_err().0.contains("free"));
        assert!(check(&dir.path().join("nope"), 0, Duration::from_secs(1)).unwrap_err().0.contains("does not exist"));

        std::fs::remove_dir(root.join("tmp")).unwrap();
        std::fs::write(root.join("tmp"), b"").unwrap();
        assert!(check(&root, 0, Duration::from_secs(1)).unwrap_err().0.contains("tmp"));
    }

    #[test]
    fn a_held_write_lock_fails_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        let (mut other, _) = Store::init(&root).unwrap();
        let tx = other.conn.transaction_with_behavior(TransactionBehavior::Immediate).unwrap();
        let err = check(&root, 0, Duration::from_millis(200)).unwrap_err();
        assert!(err.0.contains("write lock"), "{err}");
        drop(tx);
        check(&root, 0, Duration::from_millis(200)).unwrap();
    }
}
