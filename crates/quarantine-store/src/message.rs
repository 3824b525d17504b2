//! Reading messages back out of the index: the records `show`, `search` and `export` print.

use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::ids;
use crate::state::RecipientState;
use crate::store::Store;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Recipient {
    pub address: String,
    pub state: RecipientState,
    pub attempts: i64,
    pub released_at: Option<String>,
    pub reply: Option<String>,
    pub last_error: Option<String>,
}

/// Everything the index knows about one message. Field names are part of the `--json` contract.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MessageRecord {
    pub id: String,
    pub received: String,
    #[serde(skip)]
    pub received_us: i64,
    pub hash: String,
    pub size: u64,
    /// Envelope sender; empty for the null sender `<>`.
    pub from: String,
    pub recipients: Vec<Recipient>,
    pub verdict: String,
    pub scanner: Option<String>,
    pub reason: Option<String>,
    pub queue_id: Option<String>,
    pub header_from: Option<String>,
    pub header_to: Option<String>,
    pub header_cc: Option<String>,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    pub date: Option<String>,
    pub attachments: Vec<String>,
    pub parse_note: Option<String>,
    /// The message-level state: `purged` for a tombstone, else a summary of the recipients' states.
    pub state: String,
    pub purged_at: Option<String>,
    pub purged_by: Option<String>,
    pub purge_reason: Option<String>,
    /// The filter's action, score and symbols when it sent them (`serve`'s rspamd intake); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scan: Option<crate::spool::ScanMeta>,
}

pub fn rfc3339_us(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.with_timezone(&chrono::Local).to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| us.to_string())
}

/// The columns `message_from_row` reads, over `messages m`.
pub(crate) const MESSAGE_COLUMNS: &str = "m.id, m.hash, m.size, m.received_us, m.env_from, m.verdict, m.scanner,
    m.reason, m.queue_id, m.hdr_from, m.hdr_to, m.hdr_cc, m.subject, m.message_id, m.hdr_date, m.parse_note,
    m.purged_us, m.purged_by, m.purge_reason";

pub(crate) fn message_from_row(r: &Row) -> rusqlite::Result<MessageRecord> {
    let received_us: i64 = r.get(3)?;
    let purged_us: Option<i64> = r.get(16)?;
    Ok(MessageRecord {
        id: r.get(0)?,
        hash: r.get(1)?,
        size: r.get::<_, i64>(2)? as u64,
        received_us,
        received: rfc3339_us(received_us),
        from: r.get(4)?,
        recipients: Vec::new(),
        verdict: r.get(5)?,
        scanner: r.get(6)?,
        reason: r.get(7)?,
        queue_id: r.get(8)?,
        header_from: r.get(9)?,
        header_to: r.get(10)?,
        header_cc: r.get(11)?,
        subject: r.get(12)?,
        message_id: r.get(13)?,
        date: r.get(14)?,
        attachments: Vec::new(),
        parse_note: r.get(15)?,
        state: if purged_us.is_some() { "purged".into() } else { String::new() },
        purged_at: purged_us.map(rfc3339_us),
        purged_by: r.get(17)?,
        purge_reason: r.get(18)?,
        scan: None,
    })
}

/// The message-level state shown in lists: one recipient state if they all agree, else `mixed`.
pub fn summarise_states(recipients: &[Recipient]) -> String {
    match recipients.first() {
        None => "held".into(),
        Some(first) if recipients.iter().all(|r| r.state == first.state) => first.state.to_string(),
        Some(_) => "mixed".into(),
    }
}

impl Store {
    /// Looks up one message by id (case-insensitive, Crockford look-alikes accepted).
    pub fn message(&self, typed: &str) -> Result<MessageRecord> {
        let id = ids::normalise(typed);
        let e = self.sql_err();
        let rec = self
            .conn
            .prepare_cached(&format!("SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id = ?1"))
            .map_err(&e)?
            .query_row([&id], message_from_row)
            .optional()
            .map_err(&e)?;
        // The error echoes the id as typed (escaped), not our normalised form of it.
        let mut rec = rec.ok_or_else(|| Error::NoSuchMessage(ids::printable(typed)))?;
        self.fill_details(&mut rec)?;
        Ok(rec)
    }

