//! Retention purge and blob GC (DESIGN section 7).
//!
//! # Protocol
//! 1. Rows first: in short write transactions (a few hundred messages each, so holds keep flowing), live messages
//!    that match become tombstones (`purged_us` set, recipients `purged`), and every hash that lost its last live
//!    reference goes into `gc_queue`. The audit row is written in the same transaction.
//! 2. Then blobs: in write transactions of a bounded number of hashes, each queued hash is unlinked only if no live
//!    row references it *now*, its directory fsynced, and its queue row dropped. `hold` takes the same write lock
//!    and deletes its hash from the queue, so a blob a committed row references is never deleted.
//!
//! A crash between the two steps leaves queued hashes, which the next purge (or `gc`) finishes; a crash after an
//! unlink but before its commit leaves a queue row for a missing file, which is harmless.
//!
//! Messages with a recipient in `releasing` are never purged: a release may be on the wire.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use crate::db::params_from_iter;
use rusqlite::types::Value;
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use crate::audit::{self, AuditEntry};
use crate::blob::is_hash;
use crate::error::{Error, Result};
use crate::objects::ObjectStore;
use crate::progress::Progress;
use crate::select::Selector;
use crate::state::AuditAction;
use crate::store::{now_us, Store};

/// Messages tombstoned per write transaction: small enough that a hold never waits long behind a purge.
const ROW_BATCH: usize = 500;
/// Upper bound on the time one GC transaction holds the write lock.
const GC_BATCH_TIME: Duration = Duration::from_millis(50);
const GC_BATCH_MAX: usize = 512;
/// One rule of a purge: a selection, minus some verdicts (used by the retention policy's default age).
#[derive(Clone, Debug, Serialize)]
pub struct PurgeRule {
    pub selector: Selector,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude_verdicts: Vec<String>,
    /// For display: "SPAM older than 14d", "default older than 30d", or the selection.
    pub label: String,
}

/// Retention ages from the config: a default and per-verdict ages.
#[derive(Clone, Debug, Default)]
pub struct RetentionPolicy {
    pub default: Option<Duration>,
    pub per_verdict: BTreeMap<String, Duration>,
}

impl RetentionPolicy {
    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.per_verdict.is_empty()
    }

    /// The rules this policy means at `now_us`.
    pub fn rules(&self, now_us: i64) -> Vec<PurgeRule> {
        let cutoff = |d: &Duration| now_us - d.as_micros() as i64;
        let mut rules: Vec<PurgeRule> = self
            .per_verdict
            .iter()
            .map(|(v, d)| PurgeRule {
                selector: Selector { verdicts: vec![v.clone()], until_us: Some(cutoff(d)), ..Default::default() },
                exclude_verdicts: Vec::new(),
                label: format!("verdict {v} older than {}", human(d)),
            })
            .collect();
        if let Some(d) = &self.default {
            rules.push(PurgeRule {
                selector: Selector { until_us: Some(cutoff(d)), ..Default::default() },
                exclude_verdicts: self.per_verdict.keys().cloned().collect(),
                label: format!("other verdicts older than {}", human(d)),
            });
        }
        rules
    }
}

