//! `quarantine migrate` (issue 16 item 5) against a real PostgreSQL and a real SeaweedFS from the testkit: an
//! embedded store with held, released and purged mail and an audit trail is copied, and afterwards the new config
//! shows the same mail byte for byte; a SIGKILL mid-copy and a rerun converge to a complete copy; holds during the
//! copy are kept and reach the destination; the old config is refused.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use quarantine_testkit::postgres;
use quarantine_testkit::run::{run_killed_after, spawn, wait};
use quarantine_testkit::s3::{Bucket, Weed};
use quarantine_testkit::sink::Sink;
use quarantine_testkit::{Input, Out, Scratch, Store};

use crate::BIN;

const PREFIX: &str = "moved";

/// An embedded store (SQLite, local blobs) whatever QUARANTINE_TEST_INDEX says: migrate's source.
fn embedded() -> Store {
    let scratch = Scratch::new(BIN);
    std::fs::write(scratch.config(), "").unwrap();
    let root = scratch.path().join("store");
    let s = Store { scratch, root };
    s.q(&["init"]).code_is(0, "init");
    s
}

fn message(n: usize) -> Vec<u8> {
    let mut m = format!(
        "From: a{n}@example.org\r\nTo: b@example.net\r\nSubject: moving {n}\r\nMessage-ID: <m{n}@example.org>\r\n\r\n"
    )
    .into_bytes();
    m.extend((0..3000u32).map(|i| (i.wrapping_mul(17).wrapping_add(n as u32) % 256) as u8));
    m.extend_from_slice(b"\r\nend\r\n");
    m
}

fn hold(s: &Store, n: usize) -> Out {
    let verdict = if n.is_multiple_of(2) { "SPAM" } else { "PMX:VIRUS" };
    s.hold(&message(n), &["--verdict", verdict, "--from", "a@example.org", "--", "u@example.net", "v@example.net"])
}

/// The old config plus `[s3]` (the endpoint `--to-blobs` connects to): blobs still local.
fn with_s3_settings(s: &Store, weed: &Weed) {
    std::fs::write(s.config(), format!("[s3]\nendpoint = \"{}\"\n", weed.endpoint())).unwrap();
}

/// The config after the move: the database and the bucket.
fn new_config(s: &Store, db: &str, bucket: &Bucket) {
    std::fs::write(s.config(), format!("index = \"{db}\"\n{}", bucket.config(PREFIX))).unwrap();
}

fn migrate_args<'a>(db: &'a str, blobs: &'a str) -> Vec<&'a str> {
    vec!["migrate", "--to-index", db, "--to-blobs", blobs, "--json"]
}

fn report(out: &Out) -> serde_json::Value {
    serde_json::from_str(out.text().trim()).unwrap_or_else(|e| panic!("migrate --json: {e}: {}", out.all()))
}

/// What an admin sees of the store: every search (held, released, purged), each original, an export, the log.
struct View {
    search: String,
    purged: String,
    raws: Vec<Vec<u8>>,
    export: Vec<(String, Vec<u8>)>,
    log: String,
}

fn view(s: &Store, ids: &[String], name: &str) -> View {
    let search = s.q(&["search", "--json", "--state", "held", "--state", "released"]).ok();
    let purged = s.q(&["search", "--json", "--state", "purged"]).ok();
    let raws = ids.iter().filter(|id| !purged.contains(id.as_str())).map(|id| s.raw(id)).collect();
    let dir = s.work().join(name);
    let dir_arg = dir.display().to_string();
    s.q(&["export", "--verdict", "SPAM", "--verdict", "PMX:VIRUS", "--to", &dir_arg]).code_is(0, "export");
    let mut export: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    export.sort();
    // The export itself is an audit row: the log is read before and compared without it.
    let log = s.q(&["log", "--json"]).ok();
    View { search, purged, raws, export, log }
}

fn assert_same(a: &View, b: &View) {
    assert_eq!(a.search, b.search, "search after the move");
    assert_eq!(a.purged, b.purged, "search --state purged after the move");
    assert!(a.raws == b.raws, "show --raw after the move differs");
    assert_eq!(a.export.len(), b.export.len(), "export file count");
    for (x, y) in a.export.iter().zip(&b.export) {
        assert!(x == y, "export file {} differs after the move", x.0);
    }
    assert!(b.log.starts_with(&a.log), "the audit log goes on from the old one:\nold {}\nnew {}", a.log, b.log);
}

