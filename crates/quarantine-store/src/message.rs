//! Reading messages back out of the index: the records `show`, `search` and `export` print.

use std::collections::HashMap;

use crate::db::Row;
use rusqlite::OptionalExtension;
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
    /// The scanner's version / signature-database version at hold time (e.g. clamd's `VERSION`).
    pub scanner_version: Option<String>,
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
    /// Held again after its release: the id of the released message whose trace header (with a valid MAC) this
    /// copy carried when the filter flagged it again.
    pub requarantined_from: Option<String>,
    /// The filter's action, score and symbols when it sent them (`serve`'s rspamd intake); `null` otherwise.
    pub scan: Option<crate::spool::ScanMeta>,
}

/// Records whose recipients and attachments are read together (one query each) by
/// [`Store::fill_details_many`]; well under SQLite's limit of 32,766 parameters.
pub const DETAIL_BATCH: usize = 256;

/// The recipients of `n` messages (bound as `?1` ... `?n`), in index order.
pub(crate) fn recipients_query(n: usize) -> String {
    format!(
        "SELECT message, rowid, address, state, attempts, released_us, reply, last_error FROM recipients
         WHERE message IN ({})",
        placeholders(n)
    )
}

/// `?1, ?2, ..., ?n`.
fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(n * 5);
    for i in 1..=n {
        if i > 1 {
            s.push_str(", ");
        }
        s.push('?');
        s.push_str(&i.to_string());
    }
    s
}

pub fn rfc3339_us(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.with_timezone(&chrono::Local).to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| us.to_string())
}

/// The columns `message_from_row` reads, over `messages m`.
pub(crate) const MESSAGE_COLUMNS: &str = "m.id, m.hash, m.size, m.received_us, m.env_from, m.verdict, m.scanner,
    m.reason, m.queue_id, m.hdr_from, m.hdr_to, m.hdr_cc, m.subject, m.message_id, m.hdr_date, m.parse_note,
    m.purged_us, m.purged_by, m.purge_reason, m.scanner_version, m.requarantined_from";

/// The column after [`MESSAGE_COLUMNS`] in `search`'s query: `m.attachment_names` (migration 0006).
pub(crate) const NAMES_AT: usize = 21;
/// Then `m.rowid`, the order of messages received in the same microsecond.
pub(crate) const ROWID_AT: usize = 22;
/// Driven by a recipient (`search::by_rcpt`), then `m.recipient_count` and the recipient's own columns, as
/// [`recipient_at`] reads them.
pub(crate) const COUNT_AT: usize = 23;
pub(crate) const RCPT_AT: usize = 24;
/// The columns [`recipient_at`] reads, over `recipients r`.
pub(crate) const RECIPIENT_COLUMNS: &str = "r.address, r.state, r.attempts, r.released_us, r.reply, r.last_error";

/// A recipient from the [`RECIPIENT_COLUMNS`] starting at column `at`.
pub(crate) fn recipient_at(r: &Row, at: usize) -> rusqlite::Result<Recipient> {
    Ok(Recipient {
        address: r.get(at)?,
        state: r.get(at + 1)?,
        attempts: r.get(at + 2)?,
        released_at: r.get::<_, Option<i64>>(at + 3)?.map(rfc3339_us),
        reply: r.get(at + 4)?,
        last_error: r.get(at + 5)?,
    })
}

