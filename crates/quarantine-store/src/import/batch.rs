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

use rusqlite::TransactionBehavior;

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
}

/// What one committed batch did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BatchCounts {
    pub(crate) imported: u64,
    pub(crate) duplicates: u64,
    pub(crate) recipients_added: u64,
    pub(crate) bytes: u64,
}

/// The synthetic MTA queue id of an imported message: the same bytes with the same sender are the same
/// message, whichever file or run they come from, so a re-run (or a run resumed after a kill) finds them.
pub(crate) fn queue_id(hash: &str) -> String {
    format!("import:{hash}")
}

enum Action {
    New,
    /// Already held (committed earlier): the id.
    Existing(String),
    /// Same bytes and sender as message `j` of this batch.
    SameAs(usize),
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
        let e = crate::index::sql_err(&self.index_path);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;

        let mut actions = Vec::with_capacity(items.len());
        let mut first_of: HashMap<(String, String), usize> = HashMap::new();
        let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
        let mut metas = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let Ready { staged, env, fields, reason, received_us } = item;
            let (hash, size) = (staged.hash.clone(), staged.size);
            let key = (hash.clone(), env.from.clone());
            let action = if let Some(&j) = first_of.get(&key) {
                Action::SameAs(j)
            } else if let Some(id) = hold::find_retry(&tx, &queue_id(&hash), &hash, &env.from).map_err(&e)? {
                Action::Existing(id)
            } else {
                first_of.insert(key, i);
                dirs.insert(self.blobs.publish_deferred(staged)?);
                Action::New
            };
            actions.push(action);
            metas.push((hash, size, env, fields, reason, received_us));
        }
        durable::fsync_dirs_parallel(&dirs)?;

        let mut counts = BatchCounts::default();
        let mut ids: Vec<Option<String>> = vec![None; metas.len()];
        for (i, (action, (hash, size, env, fields, reason, received_us))) in actions.iter().zip(&metas).enumerate() {
            match action {
                Action::New => {
                    tx.execute("DELETE FROM gc_queue WHERE hash = ?1", [hash]).map_err(&e)?;
                    let req = HoldRequest {
                        verdict: verdict.to_string(),
                        scanner: scanner.map(str::to_string),
                        reason: reason.clone(),
                        queue_id: Some(queue_id(hash)),
                        ..Default::default()
                    };
                    let new = NewMessage { req: &req, env, hash, size: *size, fields, received_us: *received_us };
                    ids[i] = Some(hold::insert_message(&tx, &new).map_err(&e)?);
                    counts.imported += 1;
                    counts.bytes += size;
                }
                Action::Existing(id) => {
                    counts.recipients_added += hold::insert_recipients(&tx, id, &env.recipients).map_err(&e)?;
                    counts.duplicates += 1;
                }
                Action::SameAs(j) => {
                    let id = ids[*j].clone().expect("the first of a kind is inserted before its duplicates");
                    counts.recipients_added += hold::insert_recipients(&tx, &id, &env.recipients).map_err(&e)?;
                    counts.duplicates += 1;
                }
            }
        }
        record_import(&tx, info, &counts).map_err(&e)?;
        tx.commit().map_err(&e)?;
        Ok(counts)
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

/// The `import` audit row of one transaction: what it committed plus what the staging threads found since the
/// previous row, so the rows of a run add up to its summary.
fn record_import(tx: &rusqlite::Transaction, info: &AuditInfo, counts: &BatchCounts) -> rusqlite::Result<()> {
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
