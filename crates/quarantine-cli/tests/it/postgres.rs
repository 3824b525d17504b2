//! The shared index (DESIGN section 11, issue 16) on a real PostgreSQL 15 that the testkit starts: several
//! gateways — stores with their own spools — on one database, and an outage of that database during intake.
//! (The selector/search and release-journal suites also run on PostgreSQL as a whole: scripts/test runs them again
//! with QUARANTINE_TEST_INDEX=postgres.)

use std::process::Stdio;
use std::time::Instant;

use quarantine_testkit::postgres::{self, Server};
use quarantine_testkit::run::{finish, wait_for};
use quarantine_testkit::sink::Sink;
use quarantine_testkit::{Out, Scratch, Store};

use crate::BIN;

/// A gateway: a store directory of its own whose index is the database `conninfo`.
fn gateway(conninfo: &str) -> Store {
    let scratch = Scratch::new(BIN);
    std::fs::write(scratch.config(), format!("index = \"{conninfo}\"\n")).unwrap();
    let root = scratch.path().join("store");
    let s = Store { scratch, root };
    s.q(&["init"]).code_is(0, "init");
    s
}

/// Holds message `i` of `node` with the verdict `V-NODE`.
fn hold(s: &Store, i: usize, node: &str) -> Out {
    let msg = format!("Subject: {node} {i}\r\nMessage-ID: <{node}{i}@x>\r\n\r\nbody {i}\r\n");
    let verdict = format!("V-{node}");
    s.hold(
        msg.as_bytes(),
        &["--verdict", &verdict, "--from", "a@example.org", "--", "r1@example.net", "r2@example.net"],
    )
}

/// Files in `spool/` waiting for ingest.
fn pending(s: &Store) -> usize {
    std::fs::read_dir(s.root.join("spool"))
        .unwrap()
        .filter(|e| {
            let e = e.as_ref().unwrap();
            e.file_type().unwrap().is_file() && !e.file_name().to_string_lossy().starts_with('.')
        })
        .count()
}

fn subjects(s: &Store) -> Vec<String> {
    let out = s.q(&["search", "--json"]).ok();
    let mut v: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["subject"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// Two gateways hold into their own spools and ingest into one database at once: each one's search finds both
/// nodes' mail. Four releases at once on that database — two on each node, each pair over the same selection —
/// deliver every recipient exactly once, and the audit chain they all append to does not fork. (Each node releases
/// its own messages here: the blobs are still per gateway until the shared blob store exists.)
#[test]
fn postgres_two_gateways_share_the_index_and_release_each_recipient_once() {
    let db = postgres::database();
    let (a, b) = (gateway(&db), gateway(&db));
    for i in 0..40 {
        hold(&a, i, "a").code_is(0, "hold on a");
        hold(&b, i, "b").code_is(0, "hold on b");
    }
    let ingest = |s: &Store| {
        let mut c = s.cmd(&["ingest"]);
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let (ia, ib) = (ingest(&a), ingest(&b));
    finish(ia, "ingest a", Instant::now()).code_is(0, "ingest a");
    finish(ib, "ingest b", Instant::now()).code_is(0, "ingest b");
    assert_eq!((pending(&a), pending(&b)), (0, 0), "both spools drained");
    let all = subjects(&a);
    assert_eq!(all.len(), 80, "a sees both nodes' messages: {all:?}");
    assert_eq!(subjects(&b), all, "b sees the same");

    let sink = Sink::start(&[]);
    let release = |s: &Store, verdict: &str| {
        let mut c = s.cmd(&["release", "--verdict", verdict, "--relay", &sink.url(), "--yes"]);
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let runs = [release(&a, "V-a"), release(&b, "V-b"), release(&a, "V-a"), release(&b, "V-b")];
    let outs: Vec<Out> = runs.into_iter().map(|c| finish(c, "release", Instant::now())).collect();
    for r in &outs {
        assert!(r.code == 0 || r.code == 1, "{}", r.all());
    }
    let (ra, rb) = (&outs[0], &outs[1]);
    let seen = sink.deliveries();
    assert_eq!(seen.len(), 160, "every recipient of every message delivered\n{}\n{}", ra.all(), rb.all());
    assert!(seen.values().all(|&n| n == 1), "a recipient was delivered twice");
    for s in [&a, &b] {
        let v = s.q(&["log", "--verify"]);
        v.code_is(0, "log --verify: the audit chain did not fork");
    }
    let r = a.q(&["release", "--verdict", "V-a", "--relay", &sink.url(), "--yes"]);
    assert!(r.text().contains("skipped 80"), "{}", r.all());
}

/// A relay in front of `to` that accepts connections but passes nothing until `open` is set: a release sent
/// through it has claimed its first batches and sits waiting for the relay's greeting.
fn gated_relay(to: u16, open: std::sync::Arc<std::sync::atomic::AtomicBool>) -> String {
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::Ordering;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let open = open.clone();
            std::thread::spawn(move || {
                while !open.load(Ordering::SeqCst) {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                let server = TcpStream::connect(("127.0.0.1", to)).unwrap();
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let up = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                    let _ = s2.shutdown(std::net::Shutdown::Write);
                });
                let (mut c, mut s) = (client, server);
                let _ = std::io::copy(&mut s, &mut c);
                let _ = c.shutdown(std::net::Shutdown::Write);
                let _ = up.join();
            });
        }
    });
    format!("smtp://127.0.0.1:{port}")
}

