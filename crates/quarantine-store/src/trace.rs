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

use crate::db::Conn;
use rusqlite::{params, OptionalExtension};

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
pub(crate) fn secret_or_create(conn: &Conn) -> rusqlite::Result<TraceKey> {
    if let Some(k) = secret(conn)? {
        return Ok(k);
    }
    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut key);
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    conn.execute("INSERT INTO settings (key, value) VALUES (?1, ?2)", params![SECRET_KEY, hex])?;
    Ok(TraceKey(key))
}

fn secret(conn: &Conn) -> rusqlite::Result<Option<TraceKey>> {
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
        verify_on(&self.conn, header_value, now).map_err(self.sql_err())
    }

    /// For `hold`/`serve`/ingest: the id of the released message a returning copy came from, if its header block
    /// carries an `X-Quarantine-Released` header that [`Store::verify_trace`] accepts (the first such, when a
    /// message was released more than once). Store it as the new row's `requarantined_from`.
    pub fn requarantined_from(&self, raw: &[u8]) -> Result<Option<String>> {
        origin_on(&self.conn, &trace_values(raw), chrono::Utc::now()).map_err(self.sql_err())
    }

    /// The MAC key, for release (`None` only for an index written by hand without it).
    pub(crate) fn trace_key(&self) -> Result<Option<TraceKey>> {
        secret(&self.conn).map_err(self.sql_err())
    }
}

/// The values of every `X-Quarantine-Released` header in `raw`'s header block, unfolded, in order. Pure: ingest's
/// staging threads take them out, the commit checks them under the write lock ([`origin_on`]).
pub(crate) fn trace_values(raw: &[u8]) -> Vec<String> {
    let block = String::from_utf8_lossy(crate::message::header_block(raw)).into_owned();
    let mut fields: Vec<String> = Vec::new();
    for line in block.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.push_str(line);
            }
        } else if !line.is_empty() {
            fields.push(line.to_string());
        }
    }
    fields
        .into_iter()
        .filter_map(|f| {
            let (name, value) = f.split_once(':')?;
            name.trim().eq_ignore_ascii_case(TRACE_HEADER).then(|| value.to_string())
        })
        .collect()
}