fn pg_count(db: &str, sql: &str) -> u64 {
    postgres::server().psql(db, sql).trim().parse().unwrap()
}

/// A store with held, released and purged messages, a freeze and audit rows; returns it and its ids.
fn populated(n: usize) -> (Store, Vec<String>) {
    let s = embedded();
    let ids: Vec<String> = (0..n).map(|i| hold(&s, i).id()).collect();
    s.ingest();
    let sink = Sink::start(&[]);
    s.q(&["release", "--id", &ids[0], "--relay", &sink.url(), "--yes", "--reason", "fp"]).code_is(0, "release");
    s.q(&["purge", "--id", &ids[1], "--yes", "--reason", "gone"]).code_is(0, "purge");
    s.q(&["freeze", "--reason", "during the move"]).code_is(0, "freeze");
    (s, ids)
}

#[test]
fn held_released_purged_mail_and_the_audit_trail_migrate_byte_exact() {
    let weed = Weed::shared();
    let bucket = weed.bucket();
    let db = postgres::database();
    let (s, ids) = populated(6);
    let before = view(&s, &ids, "export-before");
    let head_before = s.q(&["log", "--verify", "--json"]).ok();

    with_s3_settings(&s, weed);
    let blobs = format!("s3://{}/{PREFIX}", bucket.name);
    let out = s.q(&migrate_args(&db, &blobs));
    out.code_is(0, "migrate");
    let r = report(&out);
    assert!(r["mismatch"].is_null(), "{r}");
    assert_eq!(r["uploaded"].as_u64(), Some(5), "five live blobs uploaded, the purged one not: {r}");

    // The old config is refused, naming what to set.
    let old = s.q(&["search", "--verdict", "SPAM"]);
    old.code_is(1, "search with the old config");
    assert!(old.all().contains("in the config"), "{}", old.all());

    // The index alone is not enough: new mail in blobs/ would be invisible to the other gateways.
    std::fs::write(s.config(), format!("index = \"{db}\"\n")).unwrap();
    let half = s.q(&["search", "--verdict", "SPAM"]);
    half.code_is(1, "search with the index but not the blobs");
    assert!(half.all().contains("set `blobs`"), "{}", half.all());

    new_config(&s, &db, &bucket);
    let after = view(&s, &ids, "export-after");
    assert_same(&before, &after);
    s.q(&["log", "--verify"]).code_is(0, "log --verify on the destination");
    let head_after = s.q(&["log", "--verify", "--json"]).ok();
    let head = |j: &str| serde_json::from_str::<serde_json::Value>(j).unwrap()["head"].clone();
    // The export on the new side added rows after the old head, so the old head is an earlier row there.
    assert!(head(&head_after)["seq"].as_i64() > head(&head_before)["seq"].as_i64());
    s.q(&["log", "--verify", "--from-anchor", head(&head_before)["hash"].as_str().unwrap()])
        .code_is(0, "the old head anchors the new chain");
    assert_eq!(pg_count(&db, "SELECT count(*) FROM settings WHERE key = 'frozen'"), 1, "the freeze came along");

    // The chain continues from the copied head.
    let id = hold(&s, 100).id();
    s.ingest();
    s.q(&["log", "--verify"]).code_is(0, "log --verify after new writes");
    assert_eq!(s.raw(&id), message(100));
    s.q(&["verify", "--deep"]).code_is(0, "verify --deep on the new backends");
}

/// A random delay below `limit` (printed, so a failure can be replayed by hand).
fn random_below(limit: Duration) -> Duration {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    let d = Duration::from_micros(h.finish() % (limit.as_micros().max(1) as u64));
    eprintln!("killing migrate after {d:?} (a full run took {limit:?})");
    d
}

