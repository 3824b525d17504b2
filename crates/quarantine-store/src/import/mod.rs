//! `import`: batch intake of existing quarantines and mailboxes (Maildir, mbox, eml files, amavisd-new
//! quarantine files), with the durability of `hold` at a fraction of its cost per message.
//!
//! # Pipeline
//! The sources are listed first ([`Unit`], one per message), so progress has a total. Then a pool of
//! staging threads (`jobs`, default 16) takes units in turn: stream the message into `tmp/` (BLAKE3 + zstd, as
//! `hold` does), parse its headers, recover its envelope ([`envelope`]), and — unless the message is already
//! held — fsync the temp file. Many threads fsyncing at once is what lets ext4 fold their journal commits
//! together: a single writer pays one journal commit per file. The calling thread collects staged messages and
//! commits them in batches ([`batch`]): up to `batch_messages` messages or `batch_bytes` bytes, or whatever
//! arrived within `batch_time`, in one short write transaction, so holds arriving from the MTA meanwhile wait
//! for at most one batch.
//!
//! # Acknowledgement and idempotency
//! A message counts as imported only when its batch has committed. Each message gets the synthetic queue id
//! `import:<hash>` and goes through hold's retry rule: a live message with that queue id, the same bytes and
//! the same envelope sender is the same message (only missing recipients are added). So re-running an import
//! adds nothing, and an import killed at any point resumes without duplicates: whatever had committed is found,
//! the rest is imported; a blob renamed into place by a batch that never committed is an orphan that the re-run
//! dedups onto (and purge sweeps after its grace period if no re-run comes).
//!
//! The hash, not the file name or position, is the key on purpose: the same quarantine is often exported twice
//! (from two servers, or as Maildir and as mbox) and renamed on the way, and identical bytes from an identical
//! sender are one message for every purpose of the store (recipients are merged).
//!
//! # Errors
//! A message that cannot be read, has no recipient, or an envelope address that cannot be used is skipped and
//! reported; the batch goes on. A failure of the store itself (disk full, an fsync error, the index) stops the
//! import: what had committed stays, the summary says how far it got.

pub(crate) mod batch;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::hold::{self, HoldRequest};
use crate::progress::Progress;
use crate::store::{now_us, Store};
use quarantine_mail::headers::{self, HeaderFields};

use batch::{AuditInfo, Ready};
use quarantine_mail::source::{self, amavis, envelope, Format, MboxVariant, Skipped, Unit};

#[derive(Clone, Debug)]
pub struct ImportOptions {
    pub format: Format,
    pub paths: Vec<PathBuf>,
    pub verdict: String,
    pub scanner: Option<String>,
    /// The scanner / signature-database version for every message (`--scanner-version`).
    pub scanner_version: Option<String>,
    /// The reason column; for amavis files without it, their `X-Amavis-Alert`.
    pub reason: Option<String>,
    /// Envelope sender for every message, instead of what the files say.
    pub from: Option<String>,
    /// Envelope recipients for every message, instead of what the files say.
    pub rcpt: Vec<String>,
    pub mbox_variant: MboxVariant,
    /// Received time from the source (Maildir name, mbox `From ` line, file time) instead of now.
    pub keep_dates: bool,
    /// Who, for the audit rows.
    pub actor: String,
    /// Staging threads.
    pub jobs: usize,
    pub batch_messages: usize,
    pub batch_bytes: u64,
    pub batch_time: Duration,
}

impl ImportOptions {
    pub fn new(format: Format, paths: Vec<PathBuf>, verdict: impl Into<String>) -> ImportOptions {
        ImportOptions {
            format,
            paths,
            verdict: verdict.into(),
            scanner: None,
            scanner_version: None,
            reason: None,
            from: None,
            rcpt: Vec::new(),
            mbox_variant: MboxVariant::Mboxrd,
            keep_dates: false,
            actor: crate::audit::actor(None),
            jobs: DEFAULT_JOBS,
            batch_messages: 256,
            batch_bytes: 64 << 20,
            batch_time: Duration::from_secs(1),
        }
    }
}

/// 16 writers is where ext4's fsync batching stops paying on a typical disk; the threads mostly wait on fsync,
/// so this is not about cores.
pub const DEFAULT_JOBS: usize = 16;

