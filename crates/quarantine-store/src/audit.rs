//! The append-only audit trail: every import, release, purge and export writes one row in the same transaction
//! as the change it records, so the log can never claim work that was rolled back or miss work that committed.
//!
//! # The hash chain
//! Each row carries `prev_hash` (the `hash` of the row before it; for the first row, the store's genesis value,
//! settings `audit_genesis`, made at `init` or by the upgrade to schema 3) and its own `hash`: BLAKE3 (derive-key
//! mode, context [`HASH_CONTEXT`]) over a canonical encoding of `seq`, `at_us`, actor, action, selection, counts,
//! reason and `prev_hash` (see [`row_hash`]). [`Store::verify_audit`] recomputes it: an edited row no longer
//! matches its hash, a removed or inserted row breaks the next row's `prev_hash`, a removed head breaks the link
//! to the genesis value.
//!
//! What a chain alone cannot show: a cut *tail* (the last rows deleted) leaves a shorter chain that is intact, and
//! someone who can write the index can recompute every hash after an edit. Both need an **anchor**: the head hash
//! ([`Store::audit_head`], `log --head`) exported earlier to somewhere the store's writer cannot reach (a ticket,
//! syslog on another host, the backup). `log --verify --from-anchor HASH` then also proves that row is still in
//! the trail, unchanged, with every row before it.

use crate::db::Conn;
use crate::state::AuditAction;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::store::now_us;

/// Who is acting: `--actor`, else `$SUDO_USER` (the admin behind sudo), else `$USER`, else the uid.
pub fn actor(flag: Option<&str>) -> String {
    flag.map(str::to_string)
        .or_else(|| std::env::var("SUDO_USER").ok().filter(|s| !s.is_empty()))
        .or_else(|| std::env::var("USER").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata("/proc/self").map(|m| format!("uid {}", m.uid())).unwrap_or_else(|_| "unknown".into())
        })
}

/// One audit row to write.
pub struct AuditEntry<'a> {
    pub actor: &'a str,
    pub action: AuditAction,
    /// The selection as given (flags, ids), JSON.
    pub selection: serde_json::Value,
    /// Counts of what was done, JSON object.
    pub counts: serde_json::Value,
    pub reason: Option<&'a str>,
}

/// The BLAKE3 derive-key context of audit row hashes (never change it: every stored chain depends on it).
pub const HASH_CONTEXT: &str = "quarantine 2026-05 audit row v1";

/// The settings key holding the chain's genesis value (64 hex digits).
const GENESIS_KEY: &str = "audit_genesis";

/// The fields of one audit row that its hash covers, as stored.
pub(crate) struct Hashed<'a> {
    pub seq: i64,
    pub at_us: i64,
    pub actor: &'a str,
    pub action: &'a str,
    pub selection: &'a str,
    pub counts: &'a str,
    pub reason: Option<&'a str>,
}

/// BLAKE3 (derive-key [`HASH_CONTEXT`]) over `prev_hash` and the row: integers as 8 bytes little-endian, text as
/// its length (8 bytes LE) and its UTF-8 bytes, the optional reason with a 0/1 presence byte first. Lengths make
/// the encoding unambiguous: no two different rows encode alike. Lowercase hex.
pub(crate) fn row_hash(prev_hash: &str, row: &Hashed) -> String {
    let mut h = blake3::Hasher::new_derive_key(HASH_CONTEXT);
    let text = |h: &mut blake3::Hasher, s: &str| {
        h.update(&(s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    text(&mut h, prev_hash);
    h.update(&row.seq.to_le_bytes());
    h.update(&row.at_us.to_le_bytes());
    for s in [row.actor, row.action, row.selection, row.counts] {
        text(&mut h, s);
    }
    match row.reason {
        None => {
            h.update(&[0]);
        }
        Some(r) => {
            h.update(&[1]);
            text(&mut h, r);
        }
    }
    h.finalize().to_hex().to_string()
}

/// The store's genesis value, created (random) if missing. Inside a write transaction.
pub(crate) fn genesis_or_create(conn: &Conn) -> rusqlite::Result<String> {
    if let Some(g) = genesis(conn)? {
        return Ok(g);
    }
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut seed);
    let mut h = blake3::Hasher::new_derive_key("quarantine 2026-05 audit genesis");
    h.update(&seed);
    h.update(&now_us().to_le_bytes());
    let g = h.finalize().to_hex().to_string();
    conn.execute("INSERT INTO settings (key, value) VALUES (?1, ?2)", params![GENESIS_KEY, g])?;
    Ok(g)
}

fn genesis(conn: &Conn) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT value FROM settings WHERE key = ?1")?.query_row([GENESIS_KEY], |r| r.get(0)).optional()
}

/// Writes `entry` on `conn`, which must be inside the (write) transaction making the change: the row gets the
/// next `seq`, the previous row's hash and its own.
pub fn record(conn: &Conn, entry: &AuditEntry) -> rusqlite::Result<()> {
    let last: Option<(i64, Option<String>)> = conn
        .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (seq, prev) = match last {
        Some((seq, hash)) => (seq + 1, hash.unwrap_or_default()),
        None => (1, genesis_or_create(conn)?),
    };
    let (selection, counts) = (entry.selection.to_string(), entry.counts.to_string());
    let row = Hashed {
        seq,
        at_us: now_us(),
        actor: entry.actor,
        action: entry.action.as_str(),
        selection: &selection,
        counts: &counts,
        reason: entry.reason,
    };
    let hash = row_hash(&prev, &row);
    conn.prepare_cached(
        "INSERT INTO audit (seq, at_us, actor, action, selection, counts, reason, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        row.seq,
        row.at_us,
        row.actor,
        row.action,
        row.selection,
        row.counts,
        row.reason,
        prev,
        hash
    ])?;
    Ok(())
}