#[test]
fn sigkill_during_migrate_and_a_rerun_give_a_complete_verified_copy() {
    let weed = Weed::shared();
    let (template, ids) = populated(120);
    // How long a whole run takes here, to kill the next one somewhere inside it.
    let full = {
        let s = Store::copy_of(&template);
        with_s3_settings(&s, weed);
        let (db, bucket) = (postgres::database(), weed.bucket());
        let started = Instant::now();
        s.q(&migrate_args(&db, &format!("s3://{}/{PREFIX}", bucket.name))).code_is(0, "migrate (timing run)");
        started.elapsed()
    };
    let s = Store::copy_of(&template);
    with_s3_settings(&s, weed);
    let (db, bucket) = (postgres::database(), weed.bucket());
    let blobs = format!("s3://{}/{PREFIX}", bucket.name);
    let killed = run_killed_after(s.cmd(&migrate_args(&db, &blobs)), Input::Null, random_below(full));
    let rerun = s.q(&migrate_args(&db, &blobs));
    if killed.success() {
        // It finished before the kill: the store is switched and says so.
        rerun.code_is(1, "migrate again after a complete run");
    } else {
        rerun.code_is(0, "migrate after the kill");
        assert!(report(&rerun)["mismatch"].is_null(), "{}", rerun.all());
    }
    assert_eq!(pg_count(&db, "SELECT count(*) FROM messages"), 120, "no duplicate or missing message");
    assert_eq!(pg_count(&db, "SELECT count(*) FROM recipients"), 240, "no duplicate or missing recipient");
    assert_eq!(
        pg_count(&db, "SELECT count(*) FROM (SELECT seq FROM audit GROUP BY seq HAVING count(*) > 1) d"),
        0,
        "no duplicate audit row"
    );
    new_config(&s, &db, &bucket);
    s.q(&["log", "--verify"]).code_is(0, "log --verify after the rerun");
    s.q(&["verify", "--deep"]).code_is(0, "verify --deep after the rerun");
    for id in ids.iter().skip(2).step_by(17) {
        let n: usize = ids.iter().position(|x| x == id).unwrap();
        assert_eq!(s.raw(id), message(n), "{id} byte-exact after the rerun");
    }
}

#[test]
fn holds_and_ingests_during_migrate_lose_nothing_and_reach_the_destination() {
    let weed = Weed::shared();
    let (s, _) = populated(60);
    with_s3_settings(&s, weed);
    let (db, bucket) = (postgres::database(), weed.bucket());
    let blobs = format!("s3://{}/{PREFIX}", bucket.name);
    let mut cmd = s.cmd(&migrate_args(&db, &blobs));
    let started = Instant::now();
    let (mut child, _) = spawn(&mut cmd, &Input::Null);
    let mut held = Vec::new();
    let mut n = 1000;
    // At least a few holds, and more as long as migrate runs.
    while held.len() < 3 || child.try_wait().unwrap().is_none() {
        let out = hold(&s, n);
        out.code_is(0, "hold during migrate");
        held.push((n, out.id()));
        n += 1;
        // An ingest with the old config beside it: into the local index before the switch (the final pass
        // copies it), refused after it; never into the abandoned local index once switched.
        let ing = s.q(&["ingest"]);
        if !ing.success() {
            ing.code_is(1, "ingest with the old config during migrate");
            assert!(ing.all().contains("in the config"), "{}", ing.all());
        }
    }
    let out = wait(child, "migrate", Some(quarantine_testkit::HANG), None, started);
    out.code_is(0, "migrate");
    new_config(&s, &db, &bucket);
    s.ingest();
    assert!(s.spool_files().is_empty(), "the spool drained into the destination");
    for (n, id) in &held {
        assert_eq!(s.raw(id), message(*n), "{id}, held during the migrate, is in the destination");
    }
    assert_eq!(
        pg_count(&db, "SELECT count(*) FROM messages"),
        60 + held.len() as u64,
        "every message, old and held meanwhile"
    );
    s.q(&["log", "--verify"]).code_is(0, "log --verify");
}

#[test]
fn migrate_refuses_a_destination_holding_another_stores_mail() {
    let weed = Weed::shared();
    let db = postgres::database();
    let bucket = weed.bucket();
    let blobs = format!("s3://{}/{PREFIX}", bucket.name);
    let (a, _) = populated(3);
    with_s3_settings(&a, weed);
    a.q(&migrate_args(&db, &blobs)).code_is(0, "first store's migrate");
    let (b, _) = populated(3);
    with_s3_settings(&b, weed);
    let out = b.q(&migrate_args(&db, &blobs));
    out.code_is(1, "second store into the same database");
    assert!(out.all().contains("another quarantine"), "{}", out.all());
    // The refused store still opens as it was.
    b.q(&["search", "--verdict", "SPAM"]).code_is(0, "the refused store is untouched");
}

