//! `verify` (DESIGN section 8): every live row's blob exists and is readable; `deep` also decompresses and
//! re-hashes each one. Orphan blobs and stale temp files are listed, not counted as errors: a killed hold leaves
//! them by design, and purge removes them after a grace period.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::blob::is_hash;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::store::Store;

/// A temp file older than this is no longer being written by a live hold (whose deadline is far shorter).
pub const STALE_TMP_AGE: Duration = Duration::from_secs(3600);

#[derive(Debug, Default, Serialize)]
pub struct Problem {
    pub hash: String,
    /// Ids of the live messages that reference this blob.
    pub messages: Vec<String>,
    pub detail: String,
}

#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub deep: bool,
    pub blobs_checked: u64,
    pub bytes_checked: u64,
    pub missing: Vec<Problem>,
    pub corrupt: Vec<Problem>,
    pub orphans: Vec<PathBuf>,
    pub stale_tmp: Vec<PathBuf>,
    /// Spool files waiting for ingest (not an error).
    pub spool_pending: u64,
    /// Pending spool files whose trailer or bytes do not check (`--deep`; ingest will move them to `spool/bad/`).
    pub spool_corrupt: Vec<crate::spool::BadEntry>,
    /// Files in `spool/bad/`: kept for an admin, an error until someone deals with them.
    pub spool_bad: Vec<crate::spool::BadEntry>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.corrupt.is_empty() && self.spool_corrupt.is_empty() && self.spool_bad.is_empty()
    }
}

impl Store {
    pub fn verify(&self, deep: bool, progress: &dyn Progress) -> Result<VerifyReport> {
        let e = self.sql_err();
        let mut referenced: Vec<(String, String)> = self
            .conn
            .prepare("SELECT hash, string_agg(id, ' ') FROM messages WHERE purged_us IS NULL GROUP BY hash")
            .map_err(&e)?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(&e)?
            .collect::<rusqlite::Result<_>>()
            .map_err(&e)?;
        referenced.sort();
        let mut report = VerifyReport { deep, ..Default::default() };
        progress.start(if deep { "verifying blobs (deep)" } else { "verifying blobs" }, referenced.len() as u64);
        for (hash, ids) in &referenced {
            let problem = |detail: String| Problem {
                hash: hash.clone(),
                messages: ids.split(' ').map(str::to_string).collect(),
                detail,
            };
            let result = crate::message::checked_hash(hash).and_then(|hash| {
                if deep {
                    self.blobs.stream_verified(hash, &mut io::sink())
                } else {
                    self.check_shallow(hash)
                }
            });
            match result {
                Ok(n) => report.bytes_checked += n,
                Err(err @ Error::MissingBlob { .. }) => report.missing.push(problem(err.to_string())),
                Err(err) => report.corrupt.push(problem(err.to_string())),
            }
            report.blobs_checked += 1;
            progress.advance(1);
        }
        progress.finish();
        let live: HashSet<&str> = referenced.iter().map(|(h, _)| h.as_str()).collect();
        report.orphans = self.orphan_blobs(&live)?;
        report.stale_tmp = self.stale_tmp_files(STALE_TMP_AGE)?;
        let spool = self.spool();
        let pending = spool.pending()?;
        report.spool_pending = pending.len() as u64;
        if deep {
            for p in &pending {
                match crate::spool::check_file(&p.path) {
                    Ok(Ok(_)) => {}
                    Ok(Err(r)) => report
                        .spool_corrupt
                        .push(crate::spool::BadEntry { path: p.path.clone(), reason: format!("{}: {r}", r.code()) }),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {} // ingested meanwhile
                    Err(e) => return Err(Error::io("read spool file", &p.path)(e)),
                }
            }
        }
        report.stale_tmp.extend(spool.stale_tmp(STALE_TMP_AGE)?);
        report.spool_bad = spool.bad()?;
        Ok(report)
    }

    /// Exists, is a regular file, opens, and starts with a zstd frame header: catches a missing or emptied blob
    /// without reading every byte.
    fn check_shallow(&self, hash: &str) -> Result<u64> {
        if let Some(remote) = self.blobs.remote() {
            // A HEAD, not a read: the object is there and not empty (a zstd frame is never under 4 bytes).
            return match remote.head(hash)? {
                None => Err(Error::MissingBlob { hash: hash.to_string(), path: self.blobs.location_of(hash) }),
                Some(o) if o.size < 4 => {
                    Err(Error::CorruptBlob { hash: hash.to_string(), detail: format!("{} bytes", o.size) })
                }
                Some(o) => Ok(o.size),
            };
        }
        let path = self.blobs.path_of(hash);
        let mut f = match fs::File::open(&path) {
            Ok(f) => f,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(Error::MissingBlob { hash: hash.to_string(), path })
            }
            Err(err) => return Err(Error::io("open", path)(err)),
        };
        let mut magic = [0u8; 4];
        f.read_exact(&mut magic).map_err(|err| Error::CorruptBlob {
            hash: hash.to_string(),
            detail: format!("cannot read its first bytes: {err}"),
        })?;
        if magic != [0x28, 0xb5, 0x2f, 0xfd] {
            return Err(Error::CorruptBlob { hash: hash.to_string(), detail: "not a zstd frame".into() });
        }
        Ok(f.metadata().map(|m| m.len()).unwrap_or(0))
    }

    /// Files under `blobs/` that no live row references (including names that are not hashes at all).
    /// With an object store: objects under its prefix that no live row references, as URLs.
    pub fn orphan_blobs(&self, live: &HashSet<&str>) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        if let Some(remote) = self.blobs.remote() {
            for o in remote.list()? {
                if !is_hash(&o.name) || !live.contains(o.name.as_str()) {
                    out.push(PathBuf::from(remote.url_of(&o.name)));
                }
            }
            out.sort();
            return Ok(out);
        }
        for entry in walk_files(self.blobs.blobs_dir())? {
            let name = entry.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !is_hash(name) || !live.contains(name) {
                out.push(entry);
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn stale_tmp_files(&self, older_than: Duration) -> Result<Vec<PathBuf>> {
        let dir = self.blobs.tmp_dir();
        let now = SystemTime::now();
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(Error::io("list", dir))? {
            let entry = entry.map_err(Error::io("list", dir))?;
            let modified = entry.metadata().and_then(|m| m.modified()).unwrap_or(now);
            if now.duration_since(modified).unwrap_or_default() >= older_than {
                out.push(entry.path());
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Every regular file below `dir`, two levels of fan-out deep.
fn walk_files(dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).map_err(Error::io("list", &d))? {
            let entry = entry.map_err(Error::io("list", &d))?;
            let ft = entry.file_type().map_err(Error::io("stat", entry.path()))?;
            if ft.is_dir() {
                stack.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    Ok(out)
}
