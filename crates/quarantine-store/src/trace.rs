//! The release trace header and its MAC (issue 15 item 7).
//!
//! A released message carries `X-Quarantine-Released: <id>; by <actor>; <time>; mac=<hex>`. The MAC is keyed
//! BLAKE3 under the store's secret (settings `trace_secret`, 32 random bytes made at `init` or by the upgrade to
//! schema 3) over everything before `; mac=`, cut to 128 bits. When the filter flags a released message again and
//! it comes back through `hold`/`serve`, [`Store::verify_trace`] tells a trace this store wrote (the copy is
//! re-quarantined: `requarantined_from`) from a forged, altered or stale one, which is just a header.
//!
//! # Compatibility
//! The value before `; mac=` is the header DESIGN section 6 always had, so a reader that ignores the MAC sees the
//! same fields.

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::Result;
use crate::store::Store;

/// The trace header's name.
pub const TRACE_HEADER: &str = "X-Quarantine-Released";

/// A trace older than this (or more than [`TRACE_SKEW`] in the future) is stale: not a re-quarantine.
pub const TRACE_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Clock skew allowed between the releasing host and the one holding the copy again.
pub const TRACE_SKEW: Duration = Duration::from_secs(15 * 60);

const SECRET_KEY: &str = "trace_secret";

/// The per-store MAC key.
#[derive(Clone)]
pub(crate) struct TraceKey([u8; 32]);

impl std::fmt::Debug for TraceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TraceKey(..)")
    }
}

/// Creates the secret if the store has none (the migration to schema 3 calls this, so `init` and the upgrade do).
pub(crate) fn secret_or_create(conn: &Connection) -> rusqlite::Result<TraceKey> {
    if let Some(k) = secret(conn)? {
        return Ok(k);
    }
    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut key);
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    conn.execute("INSERT INTO settings (key, value) VALUES (?1, ?2)", params![SECRET_KEY, hex])?;
    Ok(TraceKey(key))
}

fn secret(conn: &Connection) -> rusqlite::Result<Option<TraceKey>> {
    let hex: Option<String> = conn
        .prepare_cached("SELECT value FROM settings WHERE key = ?1")?
        .query_row([SECRET_KEY], |r| r.get(0))
        .optional()?;
    Ok(hex.and_then(|h| parse_key(&h)))
}

fn parse_key(hex: &str) -> Option<TraceKey> {
    if hex.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(TraceKey(key))
}

impl TraceKey {
    /// For an index without a secret: a key nobody knows, so the header still goes out and never verifies.
    pub(crate) fn unkeyed() -> TraceKey {
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut key);
        TraceKey(key)
    }

    fn mac(&self, fields: &str) -> String {
        let h = blake3::keyed_hash(&self.0, fields.as_bytes());
        h.to_hex()[..32].to_string()
    }

    /// The header line, CRLF-terminated: the fields as `quarantine_mail::encode::trace_header` writes them (control
    /// characters replaced), then `; mac=<hex>` over exactly those fields.
    pub(crate) fn header(&self, id: &str, actor: &str, rfc3339: &str) -> Vec<u8> {
        let line = quarantine_mail::encode::trace_header(id, actor, rfc3339);
        let line = String::from_utf8_lossy(&line);
        let fields = line.trim_end_matches("\r\n").trim_start_matches(TRACE_HEADER).trim_start_matches(": ");
        format!("{TRACE_HEADER}: {fields}; mac={}\r\n", self.mac(fields)).into_bytes()
    }
}

/// A trace header value taken apart: (fields MAC'd, id, time, mac).
fn parse(value: &str) -> Option<(String, String, chrono::DateTime<chrono::FixedOffset>, String)> {
    // Unfold (RFC 5322: a CRLF before whitespace is not part of the value) and trim.
    let unfolded: String = value.replace("\r\n", "").replace('\n', "");
    let v = unfolded.trim();
    let (fields, mac) = v.rsplit_once("; mac=")?;
    let (id, rest) = fields.split_once("; by ")?;
    let (_, time) = rest.rsplit_once("; ")?;
    let at = chrono::DateTime::parse_from_rfc3339(time.trim()).ok()?;
    Some((fields.to_string(), id.trim().to_string(), at, mac.trim().to_ascii_lowercase()))
}

impl Store {
    /// The id of the message whose release wrote `header_value` (the value of an `X-Quarantine-Released` header,
    /// folded or not), if and only if its MAC is this store's, it is not stale (at most [`TRACE_MAX_AGE`] old, not
    /// more than [`TRACE_SKEW`] ahead) and that message is in this store. Anything else — no MAC, a wrong one, an
    /// edited field, another store's, an unknown id — is `None`: just a header.
    pub fn verify_trace(&self, header_value: &str) -> Result<Option<String>> {
        self.verify_trace_at(header_value, chrono::Utc::now())
    }

    /// [`Store::verify_trace`] as of `now` (for tests).
    pub fn verify_trace_at(&self, header_value: &str, now: chrono::DateTime<chrono::Utc>) -> Result<Option<String>> {
        let Some((fields, id, at, mac)) = parse(header_value) else { return Ok(None) };
        let Some(key) = secret(&self.conn).map_err(self.sql_err())? else { return Ok(None) };
        let want = key.mac(&fields);
        // Constant-time comparison: the MAC must not leak through timing.
        if want.len() != mac.len() || !constant_time_eq::eq(want.as_bytes(), mac.as_bytes()) {
            return Ok(None);
        }
        let age = now.signed_duration_since(at.with_timezone(&chrono::Utc));
        let max = chrono::Duration::from_std(TRACE_MAX_AGE).unwrap_or(chrono::Duration::MAX);
        let skew = chrono::Duration::from_std(TRACE_SKEW).unwrap_or(chrono::Duration::MAX);
        if age > max || age < -skew {
            return Ok(None);
        }
        let known = self
            .conn
            .prepare_cached("SELECT 1 FROM messages WHERE id = ?1")
            .and_then(|mut s| s.exists([&id]))
            .map_err(self.sql_err())?;
        Ok(known.then_some(id))
    }

    /// The MAC key, for release (`None` only for an index written by hand without it).
    pub(crate) fn trace_key(&self) -> Result<Option<TraceKey>> {
        secret(&self.conn).map_err(self.sql_err())
    }
}

mod constant_time_eq {
    /// Equal length assumed by the caller; compares every byte whatever the first difference.
    pub fn eq(a: &[u8], b: &[u8]) -> bool {
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}