#[test]
fn index_only_migration_keeps_blobs_local_and_holds_after_the_switch_are_kept() {
    let db = postgres::database();
    let (s, ids) = populated(4);
    let out = s.q(&["migrate", "--to-index", &db, "--json"]);
    out.code_is(0, "migrate --to-index");
    let r = report(&out);
    assert_eq!(r["uploaded"].as_u64(), Some(0), "no object store: nothing uploaded: {r}");
    // Intake with the old config still exits 0 after the switch: hold only writes the spool.
    let late = hold(&s, 200);
    late.code_is(0, "hold with the old config after the switch");
    let late = late.id();
    s.q(&["search", "--verdict", "SPAM"]).code_is(1, "search with the old config");
    // A writer that opened the store before the switch (a release or purge waiting for the write lock) meets the
    // old index's guards at its first write: its transaction rolls back, naming where the store went.
    let state = "SELECT count(*), sum(state = 'held'), (SELECT count(*) FROM messages WHERE purged_us IS NULL) \
                 FROM recipients";
    let before = s.sqlite(state).stdout;
    for stale in [
        "UPDATE recipients SET state = 'releasing' WHERE state = 'held'",
        "UPDATE messages SET purged_us = 1",
        "DELETE FROM recipients",
        "INSERT INTO gc_queue (hash, queued_us) VALUES ('x', 1)",
    ] {
        let out = s.sqlite(stale);
        assert_ne!(out.code, 0, "{stale}: written into the old index: {}", out.all());
        assert!(out.all().contains("moved to the shared index"), "{stale}: {}", out.all());
    }
    assert_eq!(s.sqlite(state).stdout, before, "the old index is as the switch left it");

    std::fs::write(s.config(), format!("index = \"{db}\"\n")).unwrap();
    s.ingest();
    assert!(s.spool_files().is_empty(), "the spool drained into PostgreSQL");
    assert_eq!(s.raw(&late), message(200));
    assert_eq!(s.raw(&ids[2]), message(2));
    assert_eq!(pg_count(&db, "SELECT count(*) FROM messages"), 5);
    s.q(&["log", "--verify"]).code_is(0, "log --verify");
    s.q(&["verify", "--deep"]).code_is(0, "verify --deep with local blobs");
}

#[test]
fn an_object_already_in_the_bucket_is_trusted_only_if_it_checks_and_a_differing_audit_row_is_named() {
    let weed = Weed::shared();
    let db = postgres::database();
    let bucket = weed.bucket();
    let blobs = format!("s3://{}/{PREFIX}", bucket.name);
    let (template, ids) = populated(4);
    let hash = template.show_json(&ids[2])["hash"].as_str().unwrap().to_string();
    // Garbage under a live blob's name: a create-only PUT finds it, the check replaces it.
    bucket.put(&format!("{PREFIX}/{hash}"), b"not a zstd frame");
    let a = Store::copy_of(&template);
    with_s3_settings(&a, weed);
    let r = report(a.q(&migrate_args(&db, &blobs)).code_is(0, "migrate"));
    assert_eq!(r["uploaded"].as_u64(), Some(3), "{r}");
    new_config(&a, &db, &bucket);
    assert_eq!(a.raw(&ids[2]), message(2), "the bad object was replaced by the blob's bytes");

    // The same store again (a copy: the same genesis) into a database whose first audit row was altered.
    postgres::server().psql(
        &db,
        "ALTER TABLE audit DISABLE TRIGGER audit_no_update; UPDATE audit SET hash = repeat('0', 64) WHERE seq = 1; \
         ALTER TABLE audit ENABLE TRIGGER audit_no_update",
    );
    let b = Store::copy_of(&template);
    with_s3_settings(&b, weed);
    let out = b.q(&migrate_args(&db, &blobs));
    out.code_is(1, "migrate into an altered copy");
    let r = report(&out);
    assert!(r["mismatch"].as_str().unwrap_or("").starts_with("audit row #1:"), "{r}");
    b.q(&["search", "--verdict", "SPAM"]).code_is(0, "not switched: the old config still opens it");
}