/// The attachment names of a row read with [`NAMES_AT`]: a JSON array of strings, or NULL for none.
pub(crate) fn names_from_row(r: &Row) -> rusqlite::Result<Vec<String>> {
    match r.get_ref(NAMES_AT)?.as_str_or_null()? {
        None => Ok(Vec::new()),
        Some(json) => serde_json::from_str(json)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(NAMES_AT, rusqlite::types::Type::Text, Box::new(e))),
    }
}

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
        scanner_version: r.get(19)?,
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
        requarantined_from: r.get(20)?,
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
        self.fill_details_many(std::slice::from_mut(rec))
    }

    /// Adds recipients and attachment names to records read from the messages table: one recipients query and
    /// one attachments query per [`DETAIL_BATCH`] records, not two per record.
    ///
    /// # Performance
    /// Per-record queries cost more than their B-tree seeks: rusqlite's statement cache clears a statement's
    /// bindings when it is reused, and SQLite then re-prepares (parses and plans again) any statement whose plan
    /// looked at a bound value, which `message = ?1` does. That was ~110,000 instructions per record, most of a
    /// large `search --json`. A batch is prepared once and its rows are read in one pass.
    pub fn fill_details_many(&self, recs: &mut [MessageRecord]) -> Result<()> {
        for chunk in recs.chunks_mut(DETAIL_BATCH) {
            self.fill_chunk(chunk, true, &[])?;
        }
        Ok(())
    }

    /// [`Store::fill_details_many`] for records whose attachment names came with their row
    /// ([`names_from_row`]): recipients and filter findings only, and no recipients for a record whose `known` is
    /// true (its recipients came with its row too), unless the store has filter findings to add.
    pub(crate) fn fill_recipients_many(&self, recs: &mut [MessageRecord], known: &[bool]) -> Result<()> {
        for (i, chunk) in recs.chunks_mut(DETAIL_BATCH).enumerate() {
            let from = (i * DETAIL_BATCH).min(known.len());
            let to = (from + DETAIL_BATCH).min(known.len());
            self.fill_chunk(chunk, false, &known[from..to])?;
        }
        Ok(())
    }

    fn fill_chunk(&self, recs: &mut [MessageRecord], read_attachments: bool, known: &[bool]) -> Result<()> {
        if recs.is_empty() {
            return Ok(());
        }
        let e = self.sql_err();
        let has_scans = self.has_scans()?;
        let known = |i: usize| !has_scans && known.get(i).copied().unwrap_or(false);
        if (0..recs.len()).all(known) {
            return Ok(());
        }
        // Position of each record by id; ids are unique, but a record given twice gets its details once per copy.
        let mut at: HashMap<&str, Vec<usize>> = HashMap::with_capacity(recs.len());
        for (i, r) in recs.iter().enumerate() {
            if !known(i) {
                at.entry(r.id.as_str()).or_default().push(i);
            }
        }
        let mut ids: Vec<Option<&str>> = at.keys().copied().map(Some).collect();
        // Every full batch has the same SQL text, so each statement is prepared once per command (a list of 256
        // placeholders took ~600,000 instructions to prepare); a short batch is padded with NULL, which no
        // `message` equals.
        let width = if ids.len() <= DETAIL_BATCH { DETAIL_BATCH } else { ids.len() };
        ids.resize(width, None);
        let list = placeholders(width);
        // (rowid, value) per record: rowid order is envelope order, restored per record after reading the batch in
        // index order (a sort of the whole batch in SQL cost more than the few entries of each record here).
        let mut recipients: Vec<Vec<(i64, Recipient)>> = vec![Vec::new(); recs.len()];
        let mut attachments: Vec<Vec<(i64, String)>> = vec![Vec::new(); recs.len()];
        {
            // Answered from the covering index recipients_by_message (migration 0005): no table row is read.
            let mut stmt = self.conn.prepare_cached(&recipients_query(width)).map_err(&e)?;
            let mut rows = stmt.query(crate::db::params_from_iter(ids.iter())).map_err(&e)?;
            while let Some(r) = rows.next().map_err(&e)? {
                let message = r.get_ref(0).map_err(&e)?.as_str().map_err(|x| e(x.into()))?;
                let Some(is) = at.get(message) else { continue };
                let rowid: i64 = r.get(1).map_err(&e)?;
                push_each(&mut recipients, is, rowid, recipient_at(&r, 2).map_err(&e)?);
            }
        }
        if read_attachments {
            let mut stmt = self
                .conn
                .prepare_cached(&format!("SELECT message, rowid, name FROM attachments WHERE message IN ({list})"))
                .map_err(&e)?;
            let mut rows = stmt.query(crate::db::params_from_iter(ids.iter())).map_err(&e)?;
            while let Some(r) = rows.next().map_err(&e)? {
                let message = r.get_ref(0).map_err(&e)?.as_str().map_err(|x| e(x.into()))?;
                let Some(is) = at.get(message) else { continue };
                let rowid: i64 = r.get(1).map_err(&e)?;
                push_each(&mut attachments, is, rowid, r.get(2).map_err(&e)?);
            }
        }
        let mut scans: Vec<Option<crate::spool::ScanMeta>> = vec![None; recs.len()];
        if has_scans {
            // The filter's action, score and symbols (serve's rspamd intake): rare, so one query for the batch.
            let mut stmt = self
                .conn
                .prepare_cached(&format!(
                    "SELECT message, action, score, symbols FROM message_scan WHERE message IN ({list})"
                ))
                .map_err(&e)?;
            let mut rows = stmt.query(crate::db::params_from_iter(ids.iter())).map_err(&e)?;
            while let Some(r) = rows.next().map_err(&e)? {
                let symbols: Option<String> = r.get(3).map_err(&e)?;
                let scan = crate::spool::ScanMeta {
                    action: r.get(1).map_err(&e)?,
                    score: r.get(2).map_err(&e)?,
                    symbols: symbols.and_then(|s| serde_json::from_str(&s).ok()),
                };
                let message = r.get_ref(0).map_err(&e)?.as_str().map_err(|x| e(x.into()))?;
                if let Some(is) = at.get(message) {
                    for &i in is {
                        scans[i] = Some(scan.clone());
                    }
                }
            }
        }
        for (i, (((rec, rcpts), names), scan)) in
            recs.iter_mut().zip(recipients).zip(attachments).zip(scans).enumerate()
        {
            if known(i) {
                continue;
            }
            rec.recipients = in_rowid_order(rcpts);
            if read_attachments {
                rec.attachments = in_rowid_order(names);
            }
            rec.scan = scan;
            if rec.purged_at.is_none() {
                rec.state = summarise_states(&rec.recipients);
            }
        }
        Ok(())
    }

    /// Whether any message has the filter's findings (`message_scan`): most stores have none (only `serve`'s rspamd
    /// intake writes them), and then a batch needs no third query.
    fn has_scans(&self) -> Result<bool> {
        let e = self.sql_err();
        self.conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM message_scan)")
            .map_err(&e)?
            .query_row([], |r| r.get(0))
            .map_err(&e)
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