fn human(d: &Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PurgePlan {
    pub rules: Vec<PurgeRule>,
    /// Only messages received at or before this instant are touched, so mail arriving during the purge is safe.
    pub as_of_us: i64,
    pub messages: u64,
    pub recipients: u64,
    /// Sum of the original sizes.
    pub bytes: u64,
    /// Matching messages left alone because a release is in progress.
    pub skipped_releasing: u64,
    pub frozen: Option<Freeze>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PurgeReport {
    pub messages: u64,
    pub recipients: u64,
    pub skipped_releasing: u64,
    pub gc: GcReport,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct GcReport {
    pub blobs_removed: u64,
    pub bytes_freed: u64,
    /// Queued hashes that a hold referenced again before they could be removed.
    pub blobs_kept: u64,
    /// Queued objects uploaded within the upload grace (object store only): left queued for a later purge.
    pub blobs_young: u64,
    pub orphans_removed: u64,
    pub orphans_young: u64,
    pub tmp_removed: u64,
    /// Blobs, orphans or temp files that could not be stat'ed or unlinked. Each is counted and the run goes on;
    /// a queued blob that failed stays queued, so the next purge retries it.
    pub unlink_errors: u64,
    /// The first few of those errors, one line each.
    pub errors: Vec<String>,
}

/// How many unlink errors a [`GcReport`] keeps word for word.
const ERRORS_KEPT: usize = 10;

impl GcReport {
    fn failed(&mut self, e: Error) {
        self.unlink_errors += 1;
        if self.errors.len() < ERRORS_KEPT {
            self.errors.push(e.to_string());
        }
    }

    /// Folds the sweep's counts into the GC's (for one summary).
    pub fn add(&mut self, o: &GcReport) {
        self.blobs_removed += o.blobs_removed;
        self.bytes_freed += o.bytes_freed;
        self.blobs_kept += o.blobs_kept;
        self.orphans_removed += o.orphans_removed;
        self.orphans_young += o.orphans_young;
        self.tmp_removed += o.tmp_removed;
        self.unlink_errors += o.unlink_errors;
        for e in &o.errors {
            if self.errors.len() < ERRORS_KEPT {
                self.errors.push(e.clone());
            }
        }
    }
}

#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Freeze {
    pub reason: String,
    pub actor: String,
    pub at: String,
}

fn rule_sql(rule: &PurgeRule, as_of_us: i64) -> (String, Vec<Value>) {
    let sql = rule.selector.to_sql();
    let mut clause = sql.clause;
    let mut params = sql.params;
    // Tombstones and in-flight releases are never candidates, whatever the selector asked for.
    clause.push_str(" AND m.purged_us IS NULL");
    clause.push_str(" AND NOT EXISTS (SELECT 1 FROM recipients r WHERE r.message = m.id AND r.state = 'releasing')");
    params.push(Value::Integer(as_of_us));
    clause.push_str(&format!(" AND m.received_us <= ?{}", params.len()));
    if !rule.exclude_verdicts.is_empty() {
        let mut qs = Vec::new();
        for v in &rule.exclude_verdicts {
            params.push(Value::Text(v.clone()));
            qs.push(format!("?{}", params.len()));
        }
        clause.push_str(&format!(" AND m.verdict NOT IN ({})", qs.join(", ")));
    }
    (clause, params)
}

impl Store {
    pub fn frozen(&self) -> Result<Option<Freeze>> {
        let e = self.sql_err();
        let v: Option<String> = self
            .conn
            .query_row("SELECT value FROM settings WHERE key = 'frozen'", [], |r| r.get(0))
            .optional()
            .map_err(&e)?;
        Ok(v.map(|v| serde_json::from_str(&v).unwrap_or(Freeze { reason: v, actor: String::new(), at: String::new() })))
    }

    /// Stops every purge until `thaw`. Returns false if the store was already frozen (the first reason stays).
    pub fn freeze(&mut self, reason: &str, actor: &str) -> Result<bool> {
        let e = crate::index::sql_err(&self.index_path);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
        let f = Freeze { reason: reason.into(), actor: actor.into(), at: crate::message::rfc3339_us(now_us()) };
        let n = tx
            .execute(
                "INSERT INTO settings (key, value) VALUES ('frozen', ?1) ON CONFLICT DO NOTHING",
                [serde_json::to_string(&f).expect("plain struct")],
            )
            .map_err(&e)?;
        if n == 1 {
            audit::record(
                &tx,
                &AuditEntry {
                    actor,
                    action: AuditAction::Freeze,
                    selection: serde_json::Value::Null,
                    counts: serde_json::json!({}),
                    reason: Some(reason),
                },
            )
            .map_err(&e)?;
        }
        tx.commit().map_err(&e)?;
        Ok(n == 1)
    }

    /// Lifts a freeze. Returns false if the store was not frozen.
    pub fn thaw(&mut self, actor: &str, reason: Option<&str>) -> Result<bool> {
        let e = crate::index::sql_err(&self.index_path);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
        let n = tx.execute("DELETE FROM settings WHERE key = 'frozen'", []).map_err(&e)?;
        if n == 1 {
            audit::record(
                &tx,
                &AuditEntry {
                    actor,
                    action: AuditAction::Thaw,
                    selection: serde_json::Value::Null,
                    counts: serde_json::json!({}),
                    reason,
                },
            )
            .map_err(&e)?;
        }
        tx.commit().map_err(&e)?;
        Ok(n == 1)
    }

    /// Counts what `rules` would purge now. Read-only: `--dry-run` prints this and stops.
    pub fn purge_plan(&self, rules: Vec<PurgeRule>) -> Result<PurgePlan> {
        let e = self.sql_err();
        let as_of_us = now_us();
        let mut plan = PurgePlan { as_of_us, frozen: self.frozen()?, ..Default::default() };
        for rule in &rules {
            let (clause, params) = rule_sql(rule, as_of_us);
            let (m, b): (i64, i64) = self
                .conn
                .query_row(
                    &format!("SELECT count(*), coalesce(sum(m.size), 0) FROM messages m WHERE {clause}"),
                    params_from_iter(params.iter()),
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(&e)?;
            let rc: i64 = self
                .conn
                .query_row(
                    &format!(
                        "SELECT count(*) FROM recipients WHERE message IN (SELECT m.id FROM messages m WHERE {clause})"
                    ),
                    params_from_iter(params.iter()),
                    |r| r.get(0),
                )
                .map_err(&e)?;
            // Same selection without the releasing exclusion, to say how many were skipped.
            let sql = rule.selector.to_sql();
            let skipped: i64 = self
                .conn
                .query_row(
                    &format!(
                        "SELECT count(*) FROM messages m WHERE {} AND m.purged_us IS NULL AND EXISTS
                         (SELECT 1 FROM recipients r WHERE r.message = m.id AND r.state = 'releasing')",
                        sql.clause
                    ),
                    params_from_iter(sql.params.iter()),
                    |r| r.get(0),
                )
                .map_err(&e)?;
            plan.messages += m as u64;
            plan.bytes += b as u64;
            plan.recipients += rc as u64;
            plan.skipped_releasing += skipped as u64;
        }
        plan.rules = rules;
        Ok(plan)
    }

    /// Executes a plan: tombstones in batches, then GC of the blobs they released. Refuses a frozen store.
    pub fn purge(
        &mut self,
        plan: &PurgePlan,
        actor: &str,
        reason: Option<&str>,
        progress: &dyn Progress,
    ) -> Result<PurgeReport> {
        if let Some(f) = self.frozen()? {
            return Err(Error::Invalid(format!(
                "the store is frozen since {} by {}: {:?}; run `quarantine thaw` to allow purging",
                f.at, f.actor, f.reason
            )));
        }
        let index_path = self.index_path.clone();
        let e = crate::index::sql_err(&index_path);
        let mut report = PurgeReport { skipped_releasing: plan.skipped_releasing, ..Default::default() };
        progress.start("purging", plan.messages);
        for rule in &plan.rules {
            let (clause, mut params) = rule_sql(rule, plan.as_of_us);
            // Keyset pagination in (received_us, rowid) order: each batch is an index range that starts where the
            // last one ended, so a million-message purge never rescans the tombstones it already made.
            let cursor_at = params.len() + 1;
            params.push(Value::Integer(i64::MIN));
            params.push(Value::Integer(i64::MIN));
            let select = format!(
                "SELECT m.id, m.hash, m.received_us, m.rowid FROM messages m WHERE {clause}
                   AND m.received_us >= ?{a} AND (m.received_us > ?{a} OR m.rowid > ?{b})
                 ORDER BY m.received_us, m.rowid LIMIT {ROW_BATCH}",
                a = cursor_at,
                b = cursor_at + 1
            );
            let mut rule_messages = 0u64;
            loop {
                // Chosen outside the write lock (a read); re-checked row by row inside it, below.
                let batch: Vec<(String, String, i64, i64)> = self
                    .conn
                    .prepare_cached(&select)
                    .map_err(&e)?
                    .query_map(params_from_iter(params.iter()), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .map_err(&e)?
                    .collect::<rusqlite::Result<_>>()
                    .map_err(&e)?;
                let Some(last) = batch.last() else { break };
                params[cursor_at - 1] = Value::Integer(last.2);
                params[cursor_at] = Value::Integer(last.3);
                let batch_started = Instant::now();
                let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
                let now = now_us();
                let (mut messages, mut recipients) = (0u64, 0u64);
                let mut hashes = BTreeSet::new();
                {
                    // A release may have claimed a recipient, or another purge tombstoned the message, since the
                    // batch was read: the WHERE clause makes those rows no-ops.
                    let mut tomb = tx
                        .prepare_cached(
                            "UPDATE messages SET purged_us = ?2, purged_by = ?3, purge_reason = ?4
                             WHERE id = ?1 AND purged_us IS NULL AND NOT EXISTS
                               (SELECT 1 FROM recipients r WHERE r.message = ?1 AND r.state = 'releasing')",
                        )
                        .map_err(&e)?;
                    let mut rcpt =
                        tx.prepare_cached("UPDATE recipients SET state = 'purged' WHERE message = ?1").map_err(&e)?;
                    for (id, hash, _, _) in &batch {
                        if tomb.execute(params![id, now, actor, reason]).map_err(&e)? == 1 {
                            messages += 1;
                            recipients += rcpt.execute([id]).map_err(&e)? as u64;
                            hashes.insert(hash.as_str());
                        }
                    }
                    let mut queue = tx
                        .prepare_cached(
                            "INSERT INTO gc_queue (hash, queued_us)
                             SELECT CAST(?1 AS TEXT), CAST(?2 AS BIGINT) WHERE NOT EXISTS
                               (SELECT 1 FROM messages WHERE hash = ?1 AND purged_us IS NULL)
                             ON CONFLICT DO NOTHING",
                        )
                        .map_err(&e)?;
                    for h in &hashes {
                        queue.execute(params![h, now]).map_err(&e)?;
                    }
                }
                if messages > 0 {
                    record_purge(&tx, actor, rule, messages, recipients, reason).map_err(&e)?;
                }
                tx.commit().map_err(&e)?;
                checkpoint_passive(&self.conn);
                yield_to_holds(batch_started.elapsed());
                report.messages += messages;
                report.recipients += recipients;
                rule_messages += messages;
                progress.advance(batch.len() as u64);
            }
            if rule_messages == 0 {
                // A run that purged nothing still leaves a trace (cron's nightly purge; DESIGN section 3).
                let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
                record_purge(&tx, actor, rule, 0, 0, reason).map_err(&e)?;
                tx.commit().map_err(&e)?;
            }
        }
        progress.finish();
        report.gc = self.gc(progress)?;
        Ok(report)
    }

    /// Unlinks queued blobs that no live row references, a bounded batch per write transaction.
    ///
    /// The unlinks happen under the write lock (so a hold cannot re-reference a blob between the check and the
    /// unlink); the directory fsyncs happen after the commit, in parallel, so the lock is held for microseconds per
    /// blob rather than a disk flush per blob. If a crash loses an unlink that was not yet fsynced, the blob comes
    /// back as an orphan with no row and no queue entry, which the orphan sweep removes after its grace period:
    /// deletion is never a durability promise, keeping is.
    pub fn gc(&mut self, progress: &dyn Progress) -> Result<GcReport> {
        let index_path = self.index_path.clone();
        let e = crate::index::sql_err(&index_path);
        let mut report = GcReport::default();
        let queued: i64 = self.conn.query_row("SELECT count(*) FROM gc_queue", [], |r| r.get(0)).map_err(&e)?;
        progress.start("removing blobs", queued as u64);
        let mut after = String::new();
        loop {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
            let hashes: Vec<String> = tx
                .prepare_cached("SELECT hash FROM gc_queue WHERE hash > ?1 ORDER BY hash LIMIT ?2")
                .map_err(&e)?
                .query_map(params![after, GC_BATCH_MAX as i64], |r| r.get(0))
                .map_err(&e)?
                .collect::<rusqlite::Result<_>>()
                .map_err(&e)?;
            let Some(last) = hashes.last() else { break };
            after = last.clone();
            let started = Instant::now();
            let mut dirs = BTreeSet::new();
            let mut done = Vec::new();
            for h in &hashes {
                let live: bool = tx
                    .prepare_cached("SELECT EXISTS (SELECT 1 FROM messages WHERE hash = ?1 AND purged_us IS NULL)")
                    .map_err(&e)?
                    .query_row([h], |r| r.get(0))
                    .map_err(&e)?;
                if live {
                    report.blobs_kept += 1;
                } else if let (Some(remote), true) = (self.blobs.remote(), is_hash(h)) {
                    match remove_object(remote.as_ref(), h, self.blobs.upload_grace()) {
                        Ok(Removed::Gone) => {}
                        Ok(Removed::Freed(bytes)) => {
                            report.blobs_removed += 1;
                            report.bytes_freed += bytes;
                        }
                        Ok(Removed::Young) => {
                            report.blobs_young += 1;
                            progress.advance(1);
                            continue;
                        }
                        Err(err) => {
                            report.failed(err);
                            progress.advance(1);
                            continue;
                        }
                    }
                } else if is_hash(h) {
                    let path = self.blobs.path_of(h);
                    let removed = match fs::metadata(&path) {
                        Ok(m) => match crate::durable::unlink(&path) {
                            Ok(()) => {
                                report.blobs_removed += 1;
                                report.bytes_freed += m.len();
                                dirs.insert(path.parent().expect("blob has a parent").to_path_buf());
                                true
                            }
                            Err(err) => {
                                report.failed(Error::io("unlink", &path)(err));
                                false
                            }
                        },
                        Err(err) if err.kind() == std::io::ErrorKind::NotFound => true,
                        Err(err) => {
                            report.failed(Error::io("stat", &path)(err));
                            false
                        }
                    };
                    if !removed {
                        // Stays queued for the next purge; this run goes on with the rest.
                        progress.advance(1);
                        continue;
                    }
                }
                done.push(h);
                if started.elapsed() > GC_BATCH_TIME {
                    after = h.to_string();
                    break;
                }
            }
            {
                let mut del = tx.prepare_cached("DELETE FROM gc_queue WHERE hash = ?1").map_err(&e)?;
                for h in &done {
                    del.execute([h]).map_err(&e)?;
                }
            }
            tx.commit().map_err(&e)?;
            checkpoint_passive(&self.conn);
            crate::durable::fsync_dirs_parallel(&dirs)?;
            yield_to_holds(started.elapsed());
            progress.advance(done.len() as u64);
        }
        progress.finish();
        Ok(report)
    }

    /// Removes orphan blobs (on disk, no live row) whose file is older than `grace`, and temp files older than
    /// `grace`. An orphan younger than the grace may belong to a hold about to commit, so it stays.
    pub fn sweep_orphans(&mut self, grace: Duration) -> Result<GcReport> {
        let index_path = self.index_path.clone();
        let e = crate::index::sql_err(&index_path);
        let mut report = GcReport::default();
        let live: BTreeSet<String> = self
            .conn
            .prepare("SELECT DISTINCT hash FROM messages WHERE purged_us IS NULL")
            .map_err(&e)?
            .query_map([], |r| r.get(0))
            .map_err(&e)?
            .collect::<rusqlite::Result<_>>()
            .map_err(&e)?;
        if let Some(remote) = self.blobs.remote().cloned() {
            self.sweep_objects(remote.as_ref(), &live, grace, &mut report)?;
        } else {
            self.sweep_files(&live, grace, &mut report)?;
        }
        for t in self.stale_tmp_files(grace)? {
            match crate::durable::unlink(&t) {
                Ok(()) => report.tmp_removed += 1,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => report.failed(Error::io("unlink", t)(err)),
            }
        }
        Ok(report)
    }

    /// The orphan sweep over an object store: an object no live row references, last uploaded before `grace`.
    fn sweep_objects(
        &mut self,
        remote: &dyn ObjectStore,
        live: &BTreeSet<String>,
        grace: Duration,
        report: &mut GcReport,
    ) -> Result<()> {
        let e = crate::index::sql_err(&self.index_path);
        let now = SystemTime::now();
        let candidates: Vec<_> = remote.list()?.into_iter().filter(|o| !live.contains(&o.name)).collect();
        for chunk in candidates.chunks(GC_BATCH_MAX) {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
            for o in chunk {
                // Re-checked under the write lock: an ingest may have committed a row for it since the listing.
                let live: bool = is_hash(&o.name)
                    && tx
                        .prepare_cached("SELECT EXISTS (SELECT 1 FROM messages WHERE hash = ?1 AND purged_us IS NULL)")
                        .map_err(&e)?
                        .query_row([&o.name], |r| r.get(0))
                        .map_err(&e)?;
                if live {
                    continue;
                }
                if now.duration_since(o.last_modified).unwrap_or_default() < grace {
                    report.orphans_young += 1;
                    continue;
                }
                match remote.delete(&o.name) {
                    Ok(()) => report.orphans_removed += 1,
                    Err(err) => report.failed(err),
                }
            }
            tx.commit().map_err(&e)?;
        }
        Ok(())
    }

    /// The orphan sweep over `blobs/`.
    fn sweep_files(&mut self, live: &BTreeSet<String>, grace: Duration, report: &mut GcReport) -> Result<()> {
        let e = crate::index::sql_err(&self.index_path);
        let live_refs: std::collections::HashSet<&str> = live.iter().map(String::as_str).collect();
        let candidates: Vec<PathBuf> = self.orphan_blobs(&live_refs)?;
        let now = SystemTime::now();
        let old_enough = |p: &PathBuf| {
            fs::symlink_metadata(p)
                .and_then(|m| m.modified())
                .map(|t| now.duration_since(t).unwrap_or_default() >= grace)
                .unwrap_or(false)
        };
        for chunk in candidates.chunks(GC_BATCH_MAX) {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
            let mut dirs = BTreeSet::new();
            for p in chunk {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                // Re-checked under the write lock: a hold may have committed a row for it since the scan.
                let live: bool = is_hash(name)
                    && tx
                        .prepare_cached("SELECT EXISTS (SELECT 1 FROM messages WHERE hash = ?1 AND purged_us IS NULL)")
                        .map_err(&e)?
                        .query_row([name], |r| r.get(0))
                        .map_err(&e)?;
                if live {
                    continue;
                }
                if !old_enough(p) {
                    report.orphans_young += 1;
                    continue;
                }
                match crate::durable::unlink(p) {
                    Ok(()) => {
                        report.orphans_removed += 1;
                        dirs.insert(p.parent().expect("has parent").to_path_buf());
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => report.failed(Error::io("unlink", p)(err)),
                }
            }
            tx.commit().map_err(&e)?;
            crate::durable::fsync_dirs_parallel(&dirs)?;
        }
        Ok(())
    }
}

/// What [`remove_object`] did with one queued object.
enum Removed {
    /// It was not there (a GC that crashed after the delete and before its commit).
    Gone,
    /// Deleted; its stored size.
    Freed(u64),
    /// Uploaded within the grace: kept, and stays queued.
    Young,
}

/// Deletes a queued, unreferenced object unless it was uploaded within `grace`. Runs under the index write lock.
fn remove_object(remote: &dyn ObjectStore, name: &str, grace: Duration) -> Result<Removed> {
    let Some(info) = remote.head(name)? else { return Ok(Removed::Gone) };
    if SystemTime::now().duration_since(info.last_modified).unwrap_or_default() < grace {
        return Ok(Removed::Young);
    }
    remote.delete(name)?;
    Ok(Removed::Freed(info.size))
}

impl Store {
    /// Rewrites the index without its free pages. Takes the write lock for the whole run: holds wait (and may
    /// time out into a retry), so this is opt-in.
    pub fn vacuum(&self) -> Result<()> {
        self.conn.execute_batch("VACUUM").map_err(self.sql_err())?;
        // A VACUUM may renumber message rowids, and changes the cookie their copies are trusted under.
        if !self.conn.is_postgres() {
            self.conn.execute_batch("BEGIN IMMEDIATE").map_err(self.sql_err())?;
            let done = crate::search::refresh_message_rowids(&self.conn)
                .and_then(|()| self.conn.execute_batch("COMMIT"))
                .map_err(self.sql_err());
            if done.is_err() {
                let _ = self.conn.execute_batch("ROLLBACK");
            }
            done?;
        }
        Ok(())
    }
}

/// Copies the WAL back into the index after each batch, in this process. Without it the WAL grows by a batch's
/// pages each time, and SQLite's autocheckpoint lands on whichever commit crosses 1,000 pages — often a `hold`,
/// which then spends a second copying the purge's pages before it can acknowledge. PASSIVE never waits for a lock
/// and never blocks writers; the next writer restarts the WAL from the beginning once it is fully copied.
fn checkpoint_passive(conn: &crate::db::Conn) {
    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
}

/// Rests as long as the batch took. Holds arriving during a purge need the write lock and, above all, the
/// filesystem journal: a hold's fsync waits for every metadata change queued before it, and a purge queues
/// thousands (unlinks, index pages). Half the time idle keeps each hold's wait to about one batch, at half the
/// purge's top speed (still well above the thousands of messages a second retention needs).
fn yield_to_holds(batch: Duration) {
    std::thread::sleep(batch.min(Duration::from_millis(200)));
}

/// The audit row of one purge batch (or of a rule that purged nothing: cron's nightly run still leaves a trace).
fn record_purge(
    tx: &crate::db::Tx<'_>,
    actor: &str,
    rule: &PurgeRule,
    messages: u64,
    recipients: u64,
    reason: Option<&str>,
) -> rusqlite::Result<()> {
    audit::record(
        tx,
        &AuditEntry {
            actor,
            action: AuditAction::Purge,
            selection: serde_json::to_value(rule).expect("plain struct"),
            counts: serde_json::json!({ "messages": messages, "recipients": recipients }),
            reason,
        },
    )
}
