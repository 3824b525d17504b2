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

use crate::error::{Error, Result};
use crate::ids;
use crate::store::{now_us, Store};
use quarantine_mail::address;
use quarantine_mail::headers::{self, HeaderFields};

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Envelope {
    pub(crate) from: String,
    pub(crate) recipients: Vec<String>,
}

pub(crate) fn validate(req: &HoldRequest) -> Result<Envelope> {
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

/// The live message a retried delivery refers to: same MTA queue id, same bytes, same envelope sender.
pub(crate) fn find_retry(
    conn: &rusqlite::Connection,
    queue_id: &str,
    hash: &str,
    from: &str,
) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "SELECT id FROM messages WHERE queue_id = ?1 AND hash = ?2 AND env_from = ?3
           AND purged_us IS NULL LIMIT 1",
    )?
    .query_row(params![queue_id, hash, from], |r| r.get(0))
    .optional()
}

/// Everything one new `messages` row needs besides the request.
pub(crate) struct NewMessage<'a> {
    pub(crate) req: &'a HoldRequest,
    pub(crate) env: &'a Envelope,
    pub(crate) hash: &'a str,
    pub(crate) size: u64,
    pub(crate) fields: &'a HeaderFields,
    pub(crate) received_us: i64,
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
            if let Some(id) = find_retry(&tx, q, &hash, &env.from).map_err(&e)? {
                // A retry of a committed hold. Postfix may also split one queue file's recipients over several
                // pipe deliveries; any recipient not yet recorded joins the existing message.
                insert_recipients(&tx, &id, &env.recipients).map_err(&e)?;
                tx.commit().map_err(&e)?;
                return Ok(HoldOutcome { id, hash, size, duplicate: true });
            }
        }
        self.blobs.publish(staged)?;
        tx.execute("DELETE FROM gc_queue WHERE hash = ?1", [&hash]).map_err(&e)?;
        let new = NewMessage { req, env: &env, hash: &hash, size, fields: &fields, received_us: now_us() };
        let id = insert_message(&tx, &new).map_err(&e)?;
        tx.commit().map_err(&e)?;
        Ok(HoldOutcome { id, hash, size, duplicate: false })
    }
}

/// Inserts the message, recipient and attachment rows; returns the new id.
pub(crate) fn insert_message(tx: &rusqlite::Connection, m: &NewMessage) -> rusqlite::Result<String> {
    let NewMessage { req, env, hash, size, fields: f, received_us } = *m;
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
            received_us,
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

/// Adds the recipients `id` does not have yet; returns how many were new.
pub(crate) fn insert_recipients(tx: &rusqlite::Connection, id: &str, recipients: &[String]) -> rusqlite::Result<u64> {
    let mut stmt =
        tx.prepare_cached("INSERT OR IGNORE INTO recipients (message, address, address_lc) VALUES (?1, ?2, ?3)")?;
    let mut added = 0;
    for r in recipients {
        added += stmt.execute(params![id, r, address::fold(r)])? as u64;
    }
    Ok(added)
}
