//! The durable hold (DESIGN section 4). The write order is the product:
//!
//! 1. stream the message to EOF into `tmp/` (BLAKE3 + zstd as bytes arrive), fsync;
//! 2. parse headers, best effort;
//! 3. `BEGIN IMMEDIATE`: rename the blob into place (or drop the temp file if the blob exists), fsync its
//!    directory, insert the rows, take the hash off the GC queue, commit with `synchronous=FULL`;
//! 4. only then return the id for the caller to acknowledge.
//!
//! A crash before step 3 commits leaves at most a temp file or an orphan blob, which verify reports and purge
//! sweeps after a grace period. A row without its blob cannot happen: the rename and directory fsync come first.

use std::io::Read;

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use crate::address;
use crate::error::{Error, Result};
use crate::headers::{self, HeaderFields};
use crate::ids;
use crate::store::{now_us, Store};

/// What the MTA or filter tells us about one message.
#[derive(Clone, Debug, Default)]
pub struct HoldRequest {
    /// Envelope sender; `""` or `"<>"` for the null sender.
    pub from: String,
    pub recipients: Vec<String>,
    pub verdict: String,
    pub scanner: Option<String>,
    pub reason: Option<String>,
    pub queue_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldOutcome {
    pub id: String,
    pub hash: String,
    pub size: u64,
    /// True when this was a retry of an already committed hold (same queue id, sender and bytes).
    pub duplicate: bool,
}

/// A validated request: addresses normalised, recipients deduplicated case-insensitively in order.
struct Envelope {
    from: String,
    recipients: Vec<String>,
}

fn validate(req: &HoldRequest) -> Result<Envelope> {
    if req.verdict.trim().is_empty() {
        return Err(Error::Invalid("the verdict cannot be empty".into()));
    }
    let from = address::envelope_sender(&req.from)?;
    let mut recipients: Vec<String> = Vec::new();
    for r in &req.recipients {
        let r = address::envelope_recipient(r)?;
        if !recipients.iter().any(|x| address::fold(x) == address::fold(&r)) {
            recipients.push(r);
        }
    }
    if recipients.is_empty() {
        return Err(Error::Invalid("no envelope recipient given (--rcpt or after --)".into()));
    }
    Ok(Envelope { from, recipients })
}

impl Store {
    /// Holds one message read from `input` to EOF. Returns only once the blob and its rows are durable.
    pub fn hold(&mut self, req: &HoldRequest, input: &mut dyn Read) -> Result<HoldOutcome> {
        let env = validate(req)?;
        let staged = self.blobs.stage(input, headers::FULL_PARSE_LIMIT)?;
        let fields = headers::extract(&staged.prefix, staged.size);
        let (hash, size) = (staged.hash.clone(), staged.size);

        let e = crate::index::sql_err(&self.index_path);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
        if let Some(q) = &req.queue_id {
            let existing: Option<String> = tx
                .query_row(
                    "SELECT id FROM messages WHERE queue_id = ?1 AND hash = ?2 AND env_from = ?3
                       AND purged_us IS NULL LIMIT 1",
                    params![q, hash, env.from],
                    |r| r.get(0),
                )
                .optional()
                .map_err(&e)?;
            if let Some(id) = existing {
                // A retry of a committed hold. Postfix may also split one queue file's recipients over several
                // pipe deliveries; any recipient not yet recorded joins the existing message.
                insert_recipients(&tx, &id, &env.recipients).map_err(&e)?;
                tx.commit().map_err(&e)?;
                return Ok(HoldOutcome { id, hash, size, duplicate: true });
            }
        }
        self.blobs.publish(staged)?;
        tx.execute("DELETE FROM gc_queue WHERE hash = ?1", [&hash]).map_err(&e)?;
        let id = insert_message(&tx, req, &env, &hash, size, &fields).map_err(&e)?;
        tx.commit().map_err(&e)?;
        Ok(HoldOutcome { id, hash, size, duplicate: false })
    }
}

fn insert_message(
    tx: &rusqlite::Transaction,
    req: &HoldRequest,
    env: &Envelope,
    hash: &str,
    size: u64,
    f: &HeaderFields,
) -> rusqlite::Result<String> {
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO messages (id, hash, size, received_us, env_from, env_from_lc, verdict, scanner,
             reason, queue_id, hdr_from, hdr_to, hdr_cc, subject, message_id, hdr_date, parse_note)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )?;
    let id = loop {
        let id = ids::new_id();
        let n = stmt.execute(params![
            id,
            hash,
            size as i64,
            now_us(),
            env.from,
            address::fold(&env.from),
            req.verdict.trim(),
            req.scanner,
            req.reason,
            req.queue_id,
            f.from,
            f.to,
            f.cc,
            f.subject,
            f.message_id,
            f.date,
            f.note,
        ])?;
        if n == 1 {
            break id; // else a 50-bit id collided; draw again
        }
    };
    insert_recipients(tx, &id, &env.recipients)?;
    let mut att = tx.prepare_cached("INSERT INTO attachments (message, name) VALUES (?1, ?2)")?;
    for name in &f.attachments {
        att.execute(params![id, name])?;
    }
    Ok(id)
}

fn insert_recipients(tx: &rusqlite::Transaction, id: &str, recipients: &[String]) -> rusqlite::Result<()> {
    let mut stmt =
        tx.prepare_cached("INSERT OR IGNORE INTO recipients (message, address, address_lc) VALUES (?1, ?2, ?3)")?;
    for r in recipients {
        stmt.execute(params![id, r, address::fold(r)])?;
    }
    Ok(())
}