/// Adds `value` (with its rowid) to the lists of every position in `at`: a record given twice gets its own copy.
fn push_each<T: Clone>(lists: &mut [Vec<(i64, T)>], at: &[usize], rowid: i64, value: T) {
    if let Some((&last, rest)) = at.split_last() {
        for &i in rest {
            lists[i].push((rowid, value.clone()));
        }
        lists[last].push((rowid, value));
    }
}

fn in_rowid_order<T>(mut list: Vec<(i64, T)>) -> Vec<T> {
    list.sort_unstable_by_key(|&(rowid, _)| rowid);
    list.into_iter().map(|(_, v)| v).collect()
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

    /// Details are read a batch at a time: each record gets its own recipients (in envelope order, with their
    /// states) and attachments, across batch boundaries, when messages share recipients, and for a record given
    /// twice.
    #[test]
    fn batched_details_belong_to_their_messages() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::init(&dir.path().join("q")).unwrap();
        let n = DETAIL_BATCH * 2 + 7;
        let rcpts = |i: usize| -> Vec<String> {
            // Not in address order, and shared between messages.
            let mut v = vec![format!("z{}@x", i % 7), "shared@x".to_string()];
            if i.is_multiple_of(3) {
                v.push(format!("a{}@x", i % 5));
            }
            v
        };
        let names = |i: usize| -> Vec<String> {
            if i.is_multiple_of(4) {
                vec![format!("z{i}.pdf"), format!("a{i}.exe")]
            } else {
                Vec::new()
            }
        };
        {
            let tx = store.conn.begin(crate::db::TransactionBehavior::Deferred).unwrap();
            // Inserted newest first, so rowids do not follow the order records are read in.
            for i in (0..n).rev() {
                let id = format!("M{i:09}");
                tx.execute(
                    "INSERT INTO messages (id, hash, size, received_us, env_from, env_from_lc, verdict)
                     VALUES (?1, 'h', 1, ?2, '', '', 'SPAM')",
                    rusqlite::params![id, i as i64],
                )
                .unwrap();
                for (k, a) in rcpts(i).iter().enumerate() {
                    let state = if i % 2 == 1 && k == 0 { "released" } else { "held" };
                    tx.execute(
                        "INSERT INTO recipients (message, address, address_lc, state) VALUES (?1, ?2, ?2, ?3)",
                        rusqlite::params![id, a, state],
                    )
                    .unwrap();
                }
                for name in names(i) {
                    tx.execute("INSERT INTO attachments (message, name) VALUES (?1, ?2)", [&id, &name]).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        let all = store.select(&crate::Selector::default(), None).unwrap();
        assert_eq!(all.len(), n);
        for rec in &all {
            let i: usize = rec.id[1..].parse().unwrap();
            let got: Vec<&str> = rec.recipients.iter().map(|r| r.address.as_str()).collect();
            assert_eq!(got, rcpts(i), "{}", rec.id);
            assert_eq!(rec.recipients[0].state.as_str(), if i % 2 == 1 { "released" } else { "held" });
            assert!(rec.recipients[1..].iter().all(|r| r.state.as_str() == "held"));
            assert_eq!(rec.state, if i % 2 == 1 { "mixed" } else { "held" }, "{}", rec.id);
            assert_eq!(rec.attachments, names(i), "{}", rec.id);
        }
        // One at a time (show) agrees with the batches; a record given twice is filled twice.
        let mut twice = vec![all[3].clone(), all[3].clone()];
        for r in &mut twice {
            r.recipients.clear();
            r.attachments.clear();
        }
        store.fill_details_many(&mut twice).unwrap();
        assert_eq!(twice, vec![all[3].clone(), all[3].clone()]);
        assert_eq!(store.message(&all[5].id).unwrap(), all[5]);
    }

    #[test]
    fn header_block_ends_at_first_blank_line() {
        assert_eq!(header_block(b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\n"), b"A: 1\r\nB: 2\r\n\r\n");
        assert_eq!(header_block(b"A: 1\nB: 2\n\nbody"), b"A: 1\nB: 2\n\n");
        assert_eq!(header_block(b"no blank line"), b"no blank line");
        assert_eq!(header_block(b"\nbody"), b"\n");
    }
}