/// Recipients in `state` in the database `db`.
fn count_state(db: &str, state: &str) -> usize {
    let n = postgres::server().psql(db, &format!("SELECT count(*) FROM recipients WHERE state = '{state}'"));
    n.trim().parse().unwrap()
}

/// Two releases of one selection at the same time: the first has claimed its batches and is stuck on its relay
/// when the second starts. The second claims and delivers the rest; when the first's relay opens it delivers what
/// it claimed. Both delivered some, and every recipient reached the sink exactly once.
#[test]
fn postgres_two_releases_of_one_selection_both_deliver_and_each_recipient_once() {
    let db = postgres::database();
    let s = gateway(&db);
    // Three claim batches (release::BATCH is 100 messages): the first run claims at most two before it sends.
    let n = 260;
    for i in 0..n {
        hold(&s, i, "c").code_is(0, "hold");
    }
    s.q(&["ingest"]).code_is(0, "ingest");
    let sink = Sink::start(&[]);
    let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gate = gated_relay(sink.port, open.clone());
    let release = |relay: &str| {
        let mut c = s.cmd(&["release", "--verdict", "V-c", "--relay", relay, "--yes"]);
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    };
    let first = release(&gate).spawn().unwrap();
    wait_for(quarantine_testkit::HANG, "the first release to claim", || count_state(&db, "releasing") > 0);
    let second = finish(release(&sink.url()).spawn().unwrap(), "second release", Instant::now());
    assert!(second.code == 0 || second.code == 1, "{}", second.all());
    let by_second = sink.deliveries().len();
    assert!(by_second > 0, "the second release delivered nothing\n{}", second.all());
    open.store(true, std::sync::atomic::Ordering::SeqCst);
    let first = finish(first, "first release", Instant::now());
    assert!(first.code == 0 || first.code == 1, "{}", first.all());
    let seen = sink.deliveries();
    assert!(seen.len() > by_second, "the first release delivered nothing\n{}", first.all());
    assert_eq!(seen.len(), 2 * n, "every recipient delivered\n{}\n{}", first.all(), second.all());
    assert!(seen.values().all(|&k| k == 1), "a recipient was delivered twice\n{}\n{}", first.all(), second.all());
    assert_eq!(count_state(&db, "released"), 2 * n);
    s.q(&["log", "--verify"]).code_is(0, "log --verify");
}

/// Another gateway's claim is in flight (a transaction holding one recipient's row lock, as a claim does before
/// it commits): a release neither waits for it nor claims that row; it delivers everything else and reports the
/// row busy. Once that transaction ends without claiming, the next run delivers the last recipient, once.
#[test]
fn postgres_a_release_skips_a_recipient_another_claim_has_locked() {
    use std::io::Write;
    let db = postgres::database();
    let s = gateway(&db);
    for i in 0..3 {
        hold(&s, i, "d").code_is(0, "hold");
    }
    s.q(&["ingest"]).code_is(0, "ingest");
    let mut locker = std::process::Command::new(postgres::tool_path("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &db])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = locker.stdin.take().unwrap();
    writeln!(
        stdin,
        "BEGIN; SELECT 1 FROM recipients r JOIN messages m ON m.id = r.message \
         WHERE m.subject = 'd 1' AND r.address_lc = 'r2@example.net' FOR UPDATE;"
    )
    .unwrap();
    stdin.flush().unwrap();
    let row_locked = "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                      WHERE c.relname = 'recipients' AND l.mode = 'RowShareLock' AND l.granted \
                      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    wait_for(quarantine_testkit::HANG, "psql to lock the row", || {
        postgres::server().psql(&db, row_locked).trim() != "0"
    });
    let sink = Sink::start(&[]);
    let r = finish(
        {
            let mut c = s.cmd(&["release", "--verdict", "V-d", "--relay", &sink.url(), "--yes"]);
            c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
            c.spawn().unwrap()
        },
        "release beside a locked row",
        Instant::now(),
    );
    let seen = sink.deliveries();
    assert_eq!(seen.len(), 5, "all but the locked recipient\n{}", r.all());
    assert!(!seen.contains_key(&("d 1".to_string(), "r2@example.net".to_string())), "{}", r.all());
    assert!(r.all().contains("being claimed by another release"), "{}", r.all());
    drop(stdin); // psql ends; its transaction rolls back
    assert!(locker.wait().unwrap().success());
    let again = s.q(&["release", "--verdict", "V-d", "--relay", &sink.url(), "--yes"]);
    again.code_is(0, "the second run");
    let seen = sink.deliveries();
    assert_eq!(seen.len(), 6, "{}", again.all());
    assert!(seen.values().all(|&k| k == 1), "a recipient was delivered twice");
}