/// The upgrade to schema 3: chains the rows written before it (in `seq` order, from a new genesis value), inside
/// the migration's transaction.
pub(crate) fn chain_existing(conn: &Conn) -> rusqlite::Result<()> {
    let mut prev = genesis_or_create(conn)?;
    type Old = (i64, i64, String, String, String, String, Option<String>, Option<String>);
    let rows: Vec<Old> = conn
        .prepare("SELECT seq, at_us, actor, action, selection, counts, reason, hash FROM audit ORDER BY seq")?
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut update = conn.prepare("UPDATE audit SET prev_hash = ?2, hash = ?3 WHERE seq = ?1")?;
    for (seq, at_us, actor, action, selection, counts, reason, hash) in rows {
        let hash = match hash {
            Some(h) => h,
            None => {
                let row = Hashed {
                    seq,
                    at_us,
                    actor: &actor,
                    action: &action,
                    selection: &selection,
                    counts: &counts,
                    reason: reason.as_deref(),
                };
                let h = row_hash(&prev, &row);
                update.execute(params![seq, prev, h])?;
                h
            }
        };
        prev = hash;
    }
    Ok(())
}

/// What `log --verify` found.
#[derive(Clone, Debug, Serialize)]
pub struct ChainReport {
    /// Rows checked.
    pub rows: u64,
    /// The last row's seq and hash: the value to export as the next anchor.
    pub head: Option<Head>,
    /// The anchor given, and the row that carries it (null when it is not in the trail).
    pub anchor: Option<String>,
    pub anchor_seq: Option<i64>,
    /// The first problem, if any: the chain is trustworthy only up to the row before it.
    pub problem: Option<ChainProblem>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChainProblem {
    /// The first bad row (null for a problem of the trail as a whole: no genesis, anchor not found).
    pub seq: Option<i64>,
    pub detail: String,
}

impl ChainReport {
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct AuditRow {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub selection: serde_json::Value,
    pub counts: serde_json::Value,
    pub reason: Option<String>,
    /// The previous row's hash (the genesis value for the first row).
    pub prev_hash: Option<String>,
    /// This row's hash (see the module docs).
    pub hash: Option<String>,
}

impl crate::store::Store {
    /// Audit rows at or after `since_us`, oldest first.
    pub fn audit_log(&self, since_us: Option<i64>) -> crate::Result<Vec<AuditRow>> {
        let e = self.sql_err();
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, at_us, actor, action, selection, counts, reason, prev_hash, hash FROM audit
                 WHERE at_us >= ?1 ORDER BY seq",
            )
            .map_err(&e)?;
        let rows = stmt
            .query_map([since_us.unwrap_or(i64::MIN)], |r| {
                let sel: String = r.get(4)?;
                let counts: String = r.get(5)?;
                Ok(AuditRow {
                    seq: r.get(0)?,
                    at: crate::message::rfc3339_us(r.get(1)?),
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    selection: serde_json::from_str(&sel).unwrap_or(serde_json::Value::String(sel)),
                    counts: serde_json::from_str(&counts).unwrap_or(serde_json::Value::String(counts)),
                    reason: r.get(6)?,
                    prev_hash: r.get(7)?,
                    hash: r.get(8)?,
                })
            })
            .map_err(&e)?
            .collect::<rusqlite::Result<_>>()
            .map_err(&e)?;
        Ok(rows)
    }

