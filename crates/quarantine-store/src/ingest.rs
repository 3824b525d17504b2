//! Ingest (DESIGN section 4): spool files into blobs and index rows, in batches.
//!
//! 1. Take a batch of spool files, oldest first, bounded in count, bytes, time and the free space it may take
//!    ([`INDEX_ROOM`], [`INDEX_ROOM_PER_FILE`]: on a filesystem the spool filled to its reserve, smaller batches,
//!    each freeing its spool files before the next, instead of one that fails for want of room to commit and
//!    leaves everything where it was). Each is checked while it is
//!    read ([`crate::spool::open_checked`] for the prefix, trailer and header; the body's BLAKE3 while it streams
//!    into a staged blob): a file that does not check moves to `spool/bad/` with a `.reason` file and is never
//!    deleted. An I/O error reading a file is not a verdict on it: the batch stops and the file stays.
//! 2. Staging threads write each blob (zstd, checksum on) into `tmp/` and fsync it, many at once, and create the
//!    blob's fan-out directories.
//! 3. The group commit shared with import ([`crate::import`]'s `batch.rs`): `BEGIN IMMEDIATE`, each blob renamed
//!    into place or an existing blob kept only if it checks, the touched directories fsynced, rows inserted (a
//!    live id gains only missing recipients; a purged id drops the very file ingested before, anything else gets
//!    a fresh id), hashes off the GC queue, one `hold` audit row per batch, commit.
//! 4. Only then are the batch's spool files unlinked.
//!
//! A crash anywhere leaves the spool file, the committed rows, or both; the next ingest converges: a file whose
//! rows committed resolves to the same rows again (no duplicate message or recipient) and is unlinked.
//!
//! # Locking
//! One ingest at a time per store: `spool/.ingest.lock` (flock). `quarantine ingest` waits for it; the bounded
//! ingest every other command runs first skips when another ingest holds it (that one is draining already).
//! Correctness does not depend on the lock (two ingests of one file converge the same way); it saves the work.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::audit::{self, AuditEntry};
use crate::blob::BlobStore;
use crate::durable;
use crate::error::{Error, Result};
use crate::hold::{self, HoldRequest};
use crate::import::batch::{BatchCounts, Item, Key, Outcome, Ready};
use crate::spool::{self, BadEntry, BadReason, Pending, ScanMeta, Spool};
use crate::state::AuditAction;
use crate::store::Store;
use quarantine_mail::headers;

pub const LOCK_FILE: &str = ".ingest.lock";
/// Temp files of holds older than this are removed by ingest: no hold runs that long (its deadline kills it).
pub const STALE_SPOOL_TMP: Duration = Duration::from_secs(24 * 3600);

/// Free space a batch leaves for the index, besides its blobs: the WAL frames and the pages a checkpoint adds to
/// the database file. A batch of 512 small messages writes ~2 MiB of WAL; twice that, for margin.
pub const INDEX_ROOM: u64 = 4 << 20;
/// Index room per message of a batch (its rows, header and text-index entries, written twice: WAL and database).
pub const INDEX_ROOM_PER_FILE: u64 = 16 << 10;

#[derive(Clone, Debug)]
pub struct IngestOptions {
    /// Files per batch (one write transaction).
    pub batch_files: usize,
    /// Bytes per batch (spool file sizes).
    pub batch_bytes: u64,
    /// Staging stops taking files once a batch has been staging this long; the rest waits for the next batch.
    pub batch_time: Duration,
    /// Staging threads (they mostly wait on fsync).
    pub jobs: usize,
    /// Keep taking batches until the spool is empty (else one batch).
    pub drain: bool,
    /// Wait for another ingest's lock (else return at once, with `locked` set).
    pub wait: bool,
    pub actor: String,
    /// Freeze purges when a verdict spikes (checked after each batch; `None`: never).
    pub spike: Option<crate::spike::SpikeRule>,
}

