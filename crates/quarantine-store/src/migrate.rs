//! `quarantine migrate`: copies an embedded store (SQLite index, local `blobs/`) into the shared backends of
//! DESIGN section 11 (a PostgreSQL index, optionally an object store for the blobs), while intake continues.
//!
//! # Order, and why a kill at any point loses nothing
//! 1. The destination schema comes from the normal PostgreSQL migrations; a destination that already holds
//!    another store's mail is refused (its audit genesis differs), so two quarantines are never merged by accident.
//! 2. A first pass copies every table in keyset batches, without any lock: `hold` keeps writing the spool, and
//!    release, purge and ingest keep working on the local index. Each batch of messages uploads its live blobs
//!    (create-only PUT; an object already there is trusted only if it decompresses to the right hash) before
//!    the batch's rows commit, so the destination never has a row whose object is missing.
//! 3. The final pass takes the ingest lock (`spool/.ingest.lock`, so new holds stay in the spool) and the local
//!    index's write lock (so release, purge and freeze wait), copies again what changed, verifies, and writes the
//!    local marker naming the destination in the same local transaction. From that commit on, the store refuses
//!    to open without the new `index` (and `blobs`) settings, and the next ingest with them drains the spool into
//!    the destination.
//!
//! Every write is an upsert keyed by the table's unique key (`ON CONFLICT`), rows keep their `rowid` and the audit
//! its `seq`, `prev_hash` and `hash`: a rerun after a kill converges to the same copy, never a duplicate. The
//! local index and `blobs/` are left in place (nothing is deleted), so the source stays a backup until the admin
//! removes it.
//!
//! `gc_queue` is not copied: it lists blobs of purged messages awaiting deletion, and those are not uploaded.

use std::collections::HashSet;
use std::fs;
use std::sync::Arc;

use rusqlite::types::Value;
use rusqlite::OptionalExtension;
use serde::Serialize;

use crate::blob::BlobStore;
use crate::db::{params_from_iter, Conn, TransactionBehavior};
use crate::error::{Error, Result};
use crate::index;
use crate::objects::{BlobLocation, ObjectStore, PutOutcome};
use crate::progress::Progress;
use crate::store::{redact, Backends, IndexLocation, Store, SHARED_ID_KEY, SHARED_INDEX_KEY};

/// Rows per destination transaction.
const BATCH: i64 = 500;

/// Settings that belong to one index and are never copied: the destination's own id and the local marker.
const LOCAL_SETTINGS: [&str; 4] = ["index_id", SHARED_INDEX_KEY, SHARED_ID_KEY, MIGRATED_BLOBS_KEY];

/// The local settings key naming the object store the blobs were moved to, so the store refuses to open with
/// its blobs on `blobs/` again (new mail would land where the other gateways cannot read it).
pub(crate) const MIGRATED_BLOBS_KEY: &str = "migrated_blobs";

/// What `migrate` did and found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MigrateReport {
    /// The destination index and blob store, without passwords.
    pub index: String,
    pub blobs: String,
    /// Rows per table, as found equal on both sides at the end (name, count).
    pub tables: Vec<(String, u64)>,
    /// Objects uploaded, and objects found already there and checked (a rerun, or another gateway's copy).
    pub uploaded: u64,
    pub already_there: u64,
    /// Objects checked at the end (HEAD and size; with `deep`, read back and hashed).
    pub objects_checked: u64,
    pub deep: bool,
    /// The audit chain's head on both sides.
    pub audit_head: Option<crate::audit::Head>,
    /// The first difference found by the verification, if any: the store was not switched over.
    pub mismatch: Option<String>,
    /// Spool files left for the first ingest with the new config.
    pub spool_pending: u64,
}

impl MigrateReport {
    pub fn ok(&self) -> bool {
        self.mismatch.is_none()
    }
}

/// One table's copy: its columns as the local index has them, its keyset column and its upsert.
struct Table {
    name: &'static str,
    /// The keyset column (unique, ascending).
    key: &'static str,
    /// The unique key an upsert conflicts on.
    conflict: &'static str,
    /// Whether a row already there is updated to the source's values (rows that change: release, purge) or
    /// kept (rows that never change once written).
    update: bool,
}