    /// The last audit row's seq and hash (`log --head`): export it, and later `verify_audit(Some(hash))` proves
    /// the trail still holds that row and everything before it.
    pub fn audit_head(&self) -> crate::Result<Option<Head>> {
        self.conn
            .query_row("SELECT seq, coalesce(hash, '') FROM audit ORDER BY seq DESC LIMIT 1", [], |r| {
                Ok(Head { seq: r.get(0)?, hash: r.get(1)? })
            })
            .optional()
            .map_err(self.sql_err())
    }

    /// Recomputes the audit chain from the genesis value; with `anchor`, also requires a row with that hash.
    /// Reports the first bad row (and stops there: nothing after it can be trusted).
    pub fn verify_audit(&self, anchor: Option<&str>) -> crate::Result<ChainReport> {
        let e = self.sql_err();
        let anchor = anchor.map(|a| a.trim().to_ascii_lowercase());
        let mut report = ChainReport { rows: 0, head: None, anchor: anchor.clone(), anchor_seq: None, problem: None };
        let Some(genesis) = genesis(&self.conn).map_err(&e)? else {
            report.problem = Some(ChainProblem {
                seq: None,
                detail: "the store has no audit genesis value (settings 'audit_genesis' was removed)".into(),
            });
            return Ok(report);
        };
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, at_us, actor, action, selection, counts, reason, prev_hash, hash FROM audit ORDER BY seq",
            )
            .map_err(&e)?;
        let mut rows = stmt.query([]).map_err(&e)?;
        let mut expected_prev = genesis;
        let mut prev_seq: Option<i64> = None;
        while let Some(r) = rows.next().map_err(&e)? {
            let seq: i64 = r.get(0).map_err(&e)?;
            let get_text = |i: usize| -> crate::Result<String> {
                // A row someone wrote with the wrong types is a bad row, not an error of the command.
                Ok(match r.get_ref(i).map_err(&e)? {
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    rusqlite::types::ValueRef::Null => String::new(),
                    v => format!("{v:?}"),
                })
            };
            let at_us: i64 = r.get(1).unwrap_or(i64::MIN);
            let (actor, action, selection, counts) = (get_text(2)?, get_text(3)?, get_text(4)?, get_text(5)?);
            let reason: Option<String> = r.get(6).unwrap_or(None);
            let prev_hash: Option<String> = r.get(7).unwrap_or(None);
            let hash: Option<String> = r.get(8).unwrap_or(None);
            report.rows += 1;
            let bad = |detail: String| Some(ChainProblem { seq: Some(seq), detail });
            let (Some(prev_hash), Some(hash)) = (prev_hash, hash) else {
                report.problem = bad(format!("audit row #{seq} has no hash: written outside quarantine, or edited"));
                break;
            };
            let row = Hashed {
                seq,
                at_us,
                actor: &actor,
                action: &action,
                selection: &selection,
                counts: &counts,
                reason: reason.as_deref(),
            };
            if row_hash(&prev_hash, &row) != hash {
                report.problem = bad(format!("audit row #{seq} does not match its hash: it was edited"));
                break;
            }
            if prev_hash != expected_prev {
                report.problem = bad(match prev_seq {
                    None => {
                        format!("audit row #{seq} does not link to the genesis value: the rows before it were removed")
                    }
                    Some(p) => format!(
                        "audit row #{seq} does not link to row #{p}: a row between them was removed or inserted"
                    ),
                });
                break;
            }
            if anchor.as_deref() == Some(hash.as_str()) {
                report.anchor_seq = Some(seq);
            }
            report.head = Some(Head { seq, hash: hash.clone() });
            expected_prev = hash;
            prev_seq = Some(seq);
        }
        if report.problem.is_none() {
            if let (Some(a), None) = (&anchor, report.anchor_seq) {
                let head = match &report.head {
                    Some(h) => format!("the trail now ends at row #{}", h.seq),
                    None => "the trail is empty".into(),
                };
                report.problem = Some(ChainProblem {
                    seq: None,
                    detail: format!(
                        "anchor {a} is not in the audit trail ({head}): rows up to the anchored one were removed \
                         (the tail was cut) or rewritten"
                    ),
                });
            }
        }
        Ok(report)
    }
}
