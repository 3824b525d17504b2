//! The group commit: many staged messages, one write transaction.
//!
//! The write order of a single hold (DESIGN section 4), kept for every message of the batch, with each expensive
//! step done once per batch instead of once per message:
//! 1. (before this module) each blob is staged in `tmp/` and fsynced, and its fan-out directories are created
//!    durably, by the staging threads (many at once, so ext4 folds their journal commits together);
//! 2. `BEGIN IMMEDIATE`; for each message, find whether it is already held (same synthetic queue id, bytes and
//!    sender, in the index or earlier in this batch); for each new one, rename the blob into place or drop the
//!    temp file if the blob exists;
//! 3. fsync every distinct blob directory touched, once, from several threads (a directory fsync mostly waits
//!    for a journal commit and a cache flush, which concurrent callers share); a blob found in place has its
//!    directory fsynced too: it may be an orphan left by a killed import whose entry never reached the disk;
//! 4. insert the rows, take the hashes off the GC queue, add missing recipients to messages already held, write
//!    the audit row;
//! 5. commit (synchronous=FULL: one WAL fsync for the whole batch). Only now do these messages count as imported.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use rusqlite::{OptionalExtension, TransactionBehavior};

use crate::audit::{self, AuditEntry};
use crate::blob::StagedBlob;
use crate::durable;
use crate::error::Result;
use crate::hold::{self, Envelope, HoldRequest, NewMessage};
use crate::state::AuditAction;
use crate::store::Store;
use quarantine_mail::headers::HeaderFields;

/// A message staged and fsynced in `tmp/`, with everything its rows need.
pub(crate) struct Ready {
    pub(crate) staged: StagedBlob,
    pub(crate) env: Envelope,
    pub(crate) fields: HeaderFields,
    pub(crate) reason: Option<String>,
    pub(crate) received_us: i64,
    pub(crate) scanner_version: Option<String>,
    /// The message's `X-Quarantine-Released` header values, checked under the write lock (a valid one makes the
    /// row a re-quarantined copy).
    pub(crate) trace: Vec<String>,
}

/// What one committed batch did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BatchCounts {
    pub(crate) imported: u64,
    pub(crate) duplicates: u64,
    pub(crate) recipients_added: u64,
    pub(crate) bytes: u64,
    /// Items dropped (spool files ingested before their message was purged).
    pub(crate) dropped: u64,
    /// Existing blobs that did not check and were replaced by the batch's good bytes.
    pub(crate) blobs_repaired: u64,
}

/// The synthetic MTA queue id of an imported message: the same bytes with the same sender are the same
/// message, whichever file or run they come from, so a re-run (or a run resumed after a kill) finds them.
pub(crate) fn queue_id(hash: &str) -> String {
    format!("import:{hash}")
}

enum Action {
    /// A new row, with this id (None: draw a random one).
    New(Option<String>),
    /// Already held (committed earlier): the id.
    Existing(String),
    /// Same message as item `j` of this batch.
    SameAs(usize),
    /// The very spool file ingested before its message was purged: nothing to do but unlink it.
    Dropped,
}

/// How an item finds the message it may already be.
pub(crate) enum Key {
    /// import: a live message with the same synthetic queue id, bytes and sender.
    Retry,
    /// A spool file: the id hold printed (DESIGN section 4: a live id gains its missing recipients; a purged id
    /// drops the very file ingested before, same received time and hash; anything else gets a fresh id).
    Spool { id: String },
}

/// One message for [`Store::commit_batch`]: what import and ingest both hand the group commit.
pub(crate) struct Item {
    pub(crate) ready: Ready,
    pub(crate) verdict: String,
    pub(crate) scanner: Option<String>,
    pub(crate) queue_id: Option<String>,
    pub(crate) key: Key,
}

/// What became of one item of a committed batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    New(String),
    Merged(String),
    Dropped,
}

/// Everything about the run an audit row carries, besides the batch's counts.
pub(crate) struct AuditInfo<'a> {
    pub(crate) actor: &'a str,
    pub(crate) selection: serde_json::Value,
    pub(crate) reason: Option<&'a str>,
    /// Messages found already held, or skipped, by the staging threads since the previous audit row.
    pub(crate) extra_duplicates: u64,
    pub(crate) extra_skipped: u64,
}