const TABLES: [Table; 5] = [
    Table { name: "messages", key: "rowid", conflict: "id", update: true },
    Table { name: "recipients", key: "rowid", conflict: "message, address_lc", update: true },
    Table { name: "attachments", key: "rowid", conflict: "rowid", update: false },
    Table { name: "message_scan", key: "message", conflict: "message", update: true },
    Table { name: "audit", key: "seq", conflict: "seq", update: false },
];

/// The destination, opened.
struct Dest {
    conn: Conn,
    url: String,
    id: String,
    blobs: Option<BlobStore>,
    remote: Option<Arc<dyn ObjectStore>>,
    /// Objects this run uploaded or checked: the final pass, under the locks, does not fetch them again (the
    /// verification HEADs each one).
    done: HashSet<String>,
    /// In the final pass nothing else writes the local store, so a live message's missing blob is an error;
    /// before it, a purge running beside the first pass may have removed it (the final pass sees the purge).
    final_pass: bool,
}

impl Store {
    /// Copies this embedded store into `to` (module docs): `to.index` must be PostgreSQL; `to.blobs` may stay
    /// local (one machine with its index moved) or name an object store. Returns the report; when verification
    /// found a difference the report names it and the local store is left as it was (run again).
    pub fn migrate_to(&mut self, to: &Backends, deep: bool, progress: &dyn Progress) -> Result<MigrateReport> {
        if self.conn.is_postgres() || self.blobs.remote().is_some() {
            return Err(Error::Invalid(
                "this store already uses shared backends; `migrate` copies an embedded store (open it without \
                 `index`/`blobs` in the config)"
                    .into(),
            ));
        }
        let IndexLocation::Postgres(url) = &to.index else {
            return Err(Error::Invalid(
                "migrate needs a PostgreSQL destination index (--to-index postgresql://...)".into(),
            ));
        };
        let mut dest = self.open_dest(url, &to.blobs)?;
        let mut report = MigrateReport {
            index: redact(url),
            blobs: dest.remote.as_ref().map(|r| r.describe()).unwrap_or_else(|| "STORE/blobs/ (local)".into()),
            deep,
            ..Default::default()
        };
        self.check_destination(&dest)?;

        // First pass: no lock, intake and the other commands go on. One read transaction, so every table is read
        // from the same snapshot: a recipient ingested after the messages were copied would otherwise arrive
        // before its message.
        self.conn.execute_batch("BEGIN DEFERRED").map_err(index::sql_err(&self.index_path))?;
        let first = self.copy_all(&mut dest, &mut report, progress);
        let _ = self.conn.execute_batch("COMMIT");
        first?;
        dest.final_pass = true;

        // Final pass: new holds stay in the spool, other writers wait for the local write lock.
        let spool = self.spool();
        let lock_path = spool.dir().join(crate::ingest::LOCK_FILE);
        let _ingest = crate::durable::lock_file(&lock_path, spool.owner(), true)?;
        // By hand rather than a `Tx`: the passes below borrow the store mutably while it is open.
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(index::sql_err(&self.index_path))?;
        let result = self.final_pass(&mut dest, &mut report, deep, progress);
        match result {
            Ok(()) if report.ok() => {
                let mark = |e| index::sql_err(&self.index_path)(e);
                self.conn
                    .execute(
                        "INSERT INTO settings (key, value) VALUES (?1, ?2), (?3, ?4) ON CONFLICT DO NOTHING",
                        [SHARED_INDEX_KEY, &report.index, SHARED_ID_KEY, &dest.id],
                    )
                    .map_err(mark)?;
                if let Some(r) = &dest.remote {
                    self.conn
                        .execute(
                            "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                            [MIGRATED_BLOBS_KEY, &r.describe()],
                        )
                        .map_err(mark)?;
                }
                self.conn.execute_batch(&stale_writer_guards(&report.index)).map_err(mark)?;
                self.conn.execute_batch("COMMIT").map_err(mark)?;
            }
            other => {
                let _ = self.conn.execute_batch("ROLLBACK");
                other?;
            }
        }
        report.spool_pending = spool.pending()?.len() as u64;
        Ok(report)
    }

