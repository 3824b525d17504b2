//! Several gateways on both shared backends at once (DESIGN section 11, issue 16 "Tests"): two store directories,
//! each with its own spool and config, whose `index` is one PostgreSQL database and whose `blobs` are one SeaweedFS
//! bucket (the same prefix, so the same bytes are one object). Everything is a real server the testkit starts:
//! concurrent intake, reads of one node's mail on the other, releases and purges racing across nodes, and outages
//! of each backend in the middle of ingest.

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Stdio};
use std::time::Instant;

use quarantine_testkit::postgres::{self, Server};
use quarantine_testkit::run::{finish, wait_for};
use quarantine_testkit::s3::{Bucket, Weed};
use quarantine_testkit::sink::Sink;
use quarantine_testkit::{Out, Scratch, Store};

use crate::BIN;

/// The key prefix every gateway of a test shares: one namespace of objects for one quarantine.
const PREFIX: &str = "site";

/// A gateway: a store directory of its own on the shared database `conninfo` and bucket.
fn gateway(conninfo: &str, bucket: &Bucket) -> Store {
    let scratch = Scratch::new(BIN);
    std::fs::write(scratch.config(), format!("index = \"{conninfo}\"\n{}", bucket.config(PREFIX))).unwrap();
    let root = scratch.path().join("store");
    let s = Store { scratch, root };
    s.q(&["init"]).code_is(0, "init");
    s
}

/// Message `i` of `node`: distinct bytes per (node, i), binary content a text path would mangle, a dot line.
fn message(node: &str, i: usize) -> Vec<u8> {
    let mut m =
        format!("From: {node}@example.org\r\nSubject: {node} {i}\r\nMessage-ID: <{node}.{i}@x>\r\n\r\n").into_bytes();
    m.extend((0..3000u32).map(|k| (k.wrapping_mul(37).wrapping_add(i as u32 * 7) % 256) as u8));
    m.extend_from_slice(b"\r\n.\r\nend\r\n");
    m
}

fn hold(s: &Store, msg: &[u8], verdict: &str) -> String {
    s.hold_ok(msg, &["--verdict", verdict, "--from", "a@example.org", "--", "r1@example.net", "r2@example.net"])
}

fn spawn(s: &Store, args: &[&str]) -> Child {
    let mut c = s.cmd(args);
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c.spawn().unwrap()
}

/// Every message `search --json` lists (live ones): id → subject.
fn listing(s: &Store) -> BTreeMap<String, String> {
    let out = s.q(&["search", "--json"]);
    out.code_is(0, "search --json");
    out.text()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["id"].as_str().unwrap().to_string(), v["subject"].as_str().unwrap().to_string())
        })
        .collect()
}

/// Every acknowledged message (id → original bytes) is in the shared index exactly once, byte-exact when read
/// through the other gateway, and both gateways verify clean.
fn all_held_once(a: &Store, b: &Store, held: &[(String, Vec<u8>)]) {
    let listed = listing(a);
    assert_eq!(listed.len(), held.len(), "every acknowledged message held exactly once");
    for (id, m) in held {
        assert!(listed.contains_key(id), "{id} is held");
        assert_eq!(b.raw(id), *m, "{id} byte-exact");
    }
    a.verify_deep_clean("gateway a after the outages");
    b.verify_deep_clean("gateway b after the outages");
}

/// Holds 24 messages of its own and then `same` on `s`, with an ingest running in the background every 8 holds;
/// the ids and bytes acknowledged.
fn hold_while_ingesting(s: &Store, name: &str, same: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut ids = Vec::new();
    let mut ingest = None;
    for i in 0..24 {
        ids.push((hold(s, &message(name, i), "SPAM"), message(name, i)));
        if i % 8 == 0 {
            if let Some(c) = ingest.take() {
                finish(c, "ingest", Instant::now()).code_is(0, &format!("ingest on {name}"));
            }
            ingest = Some(spawn(s, &["ingest"]));
        }
    }
    ids.push((hold(s, same, "SPAM"), same.to_vec()));
    if let Some(c) = ingest {
        finish(c, "ingest", Instant::now()).code_is(0, &format!("ingest on {name}"));
    }
    ids
}

fn hash_of(s: &Store, id: &str) -> String {
    s.show_json(id)["hash"].as_str().expect("show --json has the hash").to_string()
}