impl Store {
    /// Commits `items` in one write transaction (see the module docs). On error nothing of the batch is
    /// committed; blobs already renamed stay as orphans, which the next run dedups onto and purge sweeps after
    /// its grace period.
    pub(crate) fn commit_import_batch(
        &mut self,
        items: Vec<Ready>,
        verdict: &str,
        scanner: Option<&str>,
        info: &AuditInfo,
    ) -> Result<BatchCounts> {
        let items = items
            .into_iter()
            .map(|ready| Item {
                queue_id: Some(queue_id(&ready.staged.hash)),
                ready,
                verdict: verdict.to_string(),
                scanner: scanner.map(str::to_string),
                key: Key::Retry,
            })
            .collect();
        let (counts, _) = self.commit_batch(items, &|tx, counts| record_import(tx, info, counts))?;
        Ok(counts)
    }

    /// The group commit shared by import and ingest: one `BEGIN IMMEDIATE` for the whole batch, blobs renamed
    /// into place (an existing blob kept only if it checks), touched directories fsynced once, rows inserted,
    /// hashes taken off the GC queue, `audit` writes the batch's audit row, commit. Returns what became of each
    /// item, in order.
    pub(crate) fn commit_batch(
        &mut self,
        items: Vec<Item>,
        audit: &dyn Fn(&crate::db::Tx<'_>, &BatchCounts) -> rusqlite::Result<()>,
    ) -> Result<(BatchCounts, Vec<Outcome>)> {
        let e = crate::index::sql_err(&self.index_path);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;

        let mut actions = Vec::with_capacity(items.len());
        let mut first_of: HashMap<(String, String), usize> = HashMap::new();
        let mut batch_ids: HashMap<String, (usize, String)> = HashMap::new();
        let mut retries: HashMap<(String, String, String), usize> = HashMap::new();
        let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
        let mut metas = Vec::with_capacity(items.len());
        let mut repaired = 0u64;
        let mut uploaded = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let Item { ready, verdict, scanner, queue_id, key } = item;
            let Ready { staged, env, fields, reason, received_us, scanner_version, trace } = ready;
            let (hash, size) = (staged.hash.clone(), staged.size);
            let action = match &key {
                Key::Retry => {
                    let k = (hash.clone(), env.from.clone());
                    if let Some(&j) = first_of.get(&k) {
                        Action::SameAs(j)
                    } else if let Some(id) =
                        hold::find_retry(&tx, queue_id.as_deref().unwrap_or(""), &hash, &env.from).map_err(&e)?
                    {
                        Action::Existing(id)
                    } else {
                        first_of.insert(k, i);
                        Action::New(None)
                    }
                }
                Key::Spool { id } => {
                    let retry = queue_id.as_ref().map(|q| (q.clone(), hash.clone(), env.from.clone()));
                    let a = resolve_spool_id(&tx, id, received_us, &hash, retry.as_ref(), &batch_ids, &retries)
                        .map_err(&e)?;
                    if let (Action::New(_), Some(k)) = (&a, retry) {
                        retries.entry(k).or_insert(i);
                    }
                    a
                }
            };
            if let Action::New(id) = &action {
                if let Some(id) = id {
                    batch_ids.insert(id.clone(), (i, hash.clone()));
                }
                if self.blobs.remote().is_some() {
                    uploaded.push(staged);
                } else {
                    let (dir, fixed) = self.blobs.publish_checked(staged)?;
                    dirs.extend(dir);
                    repaired += fixed as u64;
                }
            }
            let origin = if matches!(action, Action::New(_)) && !trace.is_empty() {
                crate::trace::origin_on(&tx, &trace, chrono::Utc::now()).map_err(&e)?
            } else {
                None
            };
            actions.push(action);
            let req = HoldRequest { verdict, scanner, reason, queue_id, scanner_version, ..Default::default() };
            metas.push((hash, size, env, fields, req, received_us, origin));
        }
        durable::fsync_dirs_parallel(&dirs)?;
        repaired += self.blobs.publish_all(uploaded)?;

        let mut counts = BatchCounts { blobs_repaired: repaired, ..Default::default() };
        let mut ids: Vec<Option<String>> = vec![None; metas.len()];
        let mut outcomes = Vec::with_capacity(metas.len());
        for (i, (action, (hash, size, env, fields, req, received_us, origin))) in actions.iter().zip(&metas).enumerate()
        {
            match action {
                Action::New(id) => {
                    tx.execute("DELETE FROM gc_queue WHERE hash = ?1", [hash]).map_err(&e)?;
                    let new = NewMessage {
                        req,
                        env,
                        hash,
                        size: *size,
                        fields,
                        received_us: *received_us,
                        id: id.as_deref(),
                        requarantined_from: origin.as_deref(),
                    };
                    let id = hold::insert_message(&tx, &new).map_err(&e)?;
                    ids[i] = Some(id.clone());
                    outcomes.push(Outcome::New(id));
                    counts.imported += 1;
                    counts.bytes += size;
                }
                Action::Existing(id) => {
                    counts.recipients_added += hold::insert_recipients(&tx, id, &env.recipients).map_err(&e)?;
                    counts.duplicates += 1;
                    ids[i] = Some(id.clone());
                    outcomes.push(Outcome::Merged(id.clone()));
                }
                Action::SameAs(j) => {
                    let id = ids[*j].clone().expect("the first of a kind is inserted before its duplicates");
                    counts.recipients_added += hold::insert_recipients(&tx, &id, &env.recipients).map_err(&e)?;
                    counts.duplicates += 1;
                    ids[i] = Some(id.clone());
                    outcomes.push(Outcome::Merged(id));
                }
                Action::Dropped => {
                    counts.dropped += 1;
                    outcomes.push(Outcome::Dropped);
                }
            }
        }
        audit(&tx, &counts).map_err(&e)?;
        tx.commit().map_err(&e)?;
        Ok((counts, outcomes))
    }