/// The first of `values` that [`verify_on`] accepts: the message a returning copy was released from.
pub(crate) fn origin_on(
    conn: &Conn,
    values: &[String],
    now: chrono::DateTime<chrono::Utc>,
) -> rusqlite::Result<Option<String>> {
    for v in values {
        if let Some(id) = verify_on(conn, v, now)? {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// [`Store::verify_trace_at`] on any connection (ingest's write transaction among them).
pub(crate) fn verify_on(
    conn: &Conn,
    header_value: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> rusqlite::Result<Option<String>> {
    let Some((fields, id, at, mac)) = parse(header_value) else { return Ok(None) };
    let Some(key) = secret(conn)? else { return Ok(None) };
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
    let known = conn.prepare_cached("SELECT 1 FROM messages WHERE id = ?1").and_then(|mut s| s.exists([&id]))?;
    Ok(known.then_some(id))
}

mod constant_time_eq {
    /// Equal length assumed by the caller; compares every byte whatever the first difference.
    pub fn eq(a: &[u8], b: &[u8]) -> bool {
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HoldRequest;

    fn store_with_message() -> (tempfile::TempDir, Store, String) {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Store::init(&dir.path().join("q")).unwrap();
        let req = HoldRequest {
            from: "s@example.org".into(),
            recipients: vec!["a@example.edu".into()],
            verdict: "PMX:VIRUS".into(),
            ..Default::default()
        };
        let id = s.hold(&req, &mut &b"Subject: x\n\nbody\n"[..]).unwrap().id;
        (dir, s, id)
    }

    /// The value of the header release would write now for `id`.
    fn value(s: &Store, id: &str, actor: &str, at: &str) -> String {
        let line = s.trace_key().unwrap().expect("init made a secret").header(id, actor, at);
        let line = String::from_utf8(line).unwrap();
        line.strip_prefix("X-Quarantine-Released: ").unwrap().trim_end().to_string()
    }

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now()
    }

    #[test]
    fn a_valid_trace_names_the_released_message() {
        let (_d, s, id) = store_with_message();
        let at = now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let v = value(&s, &id, "alice", &at);
        assert!(v.starts_with(&format!("{id}; by alice; {at}; mac=")), "{v}");
        assert_eq!(s.verify_trace(&v).unwrap(), Some(id.clone()));
        // Folded by an MTA on the way back, with the header name and CRLFs: still the same trace.
        let folded = v.replacen("; by", ";\r\n by", 1);
        assert_eq!(s.verify_trace(&folded).unwrap(), Some(id.clone()));
        let raw = format!("Received: from x\r\nX-Quarantine-Released: {folded}\r\nSubject: x\r\n\r\nbody\r\n");
        assert_eq!(s.requarantined_from(raw.as_bytes()).unwrap(), Some(id.clone()));
        assert_eq!(s.requarantined_from(b"Subject: none\r\n\r\nX-Quarantine-Released: in the body\r\n").unwrap(), None);
    }

    #[test]
    fn a_wrong_mac_or_an_edited_field_is_just_a_header() {
        let (_d, s, id) = store_with_message();
        let at = now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let v = value(&s, &id, "alice", &at);
        let mac_at = v.rfind("mac=").unwrap() + 4;
        let mut wrong = v.clone().into_bytes();
        wrong[mac_at] = if wrong[mac_at] == b'0' { b'1' } else { b'0' };
        assert_eq!(s.verify_trace(std::str::from_utf8(&wrong).unwrap()).unwrap(), None, "one digit of the MAC");
        assert_eq!(s.verify_trace(&v.replace("by alice", "by mallory")).unwrap(), None, "an edited actor");
        assert_eq!(s.verify_trace(&v[..v.rfind("; mac=").unwrap()]).unwrap(), None, "no MAC at all");
        assert_eq!(s.verify_trace("garbage").unwrap(), None);
        assert_eq!(s.verify_trace(&v.replace("mac=", "mac=ab")).unwrap(), None, "a longer MAC");
        // Another store's secret: a valid-looking trace from elsewhere is not ours.
        let (_d2, other, _) = store_with_message();
        assert_eq!(other.verify_trace(&v).unwrap(), None);
        // A MAC that is right, for an id this store never held (forged with the key would need the key).
        let ghost = value(&s, "ZZZZZZZZZZ", "alice", &at);
        assert_eq!(s.verify_trace(&ghost).unwrap(), None);
    }

    #[test]
    fn a_stale_or_future_trace_is_just_a_header() {
        let (_d, s, id) = store_with_message();
        let t = now();
        let old = (t - chrono::Duration::days(31)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        assert_eq!(s.verify_trace(&value(&s, &id, "alice", &old)).unwrap(), None, "31 days old");
        let recent = (t - chrono::Duration::days(29)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        assert_eq!(s.verify_trace(&value(&s, &id, "alice", &recent)).unwrap(), Some(id.clone()));
        let ahead = (t + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        assert_eq!(s.verify_trace(&value(&s, &id, "alice", &ahead)).unwrap(), None, "an hour in the future");
        // The same header checked later than the window: stale.
        let v = value(&s, &id, "alice", &t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        assert_eq!(s.verify_trace_at(&v, t + chrono::Duration::days(40)).unwrap(), None);
        assert_eq!(s.verify_trace_at(&v, t + chrono::Duration::days(1)).unwrap(), Some(id));
    }

    #[test]
    fn the_secret_is_made_by_init_and_by_the_upgrade() {
        let (_d, s, _) = store_with_message();
        let hex: String =
            s.conn().query_row("SELECT value FROM settings WHERE key = 'trace_secret'", [], |r| r.get(0)).unwrap();
        assert_eq!(hex.len(), 64);
    }
}
