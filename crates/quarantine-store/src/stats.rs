//! `stats`: what the store holds, from the index and the blob tree.
//!
//! Messages and bytes per verdict (with how many arrived since local midnight, the number an incident is spotted
//! by) and per local day; recipients per release state; logical bytes (the sizes of live messages) against unique
//! bytes (each distinct original once: dedup) and stored bytes (the blob files: compression); the size on disk of
//! the index and the blobs; and whether purge is frozen.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use rusqlite::OptionalExtension;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::state::RecipientState;
use crate::store::Store;

#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    /// Live (not purged) messages and the sum of their original sizes.
    pub messages: u64,
    pub bytes: u64,
    /// Purged messages whose tombstone rows remain.
    pub tombstones: u64,
    /// Most messages first.
    pub by_verdict: Vec<VerdictStats>,
    /// Local days (`TZ`), oldest first.
    pub by_day: Vec<DayStats>,
    /// Recipients per state, every state listed.
    pub recipients: BTreeMap<String, u64>,
    pub storage: Storage,
    /// The reason given to `freeze` (JSON as stored, or its text), or null when purge is not frozen.
    pub frozen: Option<serde_json::Value>,
    /// Spool files not yet ingested, and files in `spool/bad/`.
    pub spool: crate::spool::Backlog,
}

#[derive(Clone, Debug, Serialize)]
pub struct VerdictStats {
    pub verdict: String,
    pub messages: u64,
    pub bytes: u64,
    /// Received since local midnight.
    pub today: u64,
    pub last_received: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct DayStats {
    pub day: String,
    pub messages: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Storage {
    /// Sum of the sizes of live messages, as if each were stored separately and uncompressed.
    pub logical_bytes: u64,
    /// Sum of the sizes of the distinct originals live messages reference.
    pub unique_bytes: u64,
    /// Sum of the blob files' lengths (all blobs on disk, orphans included).
    pub stored_bytes: u64,
    pub blobs: u64,
    /// logical / unique; null when there is nothing to compare.
    pub dedup_ratio: Option<f64>,
    /// unique / stored.
    pub compression_ratio: Option<f64>,
    /// The index with its -wal and -shm files; on a shared index the PostgreSQL database's size
    /// (`pg_database_size`), which is not on this machine's disk and not in `disk_bytes`.
    pub index_bytes: u64,
    /// True when the index is a shared PostgreSQL database (the local `index.sqlite` is only its marker).
    pub index_shared: bool,
    /// Space the blob tree and staging directory take on disk (allocated blocks).
    pub blob_disk_bytes: u64,
    pub disk_bytes: u64,
}

impl Store {
    pub fn stats(&self) -> Result<Stats> {
        let e = self.sql_err();
        let c = &self.conn;
        let (messages, bytes): (i64, i64) = c
            .query_row("SELECT count(*), coalesce(sum(size), 0) FROM messages WHERE purged_us IS NULL", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(&e)?;
        let tombstones: i64 =
            c.query_row("SELECT count(*) FROM messages WHERE purged_us IS NOT NULL", [], |r| r.get(0)).map_err(&e)?;
        let midnight = crate::timeexpr::parse_now("today").map_err(Error::Invalid)?.timestamp_micros();
        let by_verdict = c
            .prepare(
                "SELECT verdict, count(*), coalesce(sum(size), 0), count(*) FILTER (WHERE received_us >= ?1), max(received_us)
                 FROM messages WHERE purged_us IS NULL GROUP BY verdict ORDER BY count(*) DESC, verdict",
            )
            .map_err(&e)?
            .query_map([midnight], |r| {
                Ok(VerdictStats {
                    verdict: r.get(0)?,
                    messages: r.get::<_, i64>(1)? as u64,
                    bytes: r.get::<_, i64>(2)? as u64,
                    today: r.get::<_, i64>(3)? as u64,
                    last_received: crate::message::rfc3339_us(r.get(4)?),
                })
            })
            .map_err(&e)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(&e)?;
        // SQLite's 'localtime' follows TZ through the C library, as chrono's Local does.
        let day = if c.is_postgres() {
            // The session's TimeZone, which db::pg sets from TZ.
            "to_char(to_timestamp(received_us / 1000000), 'YYYY-MM-DD')"
        } else {
            "date(received_us / 1000000, 'unixepoch', 'localtime')"
        };
        let by_day = c
            .prepare(&format!(
                "SELECT {day} AS day, count(*), coalesce(sum(size), 0)
                 FROM messages WHERE purged_us IS NULL GROUP BY day ORDER BY day"
            ))
            .map_err(&e)?
            .query_map([], |r| {
                Ok(DayStats { day: r.get(0)?, messages: r.get::<_, i64>(1)? as u64, bytes: r.get::<_, i64>(2)? as u64 })
            })
            .map_err(&e)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(&e)?;
        let mut recipients: BTreeMap<String, u64> = RecipientState::ALL.iter().map(|s| (s.to_string(), 0)).collect();
        let mut stmt = c.prepare("SELECT state, count(*) FROM recipients GROUP BY state").map_err(&e)?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))).map_err(&e)?;
        for row in rows {
            let (state, n) = row.map_err(&e)?;
            recipients.insert(state, n as u64);
        }
        let unique_bytes: i64 = c
            .query_row(
                "SELECT coalesce(sum(size), 0) FROM
                   (SELECT max(size) AS size FROM messages WHERE purged_us IS NULL GROUP BY hash) AS per_hash",
                [],
                |r| r.get(0),
            )
            .map_err(&e)?;
        let frozen: Option<String> =
            c.query_row("SELECT value FROM settings WHERE key = 'frozen'", [], |r| r.get(0)).optional().map_err(&e)?;
        let frozen = frozen.map(|v| serde_json::from_str(&v).unwrap_or(serde_json::Value::String(v)));

        let tree = match self.blobs.remote() {
            // Objects take no local disk; their stored bytes are what the listing says.
            Some(remote) => remote.list()?.iter().fold(Tree::default(), |mut t, o| {
                t.files += 1;
                t.bytes += o.size;
                t
            }),
            None => walk(self.blobs.blobs_dir())?,
        };
        let tmp = walk(self.blobs.tmp_dir())?;
        let index_shared = c.is_postgres();
        let mut index_bytes = 0;
        if index_shared {
            let n: i64 = c.query_row("SELECT pg_database_size(current_database())", [], |r| r.get(0)).map_err(&e)?;
            index_bytes = n as u64;
        } else {
            for suffix in ["", "-wal", "-shm"] {
                let mut p = self.index_path.clone().into_os_string();
                p.push(suffix);
                index_bytes += fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            }
        }
        let local_index_bytes = if index_shared { 0 } else { index_bytes };
        let logical = bytes as u64;
        let unique = unique_bytes as u64;
        let ratio = |a: u64, b: u64| if a > 0 && b > 0 { Some(a as f64 / b as f64) } else { None };
        let storage = Storage {
            logical_bytes: logical,
            unique_bytes: unique,
            stored_bytes: tree.bytes,
            blobs: tree.files,
            dedup_ratio: ratio(logical, unique),
            compression_ratio: ratio(unique, tree.bytes),
            index_bytes,
            index_shared,
            blob_disk_bytes: tree.disk + tmp.disk,
            disk_bytes: local_index_bytes + tree.disk + tmp.disk,
        };
        Ok(Stats {
            messages: messages as u64,
            bytes: logical,
            tombstones: tombstones as u64,
            by_verdict,
            by_day,
            recipients,
            storage,
            frozen,
            spool: self.spool().backlog()?,
        })
    }
}