/// Both gateways hold and ingest at the same time; either one's search finds both nodes' mail; a message held on
/// A reads back byte-exact on B (`show --raw` and `export`: the bytes come from the bucket, B never had them); the
/// same bytes held on both gateways are one object.
#[test]
fn gateways_ingest_at_once_and_read_each_others_mail_from_the_bucket() {
    let db = postgres::database();
    let bucket = Weed::shared().bucket();
    let (a, b) = (gateway(&db, &bucket), gateway(&db, &bucket));
    let same = message("both", 0);

    // Each gateway holds its own mail while both ingest, twice over, so ingests of one node race the other's.
    let (ids_a, ids_b) = std::thread::scope(|t| {
        let ta = t.spawn(|| hold_while_ingesting(&a, "a", &same));
        let tb = t.spawn(|| hold_while_ingesting(&b, "b", &same));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    let (ia, ib) = (spawn(&a, &["ingest"]), spawn(&b, &["ingest"]));
    finish(ia, "ingest a", Instant::now()).code_is(0, "final ingest on a");
    finish(ib, "ingest b", Instant::now()).code_is(0, "final ingest on b");
    assert!(a.spool_files().is_empty() && b.spool_files().is_empty(), "both spools drained");
    assert!(a.blob_files().is_empty() && b.blob_files().is_empty(), "no blob under either STORE/blobs/");

    let all = listing(&a);
    assert_eq!(all.len(), 50, "a sees both nodes' mail, each message once: {all:?}");
    assert_eq!(listing(&b), all, "b sees the same");
    for (id, _) in ids_a.iter().chain(&ids_b) {
        assert!(all.contains_key(id), "{id} (acknowledged by hold) is listed");
    }

    // A's mail read on B, and B's on A: byte-exact, from the bucket.
    let dir = b.work().join("export");
    let dir_arg = dir.display().to_string();
    for (id, m) in ids_a.iter().step_by(5) {
        assert_eq!(b.raw(id), *m, "show --raw on b of a's {id}");
        b.q(&["export", "--id", id, "--to", &dir_arg]).code_is(0, "export on b of a's message");
        assert_eq!(std::fs::read(dir.join(format!("{id}.eml"))).unwrap(), *m, "export on b of a's {id}");
    }
    for (id, m) in ids_b.iter().step_by(5) {
        assert_eq!(a.raw(id), *m, "show --raw on a of b's {id}");
    }

    // The message both gateways held: two ids (two deliveries), one hash, one object.
    let (sa, sb) = (&ids_a.last().unwrap().0, &ids_b.last().unwrap().0);
    assert_ne!(sa, sb, "two deliveries are two messages");
    let h = hash_of(&a, sa);
    assert_eq!(hash_of(&b, sb), h, "the same bytes, the same name");
    let keys = bucket.keys(&format!("{PREFIX}/"));
    assert_eq!(keys.iter().filter(|k| k.ends_with(&h)).count(), 1, "one object for both: {keys:?}");
    assert_eq!(keys.len(), 49, "one object per distinct message (48 + the shared one): {keys:?}");
    a.verify_deep_clean("gateway a");
    b.verify_deep_clean("gateway b");
}

/// `release` started on both gateways at once over one selection that spans both nodes' mail delivers each
/// recipient exactly once (each node sends the other's mail too: its bytes come from the bucket), and the audit
/// chain that both append to does not fork.
#[test]
fn gateways_release_one_selection_at_once_delivering_each_recipient_once() {
    let db = postgres::database();
    let bucket = Weed::shared().bucket();
    let (a, b) = (gateway(&db, &bucket), gateway(&db, &bucket));
    for i in 0..30 {
        hold(&a, &message("a", i), "PMX:VIRUS");
        hold(&b, &message("b", i), "PMX:VIRUS");
    }
    // Held under another verdict on both: outside the selection, must stay held.
    hold(&a, &message("a", 99), "SPAM");
    hold(&b, &message("b", 99), "SPAM");
    let (ia, ib) = (spawn(&a, &["ingest"]), spawn(&b, &["ingest"]));
    finish(ia, "ingest a", Instant::now()).code_is(0, "ingest a");
    finish(ib, "ingest b", Instant::now()).code_is(0, "ingest b");

    let sink = Sink::start(&[]);
    let args = ["release", "--verdict", "PMX:VIRUS", "--relay", &sink.url(), "--yes"];
    let runs = [spawn(&a, &args), spawn(&b, &args), spawn(&a, &args), spawn(&b, &args)];
    let outs: Vec<Out> = runs.into_iter().map(|c| finish(c, "release", Instant::now())).collect();
    let report = outs.iter().map(Out::all).collect::<Vec<_>>().join("\n---\n");
    for r in &outs {
        // 1: a run that found recipients another run had claimed reports them as not sent by it.
        assert!(r.code == 0 || r.code == 1, "release exited {}: {report}", r.code);
    }
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for m in sink.messages() {
        let text = String::from_utf8_lossy(&m.body);
        let subject = text.lines().find_map(|l| l.strip_prefix("Subject: ").map(str::to_string)).unwrap();
        for r in m.rcpt_addrs() {
            *seen.entry((subject.clone(), r)).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 120, "every recipient of all 60 messages delivered\n{report}");
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n != 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}\n{report}");
    assert!(!seen.keys().any(|(s, _)| s.ends_with(" 99")), "nothing outside the selection was sent");
    for s in [&a, &b] {
        s.q(&["log", "--verify"]).code_is(0, "log --verify: the audit chain did not fork");
    }
    let again = b.q(&["release", "--verdict", "PMX:VIRUS", "--relay", &sink.url(), "--yes"]);
    assert!(again.text().contains("skipped 120"), "a third release finds every recipient released: {}", again.all());
}

/// `purge` on one gateway while the other holds and ingests, where the other's new mail has the same bytes as what
/// is purged (the GC's deletes race that node's create-only uploads of the same objects) and with no grace at all,
/// over several rounds: afterwards every live row's object is there (`verify --deep` clean on both), and every
/// message held is either live or purged by the rule, counted.
#[test]
fn gateways_purge_on_one_while_the_other_ingests_loses_nothing() {
    let db = postgres::database();
    let bucket = Weed::shared().bucket();
    let (a, b) = (gateway(&db, &bucket), gateway(&db, &bucket));
    let (mut old, mut new) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let (first, last) = (round * 30, round * 30 + 30);
        old.extend((first..last).map(|i| hold(&a, &message("m", i), "OLD")));
        a.ingest();
        // b's spool: the same 30 messages again (so their objects are wanted again) and 10 of its own.
        for i in first..last {
            new.push((hold(&b, &message("m", i), "NEW"), message("m", i)));
        }
        std::thread::scope(|t| {
            let purge = t.spawn(|| a.q(&["purge", "--verdict", "OLD", "--orphan-grace", "0s", "--yes"]));
            let ingest = spawn(&b, &["ingest"]);
            for i in first..first + 10 {
                new.push((hold(&b, &message("b", i), "NEW"), message("b", i)));
            }
            finish(ingest, "ingest on b", Instant::now()).code_is(0, "ingest on b while a purges");
            purge.join().unwrap().code_is(0, "purge on a while b ingests");
        });
    }
    b.ingest();
    // One more purge with no grace: every object is old enough now, and those b's rows reference must stay.
    a.q(&["purge", "--verdict", "OLD", "--orphan-grace", "0s", "--yes"]).code_is(0, "purge again");

    let live = listing(&b);
    assert_eq!(listing(&a), live, "both gateways see one index");
    let want: std::collections::BTreeSet<&String> = new.iter().map(|(id, _)| id).collect();
    assert_eq!(live.keys().collect::<std::collections::BTreeSet<_>>(), want, "live: exactly what b held");
    for id in &old {
        let v = a.show_json(id);
        assert!(!v["purged_at"].is_null(), "{id} purged by the rule: {v}");
    }
    assert_eq!(a.sql_count("SELECT count(*) FROM messages"), 210, "90 purged tombstones + 120 live rows");
    assert_eq!(a.sql_count("SELECT count(*) FROM messages WHERE purged_us IS NOT NULL AND verdict = 'OLD'"), 90);
    a.verify_deep_clean("gateway a after the race");
    b.verify_deep_clean("gateway b after the race");
    for (id, m) in &new {
        assert_eq!(a.raw(id), *m, "{id} byte-exact after the purges");
    }
}

/// The writers' advisory lock every write transaction takes on PostgreSQL (`store/src/db/pg.rs`, 'QRNT').
const WRITE_LOCK: i64 = 0x5152_4e54;

/// How many sessions wait for [`WRITE_LOCK`] on the database `conninfo` (a single-key advisory lock shows its key
/// in `objid`; advisory locks are per database, and other tests' databases share the server).
fn lock_waiters(pg: &Server, conninfo: &str) -> usize {
    let sql =
        format!("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = {WRITE_LOCK} AND objsubid = 1 AND NOT granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())");
    pg.psql(conninfo, &sql).trim().parse().unwrap()
}

/// A psql session, named `name`, that takes [`WRITE_LOCK`] and keeps it until [`Holder::release`]: where it stands in
/// the lock's queue decides which of the other writers goes first.
struct Holder<'s> {
    pg: &'s Server,
    name: &'static str,
    conninfo: String,
    child: Child,
}