#[derive(Clone, Debug, Default, Serialize)]
pub struct ImportReport {
    /// Messages found in the sources.
    pub found: u64,
    /// New messages committed.
    pub imported: u64,
    /// Messages that were already held (from an earlier run, or twice in this one).
    pub duplicates: u64,
    /// Recipients added to messages already held.
    pub recipients_added: u64,
    /// Original bytes of the imported messages.
    pub bytes: u64,
    /// Imported messages whose recipients were taken from the To/Cc headers.
    pub recipients_from_headers: u64,
    pub batches: u64,
    pub skipped: Vec<Skipped>,
    /// Set when the store failed and the import stopped early; everything counted above is committed.
    pub aborted: Option<String>,
}

/// A message's verdict and scanner: the import's, or those of its export record.
type Labels = (String, Option<String>);

/// What a staging thread hands the committer.
enum Staged {
    /// Staged, whether its recipients came from the To/Cc headers, and its verdict and scanner.
    Ready(Box<Ready>, bool, Labels),
    Duplicate,
    Skip(Skipped),
    /// The store itself failed (not the source): stop.
    Fatal(Error),
}

impl Store {
    /// Imports every message found under `opts.paths`. Returns once every batch is committed. `Err` only for
    /// options that make no sense; a failure of the store part way stops the import and is reported in
    /// [`ImportReport::aborted`], with everything committed before it kept and counted.
    pub fn import(&mut self, opts: &ImportOptions, progress: &dyn Progress) -> Result<ImportReport> {
        if opts.verdict.trim().is_empty() {
            return Err(Error::Invalid("the verdict cannot be empty".into()));
        }
        if let Some(f) = &opts.from {
            quarantine_mail::address::envelope_sender(f)?;
        }
        for r in &opts.rcpt {
            quarantine_mail::address::envelope_recipient(r)?;
        }
        let mut report = ImportReport::default();
        let mut units = Vec::new();
        for p in &opts.paths {
            units.extend(source::units(opts.format, p, &mut report.skipped));
        }
        report.found = units.len() as u64;
        let selection = selection(opts);
        let mut pending_dups = 0u64;
        let mut pending_skips = report.skipped.len() as u64;
        progress.start(&format!("importing {}", opts.format.name()), units.len() as u64);

        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let jobs = opts.jobs.clamp(1, 256).min(units.len().max(1));
        let blobs = self.blobs.clone();
        let index_path = self.index_path.clone();
        let shared = self.conn.is_postgres();
        let (tx, rx) = mpsc::sync_channel::<(usize, Staged)>(opts.batch_messages.max(1));

        let mut staging_skips: Vec<(usize, Skipped)> = Vec::new();
        let result = std::thread::scope(|s| {
            for _ in 0..jobs {
                let tx = tx.clone();
                let (units, next, stop, blobs, index_path) = (&units, &next, &stop, &blobs, &index_path);
                s.spawn(move || {
                    let mut stager = Stager { opts, blobs, index_path, shared, conn: None };
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(unit) = units.get(i) else { break };
                        let out = stager.stage(unit);
                        if tx.send((i, out)).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);

            let mut batch: Vec<(Ready, Labels)> = Vec::new();
            let (mut batch_bytes, mut batch_started, mut batch_guessed) = (0u64, Instant::now(), 0u64);
            let mut fatal: Option<Error> = None;
            let staging_skips = &mut staging_skips;
            loop {
                let full = batch.len() >= opts.batch_messages || batch_bytes >= opts.batch_bytes;
                let due = !batch.is_empty() && (full || batch_started.elapsed() >= opts.batch_time);
                let got = if due {
                    Err(RecvTimeoutError::Timeout)
                } else if batch.is_empty() {
                    rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
                } else {
                    rx.recv_timeout(opts.batch_time.saturating_sub(batch_started.elapsed()))
                };
                let done = matches!(got, Err(RecvTimeoutError::Disconnected));
                match got {
                    Ok((_, Staged::Ready(r, guessed, labels))) => {
                        if batch.is_empty() {
                            batch_started = Instant::now();
                        }
                        batch_bytes += r.staged.size;
                        batch_guessed += guessed as u64;
                        batch.push((*r, labels));
                        continue;
                    }
                    Ok((_, Staged::Duplicate)) => {
                        report.duplicates += 1;
                        pending_dups += 1;
                        progress.advance(1);
                        continue;
                    }
                    Ok((i, Staged::Skip(s))) => {
                        staging_skips.push((i, s));
                        pending_skips += 1;
                        progress.advance(1);
                        continue;
                    }
                    Ok((_, Staged::Fatal(e))) => fatal = Some(e),
                    Err(_) => {}
                }
                if !batch.is_empty() {
                    // One commit per verdict and scanner (one, unless export records give them per message).
                    for (labels, group) in by_labels(std::mem::take(&mut batch)) {
                        let n = group.len() as u64;
                        let info = AuditInfo {
                            actor: &opts.actor,
                            selection: selection.clone(),
                            reason: opts.reason.as_deref(),
                            extra_duplicates: pending_dups,
                            extra_skipped: pending_skips,
                        };
                        match self.commit_import_batch(group, &labels.0, labels.1.as_deref(), &info) {
                            Ok(c) => {
                                report.imported += c.imported;
                                report.duplicates += c.duplicates;
                                report.recipients_added += c.recipients_added;
                                report.bytes += c.bytes;
                                report.batches += 1;
                                (pending_dups, pending_skips) = (0, 0);
                                progress.advance(n);
                            }
                            Err(e) => {
                                fatal.get_or_insert(e);
                                break;
                            }
                        }
                    }
                    if fatal.is_none() {
                        report.recipients_from_headers += batch_guessed;
                    }
                    (batch_bytes, batch_guessed) = (0, 0);
                }
                if let Some(e) = fatal {
                    stop.store(true, Ordering::Relaxed);
                    drop(rx); // staging threads blocked on a full channel see the error and stop
                    return Err(e);
                }
                if done {
                    return Ok(());
                }
            }
        });
        progress.finish();
        staging_skips.sort_by_key(|(i, _)| *i);
        report.skipped.extend(staging_skips.into_iter().map(|(_, s)| s));
        let tail = || AuditInfo {
            actor: &opts.actor,
            selection: selection.clone(),
            reason: opts.reason.as_deref(),
            extra_duplicates: pending_dups,
            extra_skipped: pending_skips,
        };
        let result = result.and_then(|()| {
            if pending_dups + pending_skips > 0 {
                self.record_import_tail(&tail())?;
            }
            Ok(())
        });
        if let Err(e) = result {
            report.aborted = Some(e.to_string());
        }
        Ok(report)
    }
}

/// `batch` split by verdict and scanner, each group in arrival order, groups in order of first appearance.
fn by_labels(batch: Vec<(Ready, Labels)>) -> Vec<(Labels, Vec<Ready>)> {
    let mut groups: Vec<(Labels, Vec<Ready>)> = Vec::new();
    for (r, labels) in batch {
        match groups.iter_mut().find(|(l, _)| *l == labels) {
            Some((_, g)) => g.push(r),
            None => groups.push((labels, vec![r])),
        }
    }
    groups
}

/// The audit rows' `selection`: what was imported, with at most a few paths named.
fn selection(opts: &ImportOptions) -> serde_json::Value {
    const SHOWN: usize = 10;
    let mut paths: Vec<String> = opts.paths.iter().take(SHOWN).map(|p| p.display().to_string()).collect();
    if opts.paths.len() > SHOWN {
        paths.push(format!("… and {} more", opts.paths.len() - SHOWN));
    }
    serde_json::json!({
        "format": opts.format.name(),
        "paths": paths,
        "verdict": opts.verdict.trim(),
        "scanner": opts.scanner,
        "from": opts.from,
        "rcpt": opts.rcpt,
    })
}

/// One staging thread's state.
struct Stager<'a> {
    opts: &'a ImportOptions,
    blobs: &'a crate::blob::BlobStore,
    index_path: &'a Path,
    /// The index is a shared database: `index_path` is only the local marker, not where rows are.
    shared: bool,
    /// A read connection for the "already held?" check, opened on first use.
    conn: Option<crate::db::Conn>,
}

impl Stager<'_> {
    fn stage(&mut self, unit: &Unit) -> Staged {
        match self.try_stage(unit) {
            Ok(s) => s,
            Err(e) => Staged::Fatal(e),
        }
    }