/// What `stats --by` groups the messages by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatsBy {
    /// Local hour of arrival (`TZ`), oldest first.
    Hour,
    Verdict,
    Scanner,
    ScannerVersion,
}

impl std::str::FromStr for StatsBy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<StatsBy, String> {
        match s {
            "hour" => Ok(StatsBy::Hour),
            "verdict" => Ok(StatsBy::Verdict),
            "scanner" => Ok(StatsBy::Scanner),
            "scanner-version" => Ok(StatsBy::ScannerVersion),
            other => Err(format!("--by {other:?}: use hour, verdict, scanner or scanner-version")),
        }
    }
}

/// One group of `stats --by`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Bucket {
    /// The hour (`YYYY-MM-DDTHH:00`, local), verdict, scanner or scanner version; null when the index has none
    /// (no scanner or version recorded).
    pub key: Option<String>,
    pub messages: u64,
    pub bytes: u64,
}

impl Store {
    /// Live messages received at or after `since_us` (all when `None`), grouped by `by`: hours oldest first (every
    /// hour from the first to the last, empty ones included, so a spike stands out), the others most first.
    pub fn stats_by(&self, since_us: Option<i64>, by: StatsBy) -> Result<Vec<Bucket>> {
        let key = match by {
            // Local time, as the CLI prints it (PostgreSQL: the session's TimeZone, set from TZ by db::pg).
            StatsBy::Hour if self.conn.is_postgres() => {
                "to_char(to_timestamp(received_us / 1000000), 'YYYY-MM-DD\"T\"HH24:00')"
            }
            StatsBy::Hour => "strftime('%Y-%m-%dT%H:00', received_us / 1000000, 'unixepoch', 'localtime')",
            StatsBy::Verdict => "verdict",
            StatsBy::Scanner => "scanner",
            StatsBy::ScannerVersion => "scanner_version",
        };
        let order = if by == StatsBy::Hour { "k" } else { "count(*) DESC, k" };
        let e = self.sql_err();
        let rows: Vec<Bucket> = self
            .conn
            .prepare(&format!(
                "SELECT {key} AS k, count(*), coalesce(sum(size), 0) FROM messages
                 WHERE purged_us IS NULL AND received_us >= ?1 GROUP BY k ORDER BY {order}"
            ))
            .map_err(&e)?
            .query_map([since_us.unwrap_or(i64::MIN)], |r| {
                Ok(Bucket { key: r.get(0)?, messages: r.get::<_, i64>(1)? as u64, bytes: r.get::<_, i64>(2)? as u64 })
            })
            .map_err(&e)?
            .collect::<rusqlite::Result<_>>()
            .map_err(&e)?;
        if by != StatsBy::Hour || rows.len() < 2 {
            return Ok(rows);
        }
        // Fill the empty hours between the first and the last.
        let parse = |k: &Option<String>| {
            k.as_deref()
                .and_then(|k| chrono::NaiveDateTime::parse_from_str(&format!("{k}:00"), "%Y-%m-%dT%H:%M:%S").ok())
        };
        let (Some(first), Some(last)) = (parse(&rows[0].key), parse(&rows[rows.len() - 1].key)) else {
            return Ok(rows);
        };
        if (last - first).num_hours() > 24 * 366 {
            return Ok(rows); // more than a year of hours: the gaps are not worth a table
        }
        let mut have: std::collections::HashMap<String, Bucket> =
            rows.into_iter().filter_map(|b| b.key.clone().map(|k| (k, b))).collect();
        let mut out = Vec::new();
        let mut t = first;
        while t <= last {
            let k = t.format("%Y-%m-%dT%H:00").to_string();
            out.push(have.remove(&k).unwrap_or(Bucket { key: Some(k), messages: 0, bytes: 0 }));
            t += chrono::Duration::hours(1);
        }
        Ok(out)
    }
}