    fn open_dest(&self, url: &str, blobs: &BlobLocation) -> Result<Dest> {
        let pe = |source| Error::Postgres { target: redact(url), source };
        let mut conn = crate::store::open_postgres(url)?;
        index::migrate(&mut conn, &self.index_path).map_err(|e| crate::store::pg_context(e, url))?;
        let id = crate::store::shared_index_id(&conn).map_err(pe)?;
        let remote = match blobs {
            BlobLocation::Local => None,
            BlobLocation::Remote(r) => Some(r.clone()),
        };
        let blobs = remote.as_ref().map(|r| self.blobs.clone().with_remote(r.clone()));
        Ok(Dest { conn, url: url.to_string(), id, blobs, remote, done: HashSet::new(), final_pass: false })
    }

    /// A destination that holds another store's mail or audit trail is refused: its genesis value is not ours.
    fn check_destination(&self, dest: &Dest) -> Result<()> {
        let pe = |source| Error::Postgres { target: redact(&dest.url), source };
        let count = |t: &str| -> Result<i64> {
            dest.conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0)).map_err(pe)
        };
        let (messages, audit) = (count("messages")?, count("audit")?);
        if messages == 0 && audit == 0 {
            return Ok(());
        }
        let genesis = |c: &Conn| -> rusqlite::Result<Option<String>> {
            c.query_row("SELECT value FROM settings WHERE key = 'audit_genesis'", [], |r| r.get(0)).optional()
        };
        let ours = genesis(&self.conn).map_err(index::sql_err(&self.index_path))?;
        let theirs = genesis(&dest.conn).map_err(pe)?;
        if ours.is_some() && ours == theirs {
            return Ok(());
        }
        Err(Error::Invalid(format!(
            "index {}: the destination already holds {messages} messages and {audit} audit rows of another \
             quarantine; migrate copies into an empty database (or one an earlier run of this migration filled)",
            redact(&dest.url)
        )))
    }

    fn final_pass(
        &mut self,
        dest: &mut Dest,
        report: &mut MigrateReport,
        deep: bool,
        progress: &dyn Progress,
    ) -> Result<()> {
        self.copy_all(dest, report, progress)?;
        self.verify_copy(dest, report, deep, progress)
    }

    fn copy_all(&mut self, dest: &mut Dest, report: &mut MigrateReport, progress: &dyn Progress) -> Result<()> {
        self.copy_settings(dest)?;
        for t in &TABLES {
            self.copy_table(dest, t, report, progress)?;
        }
        // Rows were written with their own rowid/seq: the identity sequences must continue after them.
        let pe = |source| Error::Postgres { target: redact(&dest.url), source };
        for (t, c) in [("messages", "rowid"), ("recipients", "rowid"), ("attachments", "rowid"), ("audit", "seq")] {
            dest.conn
                .execute_batch(&format!(
                    "SELECT setval(pg_get_serial_sequence('{t}', '{c}'), m) FROM (SELECT max({c}) AS m FROM {t}) x \
                     WHERE m IS NOT NULL"
                ))
                .map_err(pe)?;
        }
        Ok(())
    }

    /// Settings: the source's values win (the audit genesis and trace secret above all: the chain and the release
    /// traces depend on them), keys the source no longer has (a thawed freeze) go, the destination's id stays.
    fn copy_settings(&self, dest: &Dest) -> Result<()> {
        let local = index::sql_err(&self.index_path);
        let pe = |source| Error::Postgres { target: redact(&dest.url), source };
        let rows: Vec<(String, String)> = self
            .conn
            .prepare("SELECT key, value FROM settings ORDER BY key")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(&local)?;
        let rows: Vec<_> = rows.into_iter().filter(|(k, _)| !LOCAL_SETTINGS.contains(&k.as_str())).collect();
        let tx = dest.conn.begin(TransactionBehavior::Immediate).map_err(pe)?;
        let theirs: Vec<String> = tx
            .prepare("SELECT key FROM settings")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(pe)?;
        for k in theirs {
            if !LOCAL_SETTINGS.contains(&k.as_str()) && !rows.iter().any(|(rk, _)| *rk == k) {
                tx.execute("DELETE FROM settings WHERE key = ?1", [&k]).map_err(pe)?;
            }
        }
        for (k, v) in &rows {
            tx.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [k, v],
            )
            .map_err(pe)?;
        }
        tx.commit().map_err(pe)
    }

    fn columns(&self, table: &str) -> Result<Vec<String>> {
        let local = index::sql_err(&self.index_path);
        let mut cols: Vec<String> = self
            .conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"))
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(local)?;
        // SQLite's copy of each message's rowid (migration 0007) means nothing in PostgreSQL, which has no column
        // for it: messages are joined by id there.
        cols.retain(|c| c != "message_rowid");
        if matches!(table, "messages" | "recipients" | "attachments") {
            // SQLite's implicit rowid is the keyset and is carried over, so envelope order stays as it was.
            cols.insert(0, "rowid".into());
        }
        Ok(cols)
    }

    fn copy_table(
        &mut self,
        dest: &mut Dest,
        t: &Table,
        report: &mut MigrateReport,
        progress: &dyn Progress,
    ) -> Result<()> {
        let local = index::sql_err(&self.index_path);
        let target = redact(&dest.url);
        let pe = |source| Error::Postgres { target: target.clone(), source };
        let cols = self.columns(t.name)?;
        let total: i64 =
            self.conn.query_row(&format!("SELECT count(*) FROM {}", t.name), [], |r| r.get(0)).map_err(&local)?;
        progress.start(&format!("copying {}", t.name), total as u64);
        let key_at = cols.iter().position(|c| c == t.key).expect("the keyset column is a column");
        let select =
            format!("SELECT {} FROM {} WHERE {} > ?1 ORDER BY {} LIMIT {BATCH}", cols.join(", "), t.name, t.key, t.key);
        let placeholders: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
        let overriding = if cols[0] == "rowid" { " OVERRIDING SYSTEM VALUE" } else { "" };
        let action = if t.update {
            let sets: Vec<String> = cols
                .iter()
                .filter(|c| *c != "rowid" && !t.conflict.split(", ").any(|k| k == c.as_str()))
                .map(|c| format!("{c} = excluded.{c}"))
                .collect();
            format!("DO UPDATE SET {}", sets.join(", "))
        } else {
            "DO NOTHING".into()
        };
        let insert = format!(
            "INSERT INTO {} ({}){overriding} VALUES ({}) ON CONFLICT ({}) {action}",
            t.name,
            cols.join(", "),
            placeholders.join(", "),
            t.conflict
        );
        let (hash_at, size_at, purged_at) = (
            cols.iter().position(|c| c == "hash"),
            cols.iter().position(|c| c == "size"),
            cols.iter().position(|c| c == "purged_us"),
        );
        let mut after = if t.key == "message" { Value::Text(String::new()) } else { Value::Integer(i64::MIN) };
        loop {
            let rows: Vec<Vec<Value>> = self
                .conn
                .prepare_cached(&select)
                .and_then(|mut s| {
                    s.query_map([&after], |r| (0..cols.len()).map(|i| r.get::<_, Value>(i)).collect())?.collect()
                })
                .map_err(&local)?;
            let Some(last) = rows.last() else { break };
            after = last[key_at].clone();
            if t.name == "messages" {
                for r in &rows {
                    let live = matches!(purged_at.map(|i| &r[i]), Some(Value::Null));
                    if let (true, Some(Value::Text(h)), Some(Value::Integer(size))) =
                        (live, hash_at.map(|i| &r[i]), size_at.map(|i| &r[i]))
                    {
                        match self.upload(dest, h, *size as u64, report) {
                            Err(Error::MissingBlob { .. }) if !dest.final_pass => {}
                            other => other?,
                        }
                    }
                }
            }
            let tx = dest.conn.begin(TransactionBehavior::Immediate).map_err(pe)?;
            {
                let mut ins = tx.prepare_cached(&insert).map_err(pe)?;
                for r in &rows {
                    ins.execute(params_from_iter(r.iter())).map_err(pe)?;
                }
            }
            tx.commit().map_err(pe)?;
            progress.advance(rows.len() as u64);
        }
        progress.finish();
        Ok(())
    }

    /// One live blob into the object store: the local copy is checked first (a corrupt blob is never copied), an
    /// object already there is kept only if it checks.
    fn upload(&self, dest: &mut Dest, hash: &str, size: u64, report: &mut MigrateReport) -> Result<()> {
        let (Some(remote), Some(dblobs)) = (&dest.remote, &dest.blobs) else { return Ok(()) };
        if dest.done.contains(hash) {
            return Ok(());
        }
        let n = self.blobs.stream_verified(hash, &mut std::io::sink())?;
        if n != size {
            return Err(Error::CorruptBlob {
                hash: hash.into(),
                detail: format!("{n} bytes where the index says {size}; run `quarantine verify`"),
            });
        }
        let path = self.blobs.path_of(hash);
        let bytes = fs::read(&path).map_err(Error::io("read", &path))?;
        match remote.put_create_only(hash, &bytes)? {
            PutOutcome::Created => report.uploaded += 1,
            PutOutcome::AlreadyThere => {
                if dblobs.existing_is_intact(hash, size)? {
                    report.already_there += 1;
                } else {
                    remote.put_overwrite(hash, &bytes)?;
                    report.uploaded += 1;
                }
            }
        }
        dest.done.insert(hash.to_string());
        Ok(())
    }

    /// Counts per table, the (id, hash) pairs, every live object, the audit head. The first difference goes into
    /// the report.
    fn verify_copy(&self, dest: &Dest, report: &mut MigrateReport, deep: bool, progress: &dyn Progress) -> Result<()> {
        let local = index::sql_err(&self.index_path);
        let pe = |source| Error::Postgres { target: redact(&dest.url), source };
        report.tables.clear();
        for t in TABLES.iter().map(|t| t.name).chain(["settings"]) {
            let q = if t == "settings" {
                format!(
                    "SELECT count(*) FROM settings WHERE key NOT IN ({})",
                    LOCAL_SETTINGS.iter().map(|k| format!("'{k}'")).collect::<Vec<_>>().join(", ")
                )
            } else {
                format!("SELECT count(*) FROM {t}")
            };
            let a: i64 = self.conn.query_row(&q, [], |r| r.get(0)).map_err(&local)?;
            let b: i64 = dest.conn.query_row(&q, [], |r| r.get(0)).map_err(pe)?;
            if a != b {
                report.mismatch = Some(format!("table {t}: {a} rows here, {b} in the destination"));
                return Ok(());
            }
            report.tables.push((t.to_string(), a as u64));
        }

        // (id, hash, purged) pairs, in rowid order on both sides (rowids were carried over).
        let total = report.tables[0].1;
        progress.start("verifying messages", total);
        let q = format!(
            "SELECT rowid, id, hash, CASE WHEN purged_us IS NULL THEN 1 ELSE 0 END, size FROM messages WHERE rowid > ?1 ORDER BY rowid LIMIT {BATCH}"
        );
        type Pair = (i64, String, String, i64, i64);
        let read = |c: &Conn, after: i64| -> rusqlite::Result<Vec<Pair>> {
            c.prepare_cached(&q)?
                .query_map([after], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
                .collect()
        };
        let mut after = i64::MIN;
        let mut checked = std::collections::HashSet::new();
        loop {
            let a = read(&self.conn, after).map_err(&local)?;
            let b = read(&dest.conn, after).map_err(pe)?;
            if let Some((x, y)) = a.iter().zip(&b).find(|(x, y)| x != y) {
                report.mismatch =
                    Some(format!("message {} (hash {}) here, {} (hash {}) in the destination", x.1, x.2, y.1, y.2));
                progress.finish();
                return Ok(());
            }
            let Some(last) = a.last() else { break };
            after = last.0;
            if let (Some(remote), Some(dblobs)) = (&dest.remote, &dest.blobs) {
                for (_, id, hash, live, size) in &a {
                    if *live == 0 || !checked.insert(hash.clone()) {
                        continue;
                    }
                    let path = self.blobs.path_of(hash);
                    let want = fs::metadata(&path).map_err(Error::io("stat", &path))?.len();
                    match remote.head(hash)? {
                        None => {
                            report.mismatch = Some(format!("message {id}: object {} is missing", remote.url_of(hash)));
                            return Ok(());
                        }
                        Some(info) if info.size != want && !deep => {
                            report.mismatch = Some(format!(
                                "message {id}: object {} is {} bytes, the local blob {want}",
                                remote.url_of(hash),
                                info.size
                            ));
                            return Ok(());
                        }
                        Some(_) => {}
                    }
                    if deep && !dblobs.existing_is_intact(hash, *size as u64)? {
                        report.mismatch = Some(format!(
                            "message {id}: object {} does not decompress to its hash",
                            remote.url_of(hash)
                        ));
                        return Ok(());
                    }
                    report.objects_checked += 1;
                }
            }
            progress.advance(a.len() as u64);
        }
        progress.finish();

        // Every audit row's links, not only the head: a row that differs would break `log --verify` there.
        let q = format!("SELECT seq, prev_hash, hash FROM audit WHERE seq > ?1 ORDER BY seq LIMIT {BATCH}");
        type Link = (i64, Option<String>, Option<String>);
        let links = |c: &Conn, after: i64| -> rusqlite::Result<Vec<Link>> {
            c.prepare_cached(&q)?.query_map([after], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect()
        };
        let mut after = i64::MIN;
        loop {
            let a = links(&self.conn, after).map_err(&local)?;
            let b = links(&dest.conn, after).map_err(pe)?;
            if let Some((x, y)) = a.iter().zip(&b).find(|(x, y)| x != y) {
                report.mismatch = Some(format!(
                    "audit row #{}: hash {} here, #{} hash {} in the destination",
                    x.0,
                    x.2.as_deref().unwrap_or("-"),
                    y.0,
                    y.2.as_deref().unwrap_or("-")
                ));
                return Ok(());
            }
            let Some(last) = a.last() else { break };
            after = last.0;
        }

        let head = |c: &Conn| -> rusqlite::Result<Option<crate::audit::Head>> {
            c.query_row("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", [], |r| {
                Ok(crate::audit::Head { seq: r.get(0)?, hash: r.get::<_, Option<String>>(1)?.unwrap_or_default() })
            })
            .optional()
        };
        let (a, b) = (head(&self.conn).map_err(&local)?, head(&dest.conn).map_err(pe)?);
        if a != b {
            report.mismatch = Some(format!("audit head: {a:?} here, {b:?} in the destination"));
            return Ok(());
        }
        report.audit_head = a;
        Ok(())
    }
}

/// Triggers that make the old local index refuse every write to mail, recipients and the audit trail once the
/// store has moved, committed with the marker.
///
/// # Why
/// A `release` or `purge` that opened the store before the switch and waited for the write lock would otherwise
/// claim recipients in the old index (which the shared index still shows as held: a later release there would
/// deliver them twice) or purge rows nobody reads. Only ingest re-checks the marker; a trigger catches every
/// writer, whatever it is, at its first statement, and its transaction rolls back with this message. Migrations
/// of the marker index never write these tables' rows (they only add columns and indexes), so they are not hit.
fn stale_writer_guards(index: &str) -> String {
    let why = format!(
        "this store moved to the shared index {index} (quarantine migrate); run the command with that `index` (and \
         `blobs`) in the config"
    )
    .replace('\'', "''");
    let mut sql = String::new();
    for (table, ops) in [
        ("messages", &["INSERT", "UPDATE", "DELETE"][..]),
        ("recipients", &["INSERT", "UPDATE", "DELETE"][..]),
        ("attachments", &["INSERT"][..]),
        ("message_scan", &["INSERT"][..]),
        ("audit", &["INSERT"][..]),
        ("gc_queue", &["INSERT", "DELETE"][..]),
    ] {
        for op in ops {
            let name = format!("moved_no_{}_{}", op.to_lowercase(), table);
            sql.push_str(&format!(
                "CREATE TRIGGER IF NOT EXISTS {name} BEFORE {op} ON {table} BEGIN SELECT RAISE(ABORT, '{why}'); END;\n"
            ));
        }
    }
    sql
}