    fn try_stage(&mut self, unit: &Unit) -> Result<Staged> {
        let skip = |why: String| Ok(Staged::Skip(Skipped::new(unit.label(), why)));
        let mut input = match unit.open(self.opts.mbox_variant) {
            Ok(r) => r,
            Err(e) => return skip(format!("cannot read: {e}")),
        };
        let mut staged = match self.blobs.stage_unsynced(&mut input, headers::FULL_PARSE_LIMIT) {
            Ok(s) => s,
            Err(Error::Input(e)) => return skip(format!("cannot read: {e}")),
            Err(e) => return Err(e),
        };
        drop(input);
        let prefix = std::mem::take(&mut staged.prefix);
        // What an mbox export recorded for these very bytes (docs/import.md): envelope, verdict, scanner, reason.
        let record = match &unit.kind {
            source::UnitKind::Mbox { record: Some(r), .. } if r.hash == staged.hash => Some(r.clone()),
            _ => None,
        };
        let hints = envelope::Hints {
            from: self.opts.from.clone().or_else(|| record.as_ref().map(|r| r.from.clone())),
            rcpt: match &record {
                Some(r) if self.opts.rcpt.is_empty() => r.recipients.clone(),
                _ => self.opts.rcpt.clone(),
            },
            amavis: matches!(unit.kind, source::UnitKind::Amavis),
            mbox_sender: match &unit.kind {
                source::UnitKind::Mbox { sender, .. } => sender.clone(),
                _ => None,
            },
        };
        let guessed = match envelope::guess(&hints, &prefix) {
            Ok(g) => g,
            Err(why) => return skip(why),
        };
        let req = HoldRequest {
            from: guessed.from,
            recipients: guessed.recipients,
            verdict: self.opts.verdict.clone(),
            ..Default::default()
        };
        let env = match hold::validate(&req) {
            Ok(env) => env,
            Err(e) => return skip(e.to_string()),
        };
        if self.already_held(&staged.hash, &env)? {
            return Ok(Staged::Duplicate); // the temp file goes without ever being fsynced
        }
        let mut fields: HeaderFields = headers::extract(&prefix, staged.size);
        let reason = match &record {
            Some(r) => r.reason.clone().or_else(|| self.opts.reason.clone()),
            None => self.opts.reason.clone().or_else(|| {
                matches!(unit.kind, source::UnitKind::Amavis)
                    .then(|| amavis::reason(&envelope::header_fields(&prefix)))
                    .flatten()
            }),
        };
        let labels: Labels = match &record {
            Some(r) => (
                r.verdict.clone().unwrap_or_else(|| self.opts.verdict.clone()),
                r.scanner.clone().or_else(|| self.opts.scanner.clone()),
            ),
            None => (self.opts.verdict.clone(), self.opts.scanner.clone()),
        };
        let trace = crate::trace::trace_values(&prefix);
        drop(prefix);
        if !guessed.notes.is_empty() {
            let mut notes: Vec<String> = fields.note.take().into_iter().collect();
            notes.extend(guessed.notes);
            fields.note = Some(notes.join("; "));
        }
        self.blobs.prepare(&mut staged)?;
        let received_us = if self.opts.keep_dates { unit.source_time_us.unwrap_or_else(now_us) } else { now_us() };
        let scanner_version = self.opts.scanner_version.clone();
        let ready = Ready { staged, env, fields, reason, received_us, scanner_version, trace };
        Ok(Staged::Ready(Box::new(ready), guessed.from_headers, labels))
    }

    /// True when a live message with these bytes, this sender and every one of these recipients is already held
    /// under this import's queue id. Read-only: the committer decides again under the write lock for the rest.
    fn already_held(&mut self, hash: &str, env: &hold::Envelope) -> Result<bool> {
        if self.shared {
            // The early check is only a saving; the committer decides under the writers' lock either way.
            return Ok(false);
        }
        let e = crate::index::sql_err(self.index_path);
        if self.conn.is_none() {
            self.conn =
                Some(crate::db::Conn::Sqlite(crate::index::open(self.index_path, false, Duration::from_secs(60))?));
        }
        let conn = self.conn.as_ref().expect("opened above");
        let Some(id) = hold::find_retry(conn, &batch::queue_id(hash), hash, &env.from).map_err(&e)? else {
            return Ok(false);
        };
        let mut stmt = conn
            .prepare_cached("SELECT count(*) FROM recipients WHERE message = ?1 AND address_lc = ?2")
            .map_err(&e)?;
        for r in &env.recipients {
            let n: i64 =
                stmt.query_row(rusqlite::params![id, quarantine_mail::address::fold(r)], |r| r.get(0)).map_err(&e)?;
            if n == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