    /// The ids of `typed` (as given, in order) that name no message at all, live or purged.
    pub fn unknown_ids(&self, typed: &[String]) -> Result<Vec<String>> {
        let e = self.sql_err();
        let mut stmt = self.conn.prepare_cached("SELECT 1 FROM messages WHERE id = ?1").map_err(&e)?;
        let mut unknown = Vec::new();
        for t in typed {
            if !stmt.exists([ids::normalise(t)]).map_err(&e)? {
                unknown.push(t.clone());
            }
        }
        Ok(unknown)
    }

    /// Adds recipients and attachment names to a record read from the messages table.
    pub fn fill_details(&self, rec: &mut MessageRecord) -> Result<()> {
        let e = self.sql_err();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT address, state, attempts, released_us, reply, last_error FROM recipients
                 WHERE message = ?1 ORDER BY rowid",
            )
            .map_err(&e)?;
        rec.recipients = stmt
            .query_map(params![rec.id], |r| {
                Ok(Recipient {
                    address: r.get(0)?,
                    state: r.get(1)?,
                    attempts: r.get(2)?,
                    released_at: r.get::<_, Option<i64>>(3)?.map(rfc3339_us),
                    reply: r.get(4)?,
                    last_error: r.get(5)?,
                })
            })
            .map_err(&e)?
            .collect::<rusqlite::Result<_>>()
            .map_err(&e)?;
        rec.attachments = self
            .conn
            .prepare_cached("SELECT name FROM attachments WHERE message = ?1 ORDER BY rowid")
            .map_err(&e)?
            .query_map(params![rec.id], |r| r.get(0))
            .map_err(&e)?
            .collect::<rusqlite::Result<_>>()
            .map_err(&e)?;
        if rec.purged_at.is_none() {
            rec.state = summarise_states(&rec.recipients);
        }
        rec.scan = self
            .conn
            .prepare_cached("SELECT action, score, symbols FROM message_scan WHERE message = ?1")
            .map_err(&e)?
            .query_row(params![rec.id], |r| {
                let symbols: Option<String> = r.get(2)?;
                Ok(crate::spool::ScanMeta {
                    action: r.get(0)?,
                    score: r.get(1)?,
                    symbols: symbols.and_then(|s| serde_json::from_str(&s).ok()),
                })
            })
            .optional()
            .map_err(&e)?;
        Ok(())
    }

    /// The original bytes of a live message, checked against the blob's hash.
    pub fn original(&self, rec: &MessageRecord) -> Result<Vec<u8>> {
        if rec.purged_at.is_some() {
            return Err(Error::Invalid(format!(
                "message {} was purged{}; its original is gone",
                rec.id,
                rec.purged_at.as_deref().map(|t| format!(" at {t}")).unwrap_or_default()
            )));
        }
        self.blobs.read_verified(checked_hash(&rec.hash)?)
    }
}

/// `hash` if it is a well-formed blob name (64 lowercase hex digits), else the error every reader reports: a row
/// whose hash was edited or damaged names no blob, and must never be turned into a path (`../..`) or sliced.
pub(crate) fn checked_hash(hash: &str) -> Result<&str> {
    if crate::blob::is_hash(hash) {
        Ok(hash)
    } else {
        Err(Error::CorruptBlob {
            hash: format!("{hash:?}"),
            detail: "malformed hash in the index (not 64 lowercase hex digits); its blob cannot be found".into(),
        })
    }
}

/// The header block of a message: everything up to and including the first empty line (or all of it, if there
/// is none).
pub fn header_block(raw: &[u8]) -> &[u8] {
    let mut i = 0;
    while i < raw.len() {
        let line_end = raw[i..].iter().position(|&b| b == b'\n').map(|p| i + p + 1).unwrap_or(raw.len());
        let line = &raw[i..line_end];
        if line == b"\n" || line == b"\r\n" {
            return &raw[..line_end];
        }
        i = line_end;
    }
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_block_ends_at_first_blank_line() {
        assert_eq!(header_block(b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\n"), b"A: 1\r\nB: 2\r\n\r\n");
        assert_eq!(header_block(b"A: 1\nB: 2\n\nbody"), b"A: 1\nB: 2\n\n");
        assert_eq!(header_block(b"no blank line"), b"no blank line");
        assert_eq!(header_block(b"\nbody"), b"\n");
    }
}