    /// An audit row for what the staging threads found (duplicates, skips) after the last batch committed, so
    /// that the rows of one run add up to its summary even when it imported nothing.
    pub(crate) fn record_import_tail(&mut self, info: &AuditInfo) -> Result<()> {
        let e = crate::index::sql_err(&self.index_path);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
        record_import(&tx, info, &BatchCounts::default()).map_err(&e)?;
        tx.commit().map_err(&e)
    }
}

/// Where a spool file's message goes (DESIGN section 4, ingest step 3). Candidates are the file's own id, then
/// fresh ids derived from the file's identity ([`crate::spool::fresh_id`]), so that a re-run after a crash
/// resolves the same file to the same row: a live row with the same hash is this message (only missing
/// recipients are added); a purged row with the same received time and hash is this very file, ingested before
/// the purge (dropped: never resurrected); any other row means the id is taken, and the next candidate is tried.
/// When the file's own id is taken and it has a queue id, a live message with the same queue id, bytes and sender
/// (a delivery after the first one was purged, which got a fresh id) is this message too: MTA retries of it merge.
fn resolve_spool_id(
    tx: &crate::db::Tx<'_>,
    id: &str,
    received_us: i64,
    hash: &str,
    retry: Option<&(String, String, String)>,
    batch_ids: &HashMap<String, (usize, String)>,
    retries: &HashMap<(String, String, String), usize>,
) -> rusqlite::Result<Action> {
    let mut stmt = tx.prepare_cached("SELECT hash, received_us, purged_us IS NOT NULL FROM messages WHERE id = ?1")?;
    for k in 0u32.. {
        let cand = if k == 0 { id.to_string() } else { crate::spool::fresh_id(id, received_us, hash, k) };
        if let Some((j, h)) = batch_ids.get(&cand) {
            if h == hash {
                return Ok(Action::SameAs(*j));
            }
            continue;
        }
        let row: Option<(String, i64, bool)> =
            stmt.query_row([&cand], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()?;
        match row {
            None => return Ok(Action::New(Some(cand))),
            Some((h, _, false)) if h == hash => return Ok(Action::Existing(cand)),
            Some((h, r, true)) if h == hash && r == received_us => return Ok(Action::Dropped),
            Some(_) if k == 0 => {
                if let Some(key) = retry {
                    if let Some(&j) = retries.get(key) {
                        return Ok(Action::SameAs(j));
                    }
                    if let Some(live) = hold::find_retry(tx, &key.0, &key.1, &key.2)? {
                        return Ok(Action::Existing(live));
                    }
                }
            }
            Some(_) => continue,
        }
    }
    unreachable!("the candidates never run out")
}

/// The `import` audit row of one transaction: what it committed plus what the staging threads found since the
/// previous row, so the rows of a run add up to its summary.
fn record_import(tx: &crate::db::Conn, info: &AuditInfo, counts: &BatchCounts) -> rusqlite::Result<()> {
    audit::record(
        tx,
        &AuditEntry {
            actor: info.actor,
            action: AuditAction::Import,
            selection: info.selection.clone(),
            counts: serde_json::json!({
                "imported": counts.imported,
                "duplicates": counts.duplicates + info.extra_duplicates,
                "recipients_added": counts.recipients_added,
                "skipped": info.extra_skipped,
                "bytes": counts.bytes,
            }),
            reason: info.reason,
        },
    )
}