impl IngestOptions {
    /// `quarantine ingest`: every pending file, in batches of up to 512 files / 64 MiB / 1 s.
    pub fn drain(actor: String) -> IngestOptions {
        IngestOptions {
            batch_files: 512,
            batch_bytes: 64 << 20,
            batch_time: Duration::from_secs(1),
            jobs: 16,
            drain: true,
            wait: true,
            actor,
            spike: None,
        }
    }

    /// What every command that reads or changes the index runs first: at most one batch of 256 files / 32 MiB,
    /// staged for at most 300 ms, and nothing at all when another ingest is running.
    pub fn bounded(actor: String) -> IngestOptions {
        IngestOptions {
            batch_files: 256,
            batch_bytes: 32 << 20,
            batch_time: Duration::from_millis(300),
            drain: false,
            wait: false,
            ..IngestOptions::drain(actor)
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct IngestReport {
    /// The spike that froze purges during this ingest, if one did.
    pub spike: Option<crate::spike::Spike>,
    /// Problems after a commit that did not stop ingest (the spike rule's query).
    pub warnings: Vec<String>,
    /// New messages committed.
    pub ingested: u64,
    /// Spool files that were retries of (or recipient batches for) a message already held.
    pub merged: u64,
    /// Spool files already ingested before their message was purged (unlinked, nothing else).
    pub dropped: u64,
    pub recipients_added: u64,
    pub bytes: u64,
    pub batches: u64,
    /// Existing blobs that did not check and were replaced by good bytes from the spool.
    pub blobs_repaired: u64,
    /// Files moved to `spool/bad/` by this run.
    pub bad: Vec<BadEntry>,
    /// Spool files left pending when this run stopped.
    pub pending: u64,
    /// Another ingest held the lock: this run did nothing.
    pub locked: bool,
}

enum Staged {
    /// With the spool header's scan metadata (written after the batch commits: [`record_scans`]).
    Ready(Box<Item>, Option<ScanMeta>),
    Bad(BadReason),
    /// Taken by another process meanwhile.
    Gone,
    Fatal(Error),
}

impl Store {
    /// The store's spool.
    pub fn spool(&self) -> Spool {
        Spool::new(&self.root, self.blobs.owner())
    }

    /// Ingests pending spool files (see the module docs). `Err` when the store fails (what committed before
    /// stays committed and its spool files are gone; the rest stays in the spool).
    pub fn ingest(&mut self, opts: &IngestOptions) -> Result<IngestReport> {
        let spool = self.spool();
        spool.ensure_dirs()?;
        let mut report = IngestReport::default();
        let Some(_lock) = durable::lock_file(&spool.dir().join(LOCK_FILE), spool.owner(), opts.wait)? else {
            report.locked = true;
            return Ok(report);
        };
        // An ingest that opened the store before `migrate` switched it, and waited for the lock migrate held,
        // would move the spool into the abandoned local index: only a store opened with the new config may.
        if !self.conn.is_postgres() {
            if let Some(to) = crate::store::shared_index_mark(&self.conn).map_err(self.sql_err())? {
                return Err(Error::Invalid(format!(
                    "{}: `quarantine migrate` moved this store's index to {to} while this ingest waited; set `index` \
                     in the config and run ingest again (the spool is untouched)",
                    self.root.display()
                )));
            }
        }
        for t in spool.stale_tmp(STALE_SPOOL_TMP)? {
            durable::remove_file(&t)?;
        }
        let mut queue: std::collections::VecDeque<Pending> = spool.pending()?.into();
        loop {
            if queue.is_empty() {
                if !opts.drain {
                    break;
                }
                queue = spool.pending()?.into();
                if queue.is_empty() {
                    break;
                }
            }
            let mut batch = Vec::new();
            let mut bytes = 0u64;
            // A blob is never much larger than its spool file (zstd adds a few bytes to what it cannot shrink).
            // The first file is always taken: if even it does not fit, staging says so and it stays.
            let room = self.ingest_room();
            let mut takes = INDEX_ROOM;
            while let Some(p) = queue.front() {
                let cost = p.len + INDEX_ROOM_PER_FILE;
                if !batch.is_empty()
                    && (batch.len() >= opts.batch_files || bytes + p.len > opts.batch_bytes || takes + cost > room)
                {
                    break;
                }
                bytes += p.len;
                takes += cost;
                batch.push(queue.pop_front().expect("front exists"));
            }
            let (left, failed) = self.ingest_batch(&spool, batch, opts, &mut report)?;
            queue.extend(left);
            if let Some(e) = failed {
                // Part of the batch committed (space freed, say) before a file failed: a drain goes on with
                // the rest and gives up only on a batch that makes no progress at all.
                if !opts.drain {
                    return Err(e);
                }
            }
            if !opts.drain {
                break;
            }
        }
        report.pending = spool.pending()?.len() as u64;
        Ok(report)
    }

    /// Free bytes a batch may use: the least of the index's and the staged blobs' filesystems (remote blobs are
    /// staged locally too). Unlimited when statvfs fails: staging then reports the real problem.
    fn ingest_room(&self) -> u64 {
        [self.root.as_path(), self.blobs.tmp_dir()]
            .iter()
            .filter_map(|p| durable::available_space(p).ok())
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Ingests one spool file at once (for [`Store::hold`]); returns the message id and whether it merged.
    pub(crate) fn ingest_file(&mut self, path: &Path) -> Result<(String, bool)> {
        let staged = stage(&self.blobs, path);
        let item = match staged {
            Staged::Ready(item, scan) => (item, scan),
            Staged::Bad(r) => return Err(Error::Invalid(format!("{}: {r}", path.display()))),
            Staged::Gone => return Err(Error::Invalid(format!("{}: gone before it was ingested", path.display()))),
            Staged::Fatal(e) => return Err(e),
        };
        let actor = crate::audit::actor(None);
        let (item, scan) = item;
        let (_, outcomes) = self.commit_batch(vec![*item], &|tx, c| record_hold(tx, &actor, c, 0))?;
        self.record_scans(&outcomes, &[scan])?;
        durable::remove_file(path)?;
        match outcomes.into_iter().next() {
            Some(Outcome::New(id)) => Ok((id, false)),
            Some(Outcome::Merged(id)) => Ok((id, true)),
            _ => Err(Error::Invalid(format!("{}: its message was purged", path.display()))),
        }
    }

    /// Stages and commits one batch; returns the files that were not staged in time (for the next batch). When a
    /// file fails (I/O, a full disk) what staged fine is still committed: `Ok` with the error if anything was
    /// done, `Err` if nothing was (so a drain always ends).
    fn ingest_batch(
        &mut self,
        spool: &Spool,
        batch: Vec<Pending>,
        opts: &IngestOptions,
        report: &mut IngestReport,
    ) -> Result<(Vec<Pending>, Option<Error>)> {
        let started = Instant::now();
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<(usize, Staged)>> = Mutex::new(Vec::with_capacity(batch.len()));
        let jobs = opts.jobs.clamp(1, 64).min(batch.len().max(1));
        let blobs = &self.blobs;
        let work = || loop {
            // The first file is always staged, so a slow disk still makes progress.
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= batch.len() || (i > 0 && started.elapsed() >= opts.batch_time) {
                break;
            }
            let out = stage(blobs, &batch[i].path);
            let fatal = matches!(out, Staged::Fatal(_));
            results.lock().expect("no poisoned staging").push((i, out));
            if fatal {
                next.store(usize::MAX / 2, Ordering::Relaxed);
                break;
            }
        };
        if jobs == 1 {
            work(); // on this thread: one process, one thread (fault-injection tests count on it)
        } else {
            std::thread::scope(|s| {
                for _ in 0..jobs {
                    s.spawn(work);
                }
            });
        }
        let mut results = results.into_inner().expect("no poisoned staging");
        results.sort_by_key(|(i, _)| *i);
        let mut taken = vec![false; batch.len()];
        let mut items = Vec::new();
        let mut paths = Vec::new();
        let mut scans = Vec::new();
        let mut fatal = None;
        let mut bad = 0u64;
        for (i, out) in results {
            taken[i] = true;
            match out {
                Staged::Ready(item, scan) => {
                    items.push(*item);
                    scans.push(scan);
                    paths.push(batch[i].path.clone());
                }
                Staged::Bad(reason) => match spool.quarantine_bad(&batch[i].path, &reason) {
                    Ok(to) => {
                        bad += 1;
                        report.bad.push(BadEntry { path: to, reason: format!("{}: {reason}", reason.code()) });
                    }
                    Err(e) => {
                        fatal.get_or_insert(e);
                    }
                },
                Staged::Gone => {}
                Staged::Fatal(e) => {
                    fatal.get_or_insert(e);
                }
            }
        }
        let left: Vec<Pending> = batch.into_iter().zip(taken).filter(|(_, t)| !t).map(|(p, _)| p).collect();
        if items.is_empty() {
            return match fatal {
                Some(e) if bad == 0 => Err(e), // the spool files all stay
                fatal => Ok((left, fatal)),
            };
        }
        let actor = opts.actor.clone();
        let verdicts: std::collections::BTreeSet<String> = items.iter().map(|i| i.verdict.trim().to_string()).collect();
        let (counts, outcomes) = self.commit_batch(items, &|tx, c| record_hold(tx, &actor, c, bad))?;
        self.record_scans(&outcomes, &scans)?;
        // Committed: only now may the spool files go. A crash before an unlink leaves a file that the next
        // ingest resolves to the same rows (a no-op) and unlinks then.
        for p in &paths {
            durable::remove_file(p)?;
        }
        report.ingested += counts.imported;
        report.merged += outcomes.iter().filter(|o| matches!(o, Outcome::Merged(_))).count() as u64;
        report.dropped += counts.dropped;
        report.recipients_added += counts.recipients_added;
        report.bytes += counts.bytes;
        report.blobs_repaired += counts.blobs_repaired;
        report.batches += 1;
        if let (Some(rule), true) = (&opts.spike, counts.imported > 0) {
            // After the commit: a failure here never costs the batch; it is reported and ingest goes on.
            match self.evaluate_spike_now(rule, &verdicts) {
                Ok(Some(s)) => report.spike = Some(s),
                Ok(None) => {}
                Err(e) => report.warnings.push(format!("spike rule: {e}")),
            }
        }
        Ok((left, fatal))
    }
}

impl Store {
    /// The scan metadata of a committed batch's messages (`outcomes` and `scans` in the batch's order), in a
    /// transaction of its own after the batch's and before any spool file is unlinked: a crash in between leaves
    /// the spool file, whose re-ingest merges into the same id and writes the row then (INSERT OR IGNORE).
    fn record_scans(&mut self, outcomes: &[Outcome], scans: &[Option<ScanMeta>]) -> Result<()> {
        if scans.iter().all(Option::is_none) {
            return Ok(());
        }
        let path = self.index_path.clone();
        let e = crate::index::sql_err(&path);
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(&e)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO message_scan (message, action, score, symbols) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT DO NOTHING",
                )
                .map_err(&e)?;
            for (o, scan) in outcomes.iter().zip(scans) {
                let (Outcome::New(id) | Outcome::Merged(id), Some(s)) = (o, scan) else { continue };
                let symbols = s.symbols.as_ref().map(|v| v.to_string());
                stmt.execute(rusqlite::params![id, s.action, s.score, symbols]).map_err(&e)?;
            }
        }
        tx.commit().map_err(&e)
    }
}

/// The audit row of one ingest batch (a "hold batch", DESIGN section 3).
fn record_hold(tx: &crate::db::Conn, actor: &str, c: &BatchCounts, bad: u64) -> rusqlite::Result<()> {
    audit::record(
        tx,
        &AuditEntry {
            actor,
            action: AuditAction::Hold,
            selection: serde_json::json!({ "source": "spool" }),
            counts: serde_json::json!({
                "held": c.imported,
                "duplicates": c.duplicates,
                "dropped": c.dropped,
                "recipients_added": c.recipients_added,
                "bytes": c.bytes,
                "bad": bad,
                "blobs_repaired": c.blobs_repaired,
            }),
            reason: None,
        },
    )
}

/// Checks one spool file and stages its blob ([`BlobStore::prepare`]: fsynced with its fan-out directories
/// made, or uploaded to the object store).
fn stage(blobs: &BlobStore, path: &Path) -> Staged {
    let (file, checked) = match spool::open_checked(path) {
        Ok(Ok(x)) => x,
        Ok(Err(reason)) => return Staged::Bad(reason),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Staged::Gone,
        Err(e) => return Staged::Fatal(Error::io("read spool file", path)(e)),
    };
    let h = &checked.header;
    let req = HoldRequest {
        from: h.from.clone(),
        recipients: h.recipients.clone(),
        verdict: h.verdict.clone(),
        scanner: h.scanner.clone(),
        reason: h.reason.clone(),
        queue_id: h.queue_id.clone(),
        scanner_version: h.scanner_version.clone(),
    };
    let env = match hold::validate(&req) {
        Ok(env) => env,
        Err(e) => return Staged::Bad(BadReason::BadHeader(e.to_string())),
    };
    if h.id.len() != crate::ids::ID_LEN || crate::ids::normalise(&h.id) != h.id {
        return Staged::Bad(BadReason::BadHeader(format!("bad id {:?}", h.id)));
    }
    let mut body = match spool::body_reader(file, &checked) {
        Ok(b) => b,
        Err(e) => return Staged::Fatal(Error::io("read spool file", path)(e)),
    };
    let mut staged = match blobs.stage_unsynced(&mut body, headers::FULL_PARSE_LIMIT) {
        Ok(s) => s,
        Err(Error::Input(e)) => return Staged::Fatal(Error::io("read spool file", path)(e)),
        Err(e) => return Staged::Fatal(e),
    };
    if staged.size != checked.body_len || staged.hash != checked.hash_hex() {
        return Staged::Bad(BadReason::HashMismatch);
    }
    let prefix = std::mem::take(&mut staged.prefix);
    let fields = headers::extract(&prefix, staged.size);
    let trace = crate::trace::trace_values(&prefix);
    if let Err(e) = blobs.prepare(&mut staged) {
        return Staged::Fatal(e);
    }
    let ready = Ready {
        staged,
        env,
        fields,
        reason: req.reason,
        received_us: h.received_us,
        scanner_version: req.scanner_version,
        trace,
    };
    let scan = h.scan.clone();
    Staged::Ready(
        Box::new(Item {
            ready,
            verdict: req.verdict,
            scanner: req.scanner,
            queue_id: req.queue_id,
            key: Key::Spool { id: h.id.clone() },
        }),
        scan,
    )
}

/// Waits for `spool/` to change, for `ingest --watch`: inotify (a rename into `spool/` is what a finished hold
/// does), or polling every 200 ms where inotify is not available.
pub struct SpoolWatcher {
    fd: Option<std::os::fd::OwnedFd>,
}

impl SpoolWatcher {
    pub fn new(spool_dir: &Path) -> SpoolWatcher {
        use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)
            .and_then(|fd| {
                inotify::add_watch(&fd, spool_dir, WatchFlags::MOVED_TO | WatchFlags::CLOSE_WRITE)?;
                Ok(fd)
            })
            .ok();
        SpoolWatcher { fd }
    }

    pub fn uses_inotify(&self) -> bool {
        self.fd.is_some()
    }

    /// Returns when something arrived in `spool/`, or after `timeout` at the latest.
    pub fn wait(&self, timeout: Duration) {
        let Some(fd) = &self.fd else {
            std::thread::sleep(timeout.min(Duration::from_millis(200)));
            return;
        };
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let ts = Timespec { tv_sec: timeout.as_secs() as i64, tv_nsec: timeout.subsec_nanos() as _ };
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        let _ = poll(&mut fds, Some(&ts));
        let mut buf = [0u8; 4096];
        while matches!(rustix::io::read(fd, &mut buf), Ok(n) if n > 0) {}
    }
}
