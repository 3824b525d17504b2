//! The append-only audit trail: every import, release, purge and export writes one row in the same transaction
//! as the change it records, so the log can never claim work that was rolled back or miss work that committed.

use crate::state::AuditAction;
use rusqlite::{params, Connection};
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

/// Writes `entry` on `conn`, which must be inside the transaction making the change.
pub fn record(conn: &Connection, entry: &AuditEntry) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit (at_us, actor, action, selection, counts, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        now_us(),
        entry.actor,
        entry.action.as_str(),
        entry.selection.to_string(),
        entry.counts.to_string(),
        entry.reason
    ])?;
    Ok(())
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
}

impl crate::store::Store {
    /// Audit rows at or after `since_us`, oldest first.
    pub fn audit_log(&self, since_us: Option<i64>) -> crate::Result<Vec<AuditRow>> {
        let e = self.sql_err();
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, at_us, actor, action, selection, counts, reason FROM audit
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
                })
            })
            .map_err(&e)?
            .collect::<rusqlite::Result<_>>()
            .map_err(&e)?;
        Ok(rows)
    }
}