/// `--subject` and `--header-from` on PostgreSQL are answered by the trigram GIN indexes on `message_text`
/// (migrations/postgres/0002), not by a scan: the plan of the query search runs names the index.
#[test]
fn postgres_text_search_uses_the_trigram_index() {
    let db = postgres::database();
    let s = gateway(&db);
    {
        let mut store = crate::open_store(&s, std::time::Duration::from_secs(30));
        for i in 2990..3000 {
            let msg = format!("From: Sender {i} <s{i}@example.org>\r\nSubject: report {i} weekly\r\n\r\nbody\r\n");
            let req = quarantine_store::HoldRequest {
                from: "a@example.org".into(),
                recipients: vec!["r@example.net".into()],
                verdict: "SPAM".into(),
                ..Default::default()
            };
            store.hold(&req, &mut msg.as_bytes()).unwrap();
        }
    }
    s.q(&["ingest"]).code_is(0, "ingest");
    // A table big enough that a scan costs more than the index: 50,000 copies of one message under other ids,
    // subjects and From headers, written by SQL (ingesting them would take minutes); the triggers index them.
    let pg = postgres::server();
    let cols = pg.psql(
        &db,
        "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns \
         WHERE table_name = 'messages' AND column_name <> 'rowid'",
    );
    let cols: Vec<&str> = cols.trim().split(',').collect();
    let values: Vec<String> = cols
        .iter()
        .map(|c| match *c {
            "id" => "m.id || '-' || g".into(),
            "subject" => "'filler ' || g || ' monthly'".into(),
            "hdr_from" => "'Other ' || g || ' <o' || g || '@example.com>'".into(),
            c => format!("m.{c}"),
        })
        .collect();
    pg.psql(
        &db,
        &format!(
            "INSERT INTO messages ({}) SELECT {} FROM messages m, generate_series(1, 50000) g \
             WHERE m.rowid = (SELECT min(rowid) FROM messages)",
            cols.join(","),
            values.join(",")
        ),
    );
    pg.psql(&db, "ANALYZE");
    let store = crate::open_store(&s, std::time::Duration::from_secs(30));
    let cases = [
        (
            quarantine_store::Selector { subjects: vec!["port 2999 week".into()], ..Default::default() },
            "message_text_subject",
        ),
        (
            quarantine_store::Selector { header_froms: vec!["s2999@".into()], ..Default::default() },
            "message_text_hdr_from",
        ),
    ];
    for (sel, index) in cases {
        let plan = store.query_plan(&sel).unwrap().join("\n");
        assert!(plan.contains(&format!("Index Scan on {index}")), "{sel:?} does not use {index}:\n{plan}");
    }
    let found = s.q(&["search", "--subject", "PORT 2999 WEEK", "--json"]).ok();
    assert_eq!(found.lines().count(), 1, "{found}");
    let found = s.q(&["search", "--header-from", "S2999@", "--json"]).ok();
    assert_eq!(found.lines().count(), 1, "{found}");
}

/// The database goes away in the middle of intake: holds keep exiting 0 (they never touch it), the spool keeps
/// the mail, ingest fails and `check` exits 75 naming the outage; once the server is back, ingest completes and
/// every acknowledged message is indexed exactly once.
#[test]
fn postgres_outage_during_ingest_keeps_the_spool_and_resumes() {
    let server = Server::private();
    let db = server.create_database();
    let s = gateway(&db);
    for i in 0..5 {
        hold(&s, i, "before").code_is(0, "hold");
    }
    s.q(&["ingest"]).code_is(0, "ingest");
    assert_eq!(pending(&s), 0);

    server.stop_server();
    for i in 0..10 {
        let out = hold(&s, i, "during");
        out.code_is(0, "hold with the database down");
    }
    assert_eq!(pending(&s), 10, "the spool keeps what was held");
    let ing = s.q(&["ingest"]);
    assert_ne!(ing.code, 0, "ingest cannot succeed without the index: {}", ing.all());
    assert_eq!(pending(&s), 10, "a failed ingest leaves every spool file");
    let chk = s.q(&["check"]);
    assert_eq!(chk.code, 75, "{}", chk.all());
    assert!(chk.all().contains("shared index is unreachable"), "{}", chk.all());

    server.start_server();
    s.q(&["ingest"]).code_is(0, "ingest after the outage");
    assert_eq!(pending(&s), 0, "the spool drained");
    let got = subjects(&s);
    let mut want: Vec<String> =
        (0..5).map(|i| format!("before {i}")).chain((0..10).map(|i| format!("during {i}"))).collect();
    want.sort();
    assert_eq!(got, want, "every held message indexed exactly once");
    s.q(&["check"]).code_is(0, "check after the outage");
}