#[derive(Default)]
struct Tree {
    files: u64,
    bytes: u64,
    /// Allocated bytes, directories included.
    disk: u64,
}

/// Sizes of the regular files under `dir` (recursively; symlinks are not followed).
fn walk(dir: &Path) -> Result<Tree> {
    use std::os::unix::fs::MetadataExt;
    let mut t = Tree::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match fs::read_dir(&d) {
            Ok(x) => x,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(Error::io("list", &d)(err)),
        };
        for entry in entries {
            let entry = entry.map_err(Error::io("list", &d))?;
            let meta = match entry.path().symlink_metadata() {
                Ok(m) => m,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue, // purged meanwhile
                Err(err) => return Err(Error::io("stat", entry.path())(err)),
            };
            t.disk += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                t.files += 1;
                t.bytes += meta.len();
            }
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HoldRequest;

    #[test]
    fn counts_dedup_and_freeze() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Store::init(&dir.path().join("q")).unwrap();
        let msg = "Subject: same bytes\n\n".to_string() + &"compressible line\n".repeat(200);
        for (verdict, rcpts) in [("SPAM", vec!["a@x", "b@x"]), ("SPAM", vec!["c@x"]), ("PMX:VIRUS", vec!["a@x"])] {
            let req = HoldRequest {
                from: "s@x".into(),
                recipients: rcpts.into_iter().map(String::from).collect(),
                verdict: verdict.into(),
                ..Default::default()
            };
            s.hold(&req, &mut msg.as_bytes()).unwrap();
        }
        let st = s.stats().unwrap();
        assert_eq!(st.messages, 3);
        assert_eq!(st.bytes, 3 * msg.len() as u64);
        assert_eq!(st.by_verdict[0].verdict, "SPAM");
        assert_eq!((st.by_verdict[0].messages, st.by_verdict[0].today), (2, 2));
        assert_eq!(st.by_verdict[1].verdict, "PMX:VIRUS");
        assert_eq!(st.by_day.iter().map(|d| d.messages).sum::<u64>(), 3);
        assert_eq!(st.recipients["held"], 4);
        assert_eq!(st.recipients["released"], 0);
        assert_eq!(st.storage.unique_bytes, msg.len() as u64);
        assert_eq!(st.storage.blobs, 1);
        assert!(st.storage.dedup_ratio.unwrap() > 2.9);
        assert!(st.storage.compression_ratio.unwrap() > 5.0, "{:?}", st.storage);
        assert!(st.storage.index_bytes > 0 && st.storage.disk_bytes > st.storage.index_bytes);
        assert_eq!(st.frozen, None);
        s.conn()
            .execute("INSERT INTO settings (key, value) VALUES ('frozen', '{\"reason\":\"PMX incident\"}')", [])
            .unwrap();
        assert_eq!(s.stats().unwrap().frozen, Some(serde_json::json!({"reason": "PMX incident"})));
    }
}