impl<'s> Holder<'s> {
    /// Starts the session and asks for the lock (it may queue behind others).
    fn ask(pg: &'s Server, conninfo: &str, name: &'static str) -> Holder<'s> {
        use std::io::Write;
        let mut child = std::process::Command::new(std::path::Path::new(postgres::BIN).join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &format!("{conninfo} application_name={name}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let sql = child.stdin.as_mut().unwrap();
        writeln!(sql, "BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK});").unwrap();
        sql.flush().unwrap();
        Holder { pg, name, conninfo: conninfo.to_string(), child }
    }

    fn holds(&self) -> bool {
        let sql = format!(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory' \
             AND l.objid = {WRITE_LOCK} AND l.objsubid = 1 AND l.granted AND a.application_name = '{}' \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            self.name
        );
        self.pg.psql(&self.conninfo, &sql).trim() == "1"
    }

    fn release(mut self) {
        use std::io::Write;
        let mut sql = self.child.stdin.take().unwrap();
        writeln!(sql, "COMMIT;").unwrap();
        drop(sql);
        assert!(self.child.wait().unwrap().success(), "psql {} committed", self.name);
    }

    /// For a holder whose server went away under it.
    fn abandon(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The worst interleaving of purge's GC with another node's ingest, forced rather than hoped for: B's ingest has
/// found the objects already in the bucket (create-only PUT: "already there", and they check) and waits for the
/// writers' lock, while A's GC, queued on that lock first, deletes those same unreferenced objects. B's commit
/// must not reference objects that are gone: its rows' objects are there afterwards (`verify --deep` clean on
/// both), byte-exact.
#[test]
fn gateways_gc_deleting_objects_another_node_just_found_keeps_that_nodes_rows_whole() {
    let db = postgres::database();
    let bucket = Weed::shared().bucket();
    let (a, b) = (gateway(&db, &bucket), gateway(&db, &bucket));
    let msgs: Vec<Vec<u8>> = (0..10).map(|i| message("gc", i)).collect();
    for m in &msgs {
        hold(&a, m, "OLD");
    }
    a.ingest();
    // Tombstoned, their objects queued for GC and kept for now (uploaded within the default grace).
    a.q(&["purge", "--verdict", "OLD", "--yes"]).code_is(0, "purge with the default grace");
    assert_eq!(a.sql_count("SELECT count(*) FROM gc_queue"), 10, "the objects wait in the GC queue");
    assert_eq!(bucket.keys(&format!("{PREFIX}/")).len(), 10, "and are still in the bucket");
    let ids: Vec<String> = msgs.iter().map(|m| hold(&b, m, "NEW")).collect();

    // The queue for the lock, built one step at a time: purge writes its audit row in a first write transaction
    // and runs its GC in the next, so a second holder lets the first one through and keeps the GC waiting.
    let limit = std::time::Duration::from_secs(120);
    let pg = postgres::server();
    let first = Holder::ask(pg, &db, "first");
    wait_for(limit, "psql to hold the writers' lock", || first.holds());
    let gc = spawn(&a, &["purge", "--verdict", "NOTHING", "--orphan-grace", "0s", "--yes"]);
    wait_for(limit, "the purge to wait for the lock", || lock_waiters(pg, &db) == 1);
    let second = Holder::ask(pg, &db, "second");
    wait_for(limit, "the second holder to queue", || lock_waiters(pg, &db) == 2);
    first.release();
    // The purge's audit row went through; now its GC waits behind the second holder.
    wait_for(limit, "the GC to queue behind the second holder", || second.holds() && lock_waiters(pg, &db) == 1);
    // Last in the queue: b's ingest, whose create-only uploads found the objects in place, waiting to commit.
    let ingest = spawn(&b, &["ingest"]);
    wait_for(limit, "b's ingest to wait for the lock", || lock_waiters(pg, &db) == 2);
    second.release();
    let gc = finish(gc, "purge", Instant::now());
    gc.code_is(0, "the GC");
    finish(ingest, "ingest on b", Instant::now()).code_is(0, "ingest on b after the GC");

    // The GC's first batch runs before b's commit; later batches (bounded in time) may come after it and find
    // those rows live. At least one object b's ingest had found was deleted under it.
    let removed: u64 = gc
        .text()
        .split("removed ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("purge says how many objects it removed: {}", gc.all()));
    assert!(removed >= 1, "the GC deleted queued objects before b's commit: {}", gc.all());
    a.verify_deep_clean("a after the GC deleted objects b's ingest had found");
    b.verify_deep_clean("b after the GC deleted objects its ingest had found");
    for (id, m) in ids.iter().zip(&msgs) {
        assert_eq!(a.raw(id), *m, "{id} byte-exact");
    }
}

/// PostgreSQL stops in the middle of ingest, then (once it is back) the object store does: holds keep exiting 0
/// throughout, `check` exits 75 naming the part that is down, ingest resumes when each returns, and every
/// acknowledged message ends up held exactly once, byte-exact.
#[test]
fn gateways_survive_a_database_then_an_object_store_outage_during_ingest() {
    let pg = Server::private();
    let db = pg.create_database();
    let weed = Weed::private();
    let bucket = weed.bucket();
    let (a, b) = (gateway(&db, &bucket), gateway(&db, &bucket));
    let mut held: Vec<(String, Vec<u8>)> = Vec::new();
    let mut n = 0;
    let mut hold_some = |count: usize, held: &mut Vec<(String, Vec<u8>)>| {
        for _ in 0..count {
            for (s, node) in [(&a, "a"), (&b, "b")] {
                let m = message(node, n);
                held.push((hold(s, &m, "SPAM"), m)); // hold_ok asserts exit 0 and an id
            }
            n += 1;
        }
    };

    let limit = std::time::Duration::from_secs(120);
    hold_some(15, &mut held);
    // In the middle of ingest, for sure: both ingests have uploaded their batches and wait for the writers' lock
    // to commit the rows when the database goes away.
    let holder = Holder::ask(&pg, &db, "holder");
    wait_for(limit, "psql to hold the writers' lock", || holder.holds());
    let (ia, ib) = (spawn(&a, &["ingest"]), spawn(&b, &["ingest"]));
    wait_for(limit, "both ingests to wait for the lock", || lock_waiters(&pg, &db) == 2);
    pg.stop_server();
    holder.abandon();
    for (c, name) in [(ia, "a"), (ib, "b")] {
        let out = finish(c, "ingest", Instant::now());
        assert_ne!(out.code, 0, "ingest on {name} lost its database before committing: {}", out.all());
    }
    hold_some(5, &mut held);
    for s in [&a, &b] {
        assert_ne!(s.q(&["ingest"]).code, 0, "ingest without the database fails");
        assert!(!s.spool_files().is_empty(), "the mail waits in the spool");
        let c = s.q(&["check"]);
        c.code_is(75, "check with the database down");
        assert!(c.all().contains("shared index is unreachable"), "{}", c.all());
    }
    pg.start_server();
    for s in [&a, &b] {
        s.q(&["ingest"]).code_is(0, "ingest once the database is back");
        assert!(s.spool_files().is_empty(), "the spool drained");
    }

    hold_some(15, &mut held);
    // In the middle of ingest again: the uploads are done, and under the lock each commit re-checks its objects
    // (HEAD) with the object store gone.
    let holder = Holder::ask(&pg, &db, "holder");
    wait_for(limit, "psql to hold the writers' lock", || holder.holds());
    let (ia, ib) = (spawn(&a, &["ingest"]), spawn(&b, &["ingest"]));
    wait_for(limit, "both ingests to wait for the lock", || lock_waiters(&pg, &db) == 2);
    weed.kill();
    holder.release();
    for (c, name) in [(ia, "a"), (ib, "b")] {
        let out = finish(c, "ingest", Instant::now());
        assert_ne!(out.code, 0, "ingest on {name} lost its object store before committing: {}", out.all());
    }
    hold_some(5, &mut held);
    for s in [&a, &b] {
        assert_ne!(s.q(&["ingest"]).code, 0, "ingest without the object store fails");
        assert!(!s.spool_files().is_empty(), "the mail waits in the spool");
        let c = s.q(&["check"]);
        c.code_is(75, "check with the object store down");
        assert!(c.stderr.contains("object store") && c.stderr.contains("unreachable"), "{}", c.all());
    }
    weed.start();
    for s in [&a, &b] {
        s.q(&["ingest"]).code_is(0, "ingest once the object store is back");
        assert!(s.spool_files().is_empty(), "the spool drained");
        s.q(&["check"]).code_is(0, "check with both backends back");
    }

    all_held_once(&a, &b, &held);
}

/// The object store down while a release and a purge run (not an ingest): the release sends nothing and keeps
/// every recipient held for a later run, which delivers each exactly once; the purge tombstones its rows (row
/// first, object second) and leaves the objects queued, and a purge once the store is back deletes them.
#[test]
fn gateways_release_and_purge_with_the_object_store_down_finish_when_it_is_back() {
    let db = postgres::database();
    let weed = Weed::private();
    let bucket = weed.bucket();
    let (a, b) = (gateway(&db, &bucket), gateway(&db, &bucket));
    for i in 0..5 {
        hold(&a, &message("rel", i), "PMX:VIRUS");
        hold(&a, &message("old", i), "OLD");
    }
    a.ingest();
    let sink = Sink::start(&[]);
    weed.kill();

    let r = b.q(&["release", "--verdict", "PMX:VIRUS", "--relay", &sink.url(), "--yes"]);
    assert_ne!(r.code, 0, "a release that could read no original says so: {}", r.all());
    assert!(sink.messages().is_empty(), "nothing was sent without the originals");
    let held = "SELECT count(*) FROM recipients r JOIN messages m ON m.id = r.message \
                WHERE m.verdict = 'PMX:VIRUS' AND r.state = 'held'";
    assert_eq!(b.sql_count(held), 10, "every recipient still held, for the next run: {}", r.all());

    let p = a.q(&["purge", "--verdict", "OLD", "--orphan-grace", "0s", "--yes"]);
    assert_eq!(p.code, 1, "objects it could not delete are per-item errors, reported: {}", p.all());
    let tombstones = "SELECT count(*) FROM messages WHERE verdict = 'OLD' AND purged_us IS NOT NULL";
    assert_eq!(a.sql_count(tombstones), 5, "the rows are purged even with the objects out of reach: {}", p.all());
    assert_eq!(a.sql_count("SELECT count(*) FROM gc_queue"), 5, "their objects wait in the GC queue: {}", p.all());

    weed.start();
    let r = b.q(&["release", "--verdict", "PMX:VIRUS", "--relay", &sink.url(), "--yes"]);
    r.code_is(0, "the release once the object store is back");
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for m in sink.messages() {
        let text = String::from_utf8_lossy(&m.body);
        let subject = text.lines().find_map(|l| l.strip_prefix("Subject: ").map(str::to_string)).unwrap();
        for r in m.rcpt_addrs() {
            *seen.entry((subject.clone(), r)).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 10, "every recipient delivered: {seen:?}");
    assert!(seen.values().all(|&n| n == 1), "each once: {seen:?}");

    a.q(&["purge", "--verdict", "OLD", "--orphan-grace", "0s", "--yes"]).code_is(0, "purge once the store is back");
    assert_eq!(a.sql_count("SELECT count(*) FROM gc_queue"), 0, "the queue drained");
    assert_eq!(bucket.keys(&format!("{PREFIX}/")).len(), 5, "only the released messages' objects are left");
    a.verify_deep_clean("a after the outage");
    a.q(&["log", "--verify"]).code_is(0, "log --verify");
}

/// A release still running on one gateway is someone else's work to every other gateway, never "in doubt": a
/// `release --retry-in-doubt` started on another host (its own UTS namespace and hostname) while the first
/// release waits in the middle of a transaction re-sends nothing, and every recipient is delivered once.
#[test]
fn gateways_a_release_running_on_another_host_is_busy_not_in_doubt() {
    use quarantine_testkit::smtp::{Script, Server as Smtp};
    use std::sync::{mpsc, Arc, Condvar, Mutex};
    let db = postgres::database();
    let bucket = Weed::shared().bucket();
    let (a, b) = (gateway(&db, &bucket), gateway(&db, &bucket));
    for i in 0..3 {
        hold(&a, &message("busy", i), "PMX:VIRUS");
    }
    a.ingest();

    // The relay stops the first transaction at its first RCPT until the test opens the gate.
    let (arrived_tx, arrived) = mpsc::channel::<()>();
    let arrived_tx = Mutex::new(Some(arrived_tx));
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let g = gate.clone();
    let relay = Smtp::start(Script::default().rcpt(move |_| {
        if let Some(tx) = arrived_tx.lock().unwrap().take() {
            tx.send(()).unwrap();
            let (open, cv) = &*g;
            let _open = cv.wait_while(open.lock().unwrap(), |o| !*o).unwrap();
        }
        "250 2.1.5 Ok".to_string()
    }));
    let first = spawn(&a, &["release", "--verdict", "PMX:VIRUS", "--relay", &relay.url(), "--yes"]);
    arrived.recv_timeout(std::time::Duration::from_secs(120)).expect("the first release reaches the relay");

    // The other host's release goes to a relay of its own: the gated one serves one session at a time.
    let sink = Sink::start(&[]);
    let mut other = b.program(quarantine_testkit::require("unshare", "util-linux"));
    other.args(["--uts", "sh", "-c", "hostname gw-elsewhere && exec \"$0\" \"$@\"", BIN]).args(b.args(&[
        "release",
        "--verdict",
        "PMX:VIRUS",
        "--retry-in-doubt",
        "--relay",
        &sink.url(),
        "--yes",
    ]));
    let second = quarantine_testkit::run::run(other, quarantine_testkit::Input::Null, quarantine_testkit::HANG);
    let (open, cv) = &*gate;
    *open.lock().unwrap() = true;
    cv.notify_all();
    let first = finish(first, "the first release", Instant::now());
    first.code_is(0, "the first release");

    let mut seen: HashMap<String, usize> = HashMap::new();
    for t in relay.transactions() {
        let subject = String::from_utf8_lossy(&t.data)
            .lines()
            .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
            .unwrap();
        for r in t.rcpt_addrs() {
            *seen.entry(format!("{subject} {r}")).or_default() += 1;
        }
    }
    for m in sink.messages() {
        let text = String::from_utf8_lossy(&m.body);
        let subject = text.lines().find_map(|l| l.strip_prefix("Subject: ").map(str::to_string)).unwrap();
        for r in m.rcpt_addrs() {
            *seen.entry(format!("{subject} {r}")).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 6, "every recipient delivered: {seen:?}\n{}\n{}", first.all(), second.all());
    assert!(
        seen.values().all(|&n| n == 1),
        "a recipient was delivered twice: {seen:?}\nthe release on the other host: {}",
        second.all()
    );
}

/// A relay that holds the first RCPT of message `nth` (counting from 1, two recipients per message) until the
/// test opens the gate; `arrived` says it got there. Everything else is accepted.
fn gated_relay(nth: usize) -> (quarantine_testkit::smtp::Server, std::sync::mpsc::Receiver<()>, Gate) {
    use quarantine_testkit::smtp::{Script, Server as Smtp};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc, Condvar, Mutex};
    let (arrived_tx, arrived) = mpsc::channel::<()>();
    let arrived_tx = Mutex::new(arrived_tx);
    let gate: Gate = Arc::new((Mutex::new(false), Condvar::new()));
    let g = gate.clone();
    let calls = AtomicUsize::new(0);
    let relay = Smtp::start(Script::default().rcpt(move |_| {
        if calls.fetch_add(1, Ordering::SeqCst) == 2 * (nth - 1) {
            arrived_tx.lock().unwrap().send(()).unwrap();
            let (open, cv) = &*g;
            let _open = cv.wait_while(open.lock().unwrap(), |o| !*o).unwrap();
        }
        "250 2.1.5 Ok".to_string()
    }));
    (relay, arrived, gate)
}

type Gate = std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>;

fn open_gate(gate: &Gate) {
    let (open, cv) = &**gate;
    *open.lock().unwrap() = true;
    cv.notify_all();
}

/// How many recipients of the `verdict` messages are in `state`, read with psql (the code under test may be
/// waiting for the database).
fn recipients_in(pg: &Server, conninfo: &str, verdict: &str, state: &str) -> usize {
    let sql = format!(
        "SELECT count(*) FROM recipients r JOIN messages m ON m.id = r.message \
         WHERE m.verdict = '{verdict}' AND r.state = '{state}'"
    );
    pg.psql(conninfo, &sql).trim().parse().unwrap()
}

/// PostgreSQL stops in the middle of a release: batches of four messages (`--rate 4`), the relay holding the sixth
/// at RCPT, so the outcomes of batch two and the claims of batches four and five are still to be written when the
/// database goes. The release sends only what it had claimed (twelve messages), keeps the relay's answers, and
/// waits; once the database is back it records them, claims the rest and finishes, exit 0: every recipient
/// delivered exactly once, nothing in doubt, the audit chain whole. (Before the release rode out the outage it
/// exited at its next claim, leaving sixteen delivered recipients in doubt for `--retry-in-doubt` to send twice.)
#[test]
fn gateways_release_rides_out_a_database_restart_delivering_each_recipient_once() {
    let pg = Server::private();
    let db = pg.create_database();
    let bucket = Weed::shared().bucket();
    let a = gateway(&db, &bucket);
    for i in 0..20 {
        hold(&a, &message("rel", i), "PMX:VIRUS");
    }
    a.ingest();
    let (relay, arrived, gate) = gated_relay(6);
    let args = ["release", "--verdict", "PMX:VIRUS", "--relay", &relay.url(), "--rate", "4", "--yes"];
    let run = spawn(&a, &args);
    let limit = std::time::Duration::from_secs(120);
    arrived.recv_timeout(limit).expect("the release reaches the sixth message");
    // Batch one recorded, two and three claimed: the transaction that claimed three recorded one.
    wait_for(limit, "batch one recorded and batch three claimed", || {
        recipients_in(&pg, &db, "PMX:VIRUS", "released") == 8 && recipients_in(&pg, &db, "PMX:VIRUS", "releasing") == 16
    });
    pg.stop_server();
    open_gate(&gate);
    // It cannot claim batch four without the database: it sends the rest of what it holds claimed, then waits.
    wait_for(limit, "the release to send the twelve messages it had claimed", || {
        relay.transactions().iter().filter(|t| t.accepted).count() == 12
    });
    pg.start_server();
    let out = finish(run, "release", Instant::now());
    out.code_is(0, "the release once the database is back");
    let seen = relay.deliveries();
    assert_eq!(seen.len(), 40, "every recipient delivered: {seen:?}\n{}", out.all());
    assert!(seen.values().all(|&n| n == 1), "each exactly once: {seen:?}\n{}", out.all());
    assert_eq!(recipients_in(&pg, &db, "PMX:VIRUS", "released"), 40, "every answer recorded");

    let again = a.q(&["release", "--verdict", "PMX:VIRUS", "--retry-in-doubt", "--relay", &relay.url(), "--yes"]);
    again.code_is(0, "a rerun with --retry-in-doubt");
    assert!(again.text().contains("skipped 40"), "nothing in doubt, nothing sent again: {}", again.all());
    assert_eq!(relay.transactions().len(), 20, "the rerun sent nothing");
    a.q(&["log", "--verify"]).code_is(0, "log --verify after the outage");
}

/// Every key in the bucket under the shared prefix, as object names.
fn objects(bucket: &Bucket) -> std::collections::BTreeSet<String> {
    bucket.keys(&format!("{PREFIX}/")).into_iter().map(|k| k.rsplit('/').next().unwrap().to_string()).collect()
}

/// What the GC invariants are checked against, read with psql: the live hashes and the queued ones.
fn hashes(pg: &Server, conninfo: &str, sql: &str) -> std::collections::BTreeSet<String> {
    pg.psql(conninfo, sql).lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

/// After an interrupted GC: no live row's object is missing, and every object no live row references is still
/// queued for the GC (none forgotten: the next purge deletes it).
fn gc_invariants(pg: &Server, conninfo: &str, bucket: &Bucket, when: &str) {
    let live = hashes(pg, conninfo, "SELECT DISTINCT hash FROM messages WHERE purged_us IS NULL");
    let queued = hashes(pg, conninfo, "SELECT hash FROM gc_queue");
    let there = objects(bucket);
    let missing: Vec<_> = live.difference(&there).collect();
    assert!(missing.is_empty(), "{when}: live rows whose object is gone: {missing:?}");
    let forgotten: Vec<_> = there.iter().filter(|h| !live.contains(*h) && !queued.contains(*h)).collect();
    assert!(forgotten.is_empty(), "{when}: unreferenced objects no longer queued: {forgotten:?}");
}

/// Purge interrupted in its GC, by PostgreSQL stopping and then by the object store dying, between two of its
/// batches (psql sessions queue on the writers' lock so the first GC batch runs and the next waits): the rows are
/// tombstoned, no live row points at a deleted object (ten of the purged messages' bytes are held again, live, on
/// the other gateway), every unreferenced object not yet deleted stays queued, and a purge once both are back
/// finishes the job: the bucket holds exactly the live objects, `verify --deep` is clean, the audit chain whole.
#[test]
fn gateways_purge_interrupted_by_each_backend_mid_gc_loses_nothing_and_finishes() {
    let pg = Server::private();
    let db = pg.create_database();
    let weed = Weed::private();
    let bucket = weed.bucket();
    let (a, b) = (gateway(&db, &bucket), gateway(&db, &bucket));
    for i in 0..150 {
        hold(&a, &message("gc", i), "OLD");
    }
    let keep: Vec<(String, Vec<u8>)> =
        (0..150).step_by(15).map(|i| (hold(&b, &message("gc", i), "KEEP"), message("gc", i))).collect();
    a.ingest();
    b.ingest();
    assert_eq!(objects(&bucket).len(), 150);
    let limit = std::time::Duration::from_secs(120);

    // The purge's first write transaction tombstones (150 rows: one batch), its second is the GC's first batch
    // (bounded at about 50 ms of deletes), its third the next GC batch. `until_gc_batch_two` lets the first two
    // through and returns with the third waiting behind a holder.
    let until_gc_batch_two = |args: &[&str]| -> (Child, Holder<'_>) {
        let first = Holder::ask(&pg, &db, "first");
        wait_for(limit, "psql to hold the writers' lock", || first.holds());
        let purge = spawn(&a, args);
        wait_for(limit, "the purge to wait for the lock", || lock_waiters(&pg, &db) == 1);
        let second = Holder::ask(&pg, &db, "second");
        wait_for(limit, "the second holder to queue", || lock_waiters(&pg, &db) == 2);
        first.release();
        wait_for(limit, "the GC to queue behind the second holder", || second.holds() && lock_waiters(&pg, &db) == 1);
        let third = Holder::ask(&pg, &db, "third");
        wait_for(limit, "the third holder to queue", || lock_waiters(&pg, &db) == 2);
        second.release();
        wait_for(limit, "the GC's next batch to queue behind the third", || {
            third.holds() && lock_waiters(&pg, &db) == 1
        });
        (purge, third)
    };

    let (purge, holder) = until_gc_batch_two(&["purge", "--verdict", "OLD", "--orphan-grace", "0s", "--yes"]);
    pg.stop_server();
    holder.abandon();
    let out = finish(purge, "purge", Instant::now());
    assert_ne!(out.code, 0, "the purge lost its database in the middle of its GC: {}", out.all());
    assert!(out.stderr.contains("index"), "it says the index failed: {}", out.all());
    pg.start_server();
    let tombstones = "SELECT count(*) FROM messages WHERE verdict = 'OLD' AND purged_us IS NOT NULL";
    assert_eq!(pg.psql(&db, tombstones).trim(), "150", "the tombstones committed before the GC stay");
    gc_invariants(&pg, &db, &bucket, "after the database went away mid-GC");
    let queued = hashes(&pg, &db, "SELECT hash FROM gc_queue");
    assert!(!queued.is_empty(), "the GC was interrupted with work left: {}", out.all());
    a.verify_deep_clean("a after the database went away mid-GC");

    // The object store, now: the GC's first batch deletes with it up, the rest find it gone.
    let (purge, holder) = until_gc_batch_two(&["purge", "--verdict", "OLD", "--orphan-grace", "0s", "--yes"]);
    weed.kill();
    holder.release();
    let out = finish(purge, "purge", Instant::now());
    assert_eq!(out.code, 1, "objects it could not delete are per-item errors: {}", out.all());
    weed.start();
    gc_invariants(&pg, &db, &bucket, "after the object store went away mid-GC");
    a.verify_deep_clean("a after the object store went away mid-GC");

    a.q(&["purge", "--verdict", "OLD", "--orphan-grace", "0s", "--yes"]).code_is(0, "purge with both back");
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM gc_queue").trim(), "0", "the queue drained");
    let live = hashes(&pg, &db, "SELECT DISTINCT hash FROM messages WHERE purged_us IS NULL");
    assert_eq!(live.len(), keep.len());
    assert_eq!(objects(&bucket), live, "exactly the live objects are left");
    for s in [&a, &b] {
        s.verify_deep_clean("after the purge finished");
        s.q(&["log", "--verify"]).code_is(0, "log --verify");
    }
    for (id, m) in &keep {
        assert_eq!(a.raw(id), *m, "{id}, held again on b, byte-exact");
    }
}

/// PostgreSQL and the object store both down at once, in the middle of ingest: holds keep exiting 0, `check`
/// exits 75 naming both, and with only one of them back (the database first, then in a second outage the object
/// store first) ingest still waits and `check` names the one still down. Once both are back every acknowledged
/// message is held exactly once, byte-exact.
#[test]
fn gateways_survive_both_backends_down_at_once_whichever_returns_first() {
    let pg = Server::private();
    let db = pg.create_database();
    let weed = Weed::private();
    let bucket = weed.bucket();
    let (a, b) = (gateway(&db, &bucket), gateway(&db, &bucket));
    let mut held: Vec<(String, Vec<u8>)> = Vec::new();
    let mut n = 0;
    let mut hold_some = |count: usize, held: &mut Vec<(String, Vec<u8>)>| {
        for _ in 0..count {
            for (s, node) in [(&a, "a"), (&b, "b")] {
                let m = message(node, n);
                held.push((hold(s, &m, "SPAM"), m));
            }
            n += 1;
        }
    };
    let limit = std::time::Duration::from_secs(120);
    let index_down = "shared index is unreachable";
    let objects_down = |t: &str| t.contains("object store") && t.contains("unreachable");

    for database_first in [true, false] {
        hold_some(10, &mut held);
        // Both ingests have uploaded their batches and wait for the lock to commit when both backends go.
        let holder = Holder::ask(&pg, &db, "holder");
        wait_for(limit, "psql to hold the writers' lock", || holder.holds());
        let (ia, ib) = (spawn(&a, &["ingest"]), spawn(&b, &["ingest"]));
        wait_for(limit, "both ingests to wait for the lock", || lock_waiters(&pg, &db) == 2);
        pg.stop_server();
        weed.kill();
        holder.abandon();
        for (c, name) in [(ia, "a"), (ib, "b")] {
            let out = finish(c, "ingest", Instant::now());
            assert_ne!(out.code, 0, "ingest on {name} lost both backends before committing: {}", out.all());
        }
        hold_some(5, &mut held);
        for s in [&a, &b] {
            assert_ne!(s.q(&["ingest"]).code, 0, "ingest with both backends down fails");
            assert!(!s.spool_files().is_empty(), "the mail waits in the spool");
            let c = s.q(&["check"]);
            c.code_is(75, "check with both backends down");
            assert!(c.stderr.contains(index_down) && objects_down(&c.stderr), "check names both: {}", c.all());
        }

        if database_first {
            pg.start_server();
        } else {
            weed.start();
        }
        hold_some(2, &mut held);
        for s in [&a, &b] {
            assert_ne!(s.q(&["ingest"]).code, 0, "ingest with one backend still down fails");
            assert!(!s.spool_files().is_empty(), "the mail still waits in the spool");
            let c = s.q(&["check"]);
            c.code_is(75, "check with one backend still down");
            assert_eq!(c.stderr.contains(index_down), !database_first, "the index named only if down: {}", c.all());
            assert_eq!(objects_down(&c.stderr), database_first, "the object store named only if down: {}", c.all());
        }
        if database_first {
            weed.start();
        } else {
            pg.start_server();
        }
        for s in [&a, &b] {
            s.q(&["ingest"]).code_is(0, "ingest once both are back");
            assert!(s.spool_files().is_empty(), "the spool drained");
            s.q(&["check"]).code_is(0, "check with both back");
        }
    }

    all_held_once(&a, &b, &held);
}

/// The same outage as above, but the database stays down past the release's wait (60 s): the release gives up,
/// exit 1 naming the unreachable index, having sent only what it had claimed. Nothing is lost and nothing is sent
/// twice: once the database is back a rerun delivers every recipient never claimed, and lists as in doubt those
/// the first run delivered but could not record (the journal cannot tell them from a crash's: `--retry-in-doubt`
/// would send them again, which is why the release waits first).
#[test]
fn gateways_release_gives_up_on_a_long_database_outage_leaving_its_sends_in_doubt() {
    let pg = Server::private();
    let db = pg.create_database();
    let bucket = Weed::shared().bucket();
    let a = gateway(&db, &bucket);
    for i in 0..20 {
        hold(&a, &message("long", i), "PMX:VIRUS");
    }
    a.ingest();
    let (relay, arrived, gate) = gated_relay(6);
    let args = ["release", "--verdict", "PMX:VIRUS", "--relay", &relay.url(), "--rate", "4", "--yes"];
    let run = spawn(&a, &args);
    let limit = std::time::Duration::from_secs(120);
    arrived.recv_timeout(limit).expect("the release reaches the sixth message");
    wait_for(limit, "batch one recorded and batch three claimed", || {
        recipients_in(&pg, &db, "PMX:VIRUS", "released") == 8 && recipients_in(&pg, &db, "PMX:VIRUS", "releasing") == 16
    });
    pg.stop_server();
    open_gate(&gate);
    let out = finish(run, "release", Instant::now());
    assert_eq!(out.code, 1, "the release gives up: {}", out.all());
    assert!(out.stderr.contains("is the PostgreSQL server running and reachable?"), "{}", out.all());
    assert_eq!(relay.transactions().iter().filter(|t| t.accepted).count(), 12, "only what it had claimed was sent");
    pg.start_server();

    let rerun = a.q(&args);
    assert_eq!(rerun.code, 1, "the rerun reports what is in doubt: {}", rerun.all());
    assert!(rerun.all().contains("in doubt"), "{}", rerun.all());
    let seen = relay.deliveries();
    assert_eq!(seen.len(), 40, "every recipient delivered: {seen:?}");
    assert!(seen.values().all(|&n| n == 1), "none twice: {seen:?}");
    // Batch one's answers were committed; the twelve the rerun sent are recorded; the rest are in doubt, listed.
    assert_eq!(recipients_in(&pg, &db, "PMX:VIRUS", "released"), 24, "{}", rerun.all());
    assert_eq!(recipients_in(&pg, &db, "PMX:VIRUS", "releasing"), 16, "{}", rerun.all());
    assert_eq!(recipients_in(&pg, &db, "PMX:VIRUS", "held"), 0);
    a.q(&["log", "--verify"]).code_is(0, "log --verify");
}