/// `ingest --watch` outlives an outage of the database: it keeps running, and once the server is back it connects
/// again and indexes what was held meanwhile.
#[test]
fn postgres_ingest_watch_reconnects_after_an_outage() {
    let server = Server::private();
    let db = server.create_database();
    let s = gateway(&db);
    let rows = || -> usize {
        let out = s.sqlite("SELECT count(*) FROM messages");
        if out.code != 0 {
            return usize::MAX;
        }
        out.text().trim().parse().unwrap()
    };
    let mut watch = s.cmd(&["ingest", "--watch"]);
    watch.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let mut watch = watch.spawn().unwrap();
    for i in 0..3 {
        hold(&s, i, "before").code_is(0, "hold");
    }
    wait_for(std::time::Duration::from_secs(120), "ingest --watch to index 3 messages", || rows() == 3);
    server.stop_server();
    for i in 0..3 {
        hold(&s, i, "during").code_is(0, "hold with the database down");
    }
    assert_eq!(pending(&s), 3);
    server.start_server();
    wait_for(std::time::Duration::from_secs(120), "ingest --watch to reconnect and index 6", || rows() == 6);
    assert!(watch.try_wait().unwrap().is_none(), "ingest --watch exited during the outage");
    watch.kill().unwrap();
    watch.wait().unwrap();
    assert_eq!(pending(&s), 0);
}

/// A store whose config names another database than the one its mail went into refuses every command (no ingest
/// into the wrong quarantine: the spool stays), until the config is right again.
#[test]
fn postgres_a_store_refuses_a_database_that_is_not_its_own() {
    let first = postgres::database();
    let s = gateway(&first);
    hold(&s, 0, "x").code_is(0, "hold");
    s.q(&["ingest"]).code_is(0, "ingest");
    hold(&s, 1, "x").code_is(0, "hold");
    let other = postgres::database();
    std::fs::write(s.scratch.config(), format!("index = \"{other}\"\n")).unwrap();
    let out = s.q(&["search"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.all().contains("fix `index` in the config"), "{}", out.all());
    assert_eq!(pending(&s), 1, "nothing was ingested into the other database");
    // The same database spelt as a URL is still the store's own.
    let socket = postgres::server().socket.display().to_string().replace('/', "%2F");
    let dbname = first.rsplit("dbname=").next().unwrap();
    std::fs::write(s.scratch.config(), format!("index = \"postgresql://postgres@{socket}/{dbname}\"\n")).unwrap();
    assert_eq!(subjects(&s), vec!["x 0".to_string(), "x 1".to_string()]);
}

/// `stats --by hour` on the shared index buckets by the client's `TZ` (sent with the connection's startup
/// packet), and a `TZ` the server does not know, or a file path, never stops a command: it falls back to UTC.
#[test]
fn postgres_local_time_follows_tz_and_an_unknown_zone_stops_nothing() {
    let s = gateway(&postgres::database());
    hold(&s, 0, "tz").code_is(0, "hold");
    s.q(&["ingest"]).code_is(0, "ingest");
    let first_hour = |tz: &str| -> String {
        let mut c = s.cmd(&["stats", "--by", "hour", "--since", "2d", "--json"]);
        c.env("TZ", tz);
        let out = quarantine_testkit::run::run(c, quarantine_testkit::run::Input::Null, quarantine_testkit::run::HANG);
        let v: serde_json::Value = serde_json::from_str(&out.ok()).unwrap();
        v["buckets"][0]["key"].as_str().unwrap().to_string()
    };
    let utc = first_hour("UTC");
    // Asia/Kolkata is UTC+05:30 all year: its hour label differs from UTC's whatever the time of day.
    let kolkata = first_hour("Asia/Kolkata");
    assert_ne!(utc, kolkata, "the session's time zone is the client's TZ");
    assert_eq!(first_hour("Nowhere/Bogus"), utc, "an unknown zone falls back to UTC");
    assert_eq!(first_hour(":/etc/localtime"), utc, "a file path is not sent to the server");
}
