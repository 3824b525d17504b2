//! Issue 15, the incident seen and undone: the audit hash chain (`log --verify`, anchors, the upgrade that chains
//! old rows), parallel release (`--connections`), rescan before release with a real ClamAV, spike statistics,
//! provenance (`scanner_version`) and the re-quarantine marks.

use std::path::{Path, PathBuf};

use quarantine_testkit::{Out, Store};

use crate::store;

/// A few audit rows through the binary: freeze and thaw, twice.
fn some_audit_rows(s: &Store) {
    for i in 0..2 {
        s.q(&["freeze", "--reason", &format!("drill {i}")]).code_is(0, "freeze");
        s.q(&["thaw", "--reason", "over"]).code_is(0, "thaw");
    }
}

/// The statement that drops one of the audit table's append-only triggers, as the index's engine spells it: what
/// someone with write access to the database would do before editing the trail.
fn unguard(s: &Store, trigger: &str) -> String {
    match s.shared_index() {
        Some(_) => format!("DROP TRIGGER {trigger} ON audit"),
        None => format!("DROP TRIGGER {trigger}"),
    }
}

fn verify(s: &Store, extra: &[&str]) -> Out {
    let mut args = vec!["log", "--verify"];
    args.extend_from_slice(extra);
    s.q(&args)
}

#[test]
fn audit_chain_verifies_untouched_and_exports_its_head() {
    let s = store();
    some_audit_rows(&s);
    let out = verify(&s, &[]);
    out.code_is(0, "log --verify on an untouched store");
    assert!(out.text().contains("audit trail intact: 4 row(s)"), "{}", out.all());
    let head = s.q(&["log", "--head"]).ok().trim().to_string();
    assert_eq!(head.len(), 64, "{head}");
    verify(&s, &["--from-anchor", &head]).code_is(0, "the head just exported is its own anchor");
    // log --json carries the chain: each row's prev_hash is the hash of the row before.
    let rows: Vec<serde_json::Value> =
        s.q(&["log", "--json"]).ok().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 4);
    for w in rows.windows(2) {
        assert_eq!(w[1]["prev_hash"], w[0]["hash"], "{w:?}");
    }
    assert_eq!(rows[3]["hash"].as_str(), Some(head.as_str()));
    // More rows later: the old anchor still verifies (it is in the trail), and the head moves on.
    some_audit_rows(&s);
    verify(&s, &["--from-anchor", &head]).code_is(0, "an older anchor");
    verify(&s, &["--from-anchor", "zz"]).code_is(2, "a malformed anchor is a usage error");
}

#[test]
fn audit_chain_detects_an_edited_row() {
    let s = store();
    some_audit_rows(&s);
    s.sql(&format!("{}; UPDATE audit SET reason = 'nothing happened' WHERE seq = 2", unguard(&s, "audit_no_update")));
    let out = verify(&s, &[]);
    out.code_is(1, "log --verify after an edit");
    assert!(out.stderr.contains("audit row #2 does not match its hash"), "{}", out.all());
    assert_eq!(out.stderr.lines().count(), 1, "one line: {}", out.stderr);
}

#[test]
fn audit_chain_detects_a_removed_middle_row_and_a_removed_head() {
    let s = store();
    some_audit_rows(&s);
    s.sql(&format!("{}; DELETE FROM audit WHERE seq = 2", unguard(&s, "audit_no_delete")));
    let out = verify(&s, &[]);
    out.code_is(1, "log --verify after deleting row 2");
    assert!(out.stderr.contains("audit row #3 does not link to row #1"), "{}", out.all());

    let s = store();
    some_audit_rows(&s);
    s.sql(&format!("{}; DELETE FROM audit WHERE seq = 1", unguard(&s, "audit_no_delete")));
    let out = verify(&s, &[]);
    out.code_is(1, "log --verify after deleting the first row");
    assert!(out.stderr.contains("audit row #2 does not link to the genesis value"), "{}", out.all());
}

#[test]
fn audit_chain_detects_an_inserted_row() {
    let s = store();
    some_audit_rows(&s);
    // A row slipped in between (renumbering the later ones), with a plausible hash copied from its neighbour.
    s.sql(&format!(
        "{}; UPDATE audit SET seq = seq + 10 WHERE seq >= 3; UPDATE audit SET seq = seq - 9 \
         WHERE seq >= 13; INSERT INTO audit (seq, at_us, actor, action, selection, counts, prev_hash, hash) \
         SELECT 3, at_us, 'mallory', 'release', '{{}}', '{{}}', prev_hash, hash FROM audit WHERE seq = 2",
        unguard(&s, "audit_no_update")
    ));
    let out = verify(&s, &[]);
    out.code_is(1, "log --verify after an insertion");
    assert!(out.stderr.contains("audit row #3 does not match its hash"), "{}", out.all());
}

#[test]
fn audit_chain_cut_tail_needs_the_anchor() {
    let s = store();
    some_audit_rows(&s);
    let head = s.q(&["log", "--head"]).ok().trim().to_string();
    s.sql(&format!("{}; DELETE FROM audit WHERE seq >= 3", unguard(&s, "audit_no_delete")));
    // What a chain alone cannot see: the shorter trail is intact.
    verify(&s, &[]).code_is(0, "a cut tail without an anchor");
    let out = verify(&s, &["--from-anchor", &head]);
    out.code_is(1, "a cut tail against the exported head");
    assert!(out.stderr.contains(&format!("anchor {head} is not in the audit trail")), "{}", out.all());
    assert!(out.stderr.contains("ends at row #2"), "{}", out.all());
}

/// The shipped migration files, for building an index as an older binary made it.
fn migration(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations/sqlite").join(name)
}

/// A store whose index is at schema 2 (built with the sqlite3 shell from the shipped, never-edited 0001 and 0002
/// files: exactly what the previous binary created), with audit rows of the old shape.
pub fn schema2_store() -> Store {
    let s = store();
    std::fs::remove_file(s.index()).unwrap();
    let sql = format!(
        ".read {}\n.read {}\nPRAGMA application_id = {};\nPRAGMA user_version = 2;\n\
         INSERT INTO audit (at_us, actor, action, selection, counts, reason) VALUES \
         (1700000000000000, 'old', 'purge', '{{}}', '{{\"messages\":0}}', 'nightly'), \
         (1700000001000000, 'old', 'freeze', '{{}}', '{{}}', NULL), \
         (1700000002000000, 'old', 'thaw', '{{}}', '{{}}', 'done');\n",
        migration("0001_initial.sql").display(),
        migration("0002_search.sql").display(),
        0x5152_4e54
    );
    let mut c = s.sqlite3();
    c.stdin(std::process::Stdio::piped());
    let out =
        quarantine_testkit::run::run(c, quarantine_testkit::Input::Bytes(sql.as_bytes()), quarantine_testkit::HANG);
    out.code_is(0, "build a schema-2 index");
    assert_eq!(s.sql("PRAGMA user_version"), "2");
    s
}

#[test]
fn audit_chain_after_an_upgrade_from_schema_2() {
    let s = schema2_store();
    let out = verify(&s, &[]);
    out.code_is(0, "log --verify right after the upgrade");
    assert!(out.text().contains("3 row(s)"), "{}", out.all());
    // Migrated to the newest schema (3 added the chain; later ones follow it in the same open).
    let newest = std::fs::read_dir(migration(""))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".sql"))
        .count();
    assert_eq!(s.sql("PRAGMA user_version"), newest.to_string());
    assert_eq!(s.sql_count("SELECT count(*) FROM audit WHERE hash IS NULL OR prev_hash IS NULL"), 0);
    assert_eq!(s.sql_count("SELECT count(*) FROM settings WHERE key IN ('audit_genesis', 'trace_secret')"), 2);
    // New rows extend the upgraded chain; edits are still caught and rows still append-only.
    some_audit_rows(&s);
    verify(&s, &[]).code_is(0, "after new rows");
    assert!(s.sqlite("UPDATE audit SET actor = 'x' WHERE seq = 1").code != 0, "the trigger is back");
    s.sql(&format!("{}; UPDATE audit SET actor = 'x' WHERE seq = 1", unguard(&s, "audit_no_update")));
    verify(&s, &[]).code_is(1, "an edit of an upgraded row");
}

/// Holds `n` generated messages (each to `rcpts`) through the library; returns their ids.
fn hold_n(s: &Store, n: usize, verdict: &str, rcpts: &[&str], body: impl Fn(usize) -> Vec<u8>) -> Vec<String> {
    let mut store = crate::open_store(s, std::time::Duration::from_secs(30));
    (0..n)
        .map(|i| {
            let req = quarantine_store::HoldRequest {
                from: "sender@example.org".into(),
                recipients: rcpts.iter().map(|r| r.to_string()).collect(),
                verdict: verdict.into(),
                ..Default::default()
            };
            store.hold(&req, &mut &body(i)[..]).unwrap().id
        })
        .collect()
}

fn mail(i: usize, text: &str) -> Vec<u8> {
    format!(
        "From: a@example.org\r\nTo: b@example.edu\r\nSubject: message {i}\r\nMessage-ID: <{i}@t>\r\n\r\n{text} {i}\r\n"
    )
    .into_bytes()
}

/// The id in a released copy's trace header.
fn traced_id(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text.lines().find(|l| l.starts_with("X-Quarantine-Released: ")).expect("a trace header");
    line["X-Quarantine-Released: ".len()..].split(';').next().unwrap().to_string()
}

#[test]
fn two_releases_with_four_connections_each_deliver_every_recipient_once() {
    use quarantine_testkit::sink::Sink;
    let s = store();
    let rcpts = ["one@example.edu", "two@example.edu", "three@example.edu"];
    let ids = hold_n(&s, 300, "PMX:VIRUS", &rcpts, |i| mail(i, "storm"));
    let sink = Sink::start(&[]);
    let url = sink.url();
    let spawn = || {
        let mut c = s.cmd(&["release", "--all", "--yes", "--connections", "4", "--relay", &url]);
        c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        (c.spawn().expect("start release"), std::time::Instant::now())
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (
        quarantine_testkit::run::finish(a.0, "release A", a.1),
        quarantine_testkit::run::finish(b.0, "release B", b.1),
    );
    a.code_is(0, "release A");
    b.code_is(0, "release B");
    let mut seen = std::collections::HashMap::new();
    for m in sink.messages() {
        let id = traced_id(&m.body);
        for r in m.rcpt_addrs() {
            *seen.entry((id.clone(), r)).or_insert(0u32) += 1;
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}\nA: {}\nB: {}", a.all(), b.all());
    assert_eq!(seen.len(), ids.len() * rcpts.len(), "every (message, recipient) once\nA: {}\nB: {}", a.all(), b.all());
    assert_eq!(s.sql_count("SELECT count(*) FROM recipients WHERE state != 'released'"), 0);
    // Both runs did work or found it claimed: together they account for every recipient.
    let delivered = |o: &Out| -> u64 {
        let t = o.text();
        let d = t.split("delivered ").nth(1).unwrap().split(' ').next().unwrap().replace(',', "");
        d.parse().unwrap()
    };
    assert_eq!(delivered(&a) + delivered(&b), 900, "A: {}\nB: {}", a.text(), b.text());
    let log: Vec<serde_json::Value> =
        s.q(&["log", "--json"]).ok().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(log.iter().any(|r| r["action"] == "release" && r["selection"]["connections"] == 4), "{log:?}");
    verify(&s, &[]).code_is(0, "the audit chain after two concurrent releases");
}

#[test]
fn connections_are_bounded() {
    let s = store();
    for n in ["0", "65"] {
        let out = s.q(&["release", "--all", "--dry-run", "--connections", n]);
        out.code_is(2, "--connections out of range");
        assert!(out.stderr.contains("between 1 and 64"), "{}", out.stderr);
    }
}

/// The text of a local ClamAV signature database (.ndb) matching `marker` anywhere in a file.
fn ndb(name: &str, marker: &str) -> String {
    let hex: String = marker.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{name}:0:*:{hex}\n")
}

#[test]
fn rescan_with_clamav_skips_what_is_still_infected_and_sends_it_after_the_signatures_change() {
    use quarantine_testkit::sink::Sink;
    let clamscan = quarantine_testkit::require("clamscan", "clamav");
    let s = store();
    let marker = "QUARANTINE-TEST-MALWARE-7f3a";
    let sigs = s.file("sigs.ndb", ndb("Quarantine.Test.Sig", marker));
    let bad = hold_n(&s, 1, "PMX:VIRUS", &["alice@example.edu"], |i| mail(i, &format!("payload {marker}")))[0].clone();
    let good = hold_n(&s, 1, "PMX:VIRUS", &["bob@example.edu"], |i| mail(i + 1, "an ordinary invoice"))[0].clone();
    let rescan = format!("{} --no-summary -d {} -", clamscan.display(), sigs.display());
    let sink = Sink::start(&[]);
    let url = sink.url();

    // --dry-run --rescan: scans, says what would be skipped, claims and sends nothing.
    let out = s.q(&["release", "--verdict", "PMX:VIRUS", "--dry-run", "--rescan", &rescan, "--relay", &url]);
    let text = out.ok();
    assert!(text.contains(&format!("skip  {bad}  rescan: infected: stdin: Quarantine.Test.Sig")), "{text}");
    assert!(text.contains("1 clean, 1 infected"), "{text}");
    assert!(sink.messages().is_empty());
    assert_eq!(s.sql_count("SELECT count(*) FROM recipients WHERE state = 'held'"), 2);

    let out = s.q(&["release", "--verdict", "PMX:VIRUS", "--yes", "--rescan", &rescan, "--relay", &url]);
    out.code_is(0, "release --rescan (an infected skip is the rescan doing its job)");
    assert!(out.text().contains("infected 1 (rescan: left held)"), "{}", out.all());
    let sent: Vec<String> = sink.messages().iter().map(|m| traced_id(&m.body)).collect();
    assert_eq!(sent, vec![good.clone()], "only the clean message went out");
    let v = s.show_json(&bad);
    assert_eq!(v["recipients"][0]["state"], "held");
    assert_eq!(v["recipients"][0]["attempts"], 0);
    let why = v["recipients"][0]["last_error"].as_str().unwrap();
    assert!(why.contains("rescan: infected") && why.contains("Quarantine.Test.Sig"), "{why}");

    // A broken scanner (its database is gone): deferred with the error, exit 1, nothing sent.
    std::fs::remove_file(&sigs).unwrap();
    let out = s.q(&["release", "--verdict", "PMX:VIRUS", "--yes", "--rescan", &rescan, "--relay", &url]);
    out.code_is(1, "a scanner that fails defers");
    assert!(out.text().contains("deferred 1"), "{}", out.all());
    assert_eq!(s.show_json(&bad)["recipients"][0]["attempts"], 1);
    assert_eq!(sink.messages().len(), 1);

    // The vendor's fix: the signature database changes, and the same message now scans clean and goes out.
    s.file("sigs.ndb", ndb("Quarantine.Other.Sig", "SOMETHING-ELSE-ENTIRELY"));
    let out = s.q(&["release", "--verdict", "PMX:VIRUS", "--yes", "--rescan", &rescan, "--relay", &url]);
    out.code_is(0, "release --rescan after the signature update");
    let mut sent: Vec<String> = sink.messages().iter().map(|m| traced_id(&m.body)).collect();
    sent.sort();
    let mut want = vec![bad.clone(), good];
    want.sort();
    assert_eq!(sent, want);
    assert_eq!(s.show_json(&bad)["recipients"][0]["state"], "released");
}

#[test]
fn rescan_options_are_checked_before_anything_is_claimed() {
    let s = store();
    for (args, want) in [
        (vec!["--rescan", " "], "--rescan: empty command"),
        (vec!["--rescan", "true", "--rescan-timeout", "0s"], "--rescan-timeout"),
        (vec!["--rescan", "true", "--rescan-infected-exit", "0"], "--rescan-infected-exit 0"),
    ] {
        let mut full = vec!["release", "--all", "--dry-run"];
        full.extend(args);
        let out = s.q(&full);
        out.code_is(2, want);
        assert!(out.stderr.contains(want), "{}", out.stderr);
    }
}

/// Seven PMX:VIRUS messages from one bad signature update between 00:00 and 00:59, one at 02:10 from the fixed
/// database, one SPAM: the night of DESIGN section 9 in miniature (TZ=UTC in the hermetic environment).
fn spike_store() -> (Store, Vec<String>) {
    let s = store();
    let ids = hold_n(&s, 9, "PMX:VIRUS", &["alice@example.edu"], |i| mail(i, "ordinary mail"));
    let t0 = 1_767_225_600_000_000i64; // 2026-01-01T00:00:00Z
    for (i, id) in ids.iter().enumerate() {
        let (at, version, verdict) = match i {
            0..=6 => (t0 + i as i64 * 60_000_000, "PMX 6.4/sigs-20260101-bad", "PMX:VIRUS"),
            7 => (t0 + 2 * 3_600_000_000 + 600_000_000, "PMX 6.4/sigs-20260101-fixed", "PMX:VIRUS"),
            _ => (t0 + 1_800_000_000, "rspamd 3.4", "SPAM"),
        };
        s.sql(&format!(
            "UPDATE messages SET received_us = {at}, scanner = 'pmx', scanner_version = '{version}', \
             verdict = '{verdict}' WHERE id = '{id}'"
        ));
    }
    (s, ids)
}

#[test]
fn stats_by_hour_shows_the_spike_with_bars_and_empty_hours() {
    let (s, _) = spike_store();
    let mut c = s.cmd(&["stats", "--since", "2026-01-01", "--by", "hour"]);
    c.env("COLUMNS", "60");
    let out = quarantine_testkit::run::run(c, quarantine_testkit::Input::Null, quarantine_testkit::HANG);
    let text = out.ok();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("HOUR") && lines[0].contains("MESSAGES"), "{text}");
    assert!(lines[1].starts_with("2026-01-01T00:00") && lines[1].contains(" 8 "), "{text}");
    assert!(lines[2].starts_with("2026-01-01T01:00") && lines[2].contains(" 0 "), "the empty hour is shown: {text}");
    assert!(lines[3].starts_with("2026-01-01T02:00") && lines[3].contains(" 1 "), "{text}");
    assert!(
        lines[1].contains('█')
            && lines[1].chars().filter(|c| *c == '█').count()
                > 5 * lines[3].chars().filter(|c| *c == '█').count().max(1),
        "{text}"
    );
    for l in &lines {
        assert!(l.chars().count() <= 60, "fits COLUMNS=60: {l:?}");
    }
    assert!(text.contains("9 message(s) in 3 group(s)"), "{text}");
}

#[test]
fn stats_by_scanner_version_json_and_the_freeze_first() {
    let (s, _) = spike_store();
    s.q(&["freeze", "--reason", "PMX signature incident"]).code_is(0, "freeze");
    let v: serde_json::Value =
        serde_json::from_str(&s.q(&["stats", "--since", "2026-01-01", "--by", "scanner-version", "--json"]).ok())
            .unwrap();
    assert_eq!(v["by"], "scanner-version");
    assert_eq!(v["frozen"]["reason"], "PMX signature incident");
    let b = v["buckets"].as_array().unwrap();
    assert_eq!(b[0]["key"], "PMX 6.4/sigs-20260101-bad");
    assert_eq!(b[0]["messages"], 7);
    assert_eq!(b.len(), 3, "{v}");
    let text = s.q(&["stats", "--since", "2026-01-01", "--by", "verdict"]).ok();
    assert!(text.starts_with("PURGE IS FROZEN: PMX signature incident"), "the freeze first: {text}");
    s.q(&["stats", "--by", "colour"]).code_is(2, "an unknown --by");
    // Plain `stats` is unchanged and also shows the freeze first.
    assert!(s.q(&["stats"]).ok().starts_with("PURGE IS FROZEN"));
}

#[test]
fn scanner_version_selects_by_glob_and_is_shown() {
    let (s, ids) = spike_store();
    let out = s.q(&["search", "--scanner-version", "PMX 6.4/sigs-*-bad", "--json"]).ok();
    let found: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(found.len(), 7);
    assert!(found.iter().all(|m| m["scanner_version"] == "PMX 6.4/sigs-20260101-bad"), "{out}");
    assert!(found.iter().all(|m| m.get("requarantined_from") == Some(&serde_json::Value::Null)), "{out}");
    let exact = s.q(&["search", "--scanner-version", "PMX 6.4/sigs-20260101-fixed", "--json"]).ok();
    assert_eq!(exact.lines().count(), 1);
    assert!(s.q(&["show", &ids[7]]).ok().contains("scanner ver.  PMX 6.4/sigs-20260101-fixed"));
    s.q(&["search", "--scanner-version", ""]).code_is(2, "an empty --scanner-version");
    // The release that undoes the incident selects the same way (dry run: nothing sent).
    let plan = s.q(&["release", "--scanner-version", "*-bad", "--dry-run", "--relay", "smtp://127.0.0.1:9"]).ok();
    assert!(plan.contains("would release 7 message(s)"), "{plan}");
}

#[test]
fn requarantined_messages_are_selected_and_shown() {
    let (s, ids) = spike_store();
    s.sql(&format!("UPDATE messages SET requarantined_from = '{}' WHERE id = '{}'", ids[0], ids[8]));
    let out = s.q(&["search", "--requarantined", "--json"]).ok();
    let found: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], ids[8].as_str());
    assert_eq!(found[0]["requarantined_from"], ids[0].as_str());
    assert!(s.q(&["show", &ids[8]]).ok().contains(&format!("held again after the release of {}", ids[0])));
}

#[test]
fn a_released_copy_carries_a_trace_mac_this_store_verifies() {
    use quarantine_testkit::sink::Sink;
    let s = store();
    let id = hold_n(&s, 1, "PMX:VIRUS", &["alice@example.edu"], |i| mail(i, "invoice"))[0].clone();
    let sink = Sink::start(&[]);
    s.q(&["release", "--id", &id, "--yes", "--relay", &sink.url(), "--actor", "alice"]).code_is(0, "release");
    let copy = sink.messages().remove(0).body;
    let text = String::from_utf8_lossy(&copy).into_owned();
    let line = text.lines().next().unwrap();
    assert!(line.starts_with(&format!("X-Quarantine-Released: {id}; by alice; ")) && line.contains("; mac="), "{line}");
    let store = crate::open_store(&s, std::time::Duration::from_secs(5));
    // What hold/ingest will call when the filter flags the released copy again.
    assert_eq!(store.requarantined_from(&copy).unwrap(), Some(id.clone()));
    let forged = text.replacen("; mac=", "; mac=0", 1);
    assert_eq!(store.requarantined_from(forged.as_bytes()).unwrap(), None);
}

// ---- provenance, spike freeze and re-quarantine at intake (hold → spool → ingest) ----

/// A real clamd (Debian's clamav-daemon) on a unix socket with a local signature database: no downloads.
struct Clamd {
    child: std::process::Child,
    socket: PathBuf,
}

impl Clamd {
    fn start(dir: &Path) -> Clamd {
        let clamd = quarantine_testkit::require("clamd", "clamav-daemon");
        let db = dir.join("clamd-db");
        std::fs::create_dir_all(&db).unwrap();
        std::fs::write(db.join("test.ndb"), ndb("Quarantine.Test.Provenance", "PROVENANCE-TEST-MARKER")).unwrap();
        let socket = dir.join("clamd.sock");
        let conf = dir.join("clamd.conf");
        std::fs::write(
            &conf,
            format!(
                "DatabaseDirectory {}\nLocalSocket {}\nForeground yes\nLogFile {}\nUser root\n",
                db.display(),
                socket.display(),
                dir.join("clamd.log").display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new(clamd)
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start clamd");
        let c = Clamd { child, socket };
        quarantine_testkit::run::wait_for(std::time::Duration::from_secs(60), "clamd's socket", || {
            std::os::unix::net::UnixStream::connect(&c.socket).is_ok()
        });
        c
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hold_cli(s: &Store, body: &[u8], extra: &[&str]) -> String {
    let verdict = extra.iter().position(|a| *a == "--verdict").map(|i| extra[i + 1]).unwrap_or("Heuristics.Test");
    let extra: Vec<&str> = match extra.iter().position(|a| *a == "--verdict") {
        Some(i) => extra[..i].iter().chain(&extra[i + 2..]).copied().collect(),
        None => extra.to_vec(),
    };
    let mut args = vec!["--verdict", verdict, "--scanner", "clamav", "--from", "a@example.org"];
    args.extend_from_slice(&extra);
    args.extend_from_slice(&["--", "alice@example.edu"]);
    let id = s.hold_ok(body, &args);
    s.ingest();
    id
}

#[test]
fn provenance_comes_from_clamd_and_a_stopped_clamd_never_fails_a_hold() {
    let s = store();
    let clamd = Clamd::start(&s.scratch.work());
    s.set_config(&format!("clamd = \"unix:{}\"\n", clamd.socket.display()));
    let a = hold_cli(&s, &mail(1, "from clamd"), &[]);
    let v = s.show_json(&a)["scanner_version"].as_str().expect("clamd's version recorded").to_string();
    assert!(v.starts_with("ClamAV "), "{v}");
    let found = s.q(&["search", "--scanner-version", "ClamAV*", "--json"]);
    found.code_is(0, "search --scanner-version");
    assert!(found.text().contains(&a), "{}", found.brief());
    // --scanner-version wins over the probe.
    let b = hold_cli(&s, &mail(2, "explicit"), &["--scanner-version", "PMX 6.4/sigs-20260101"]);
    assert_eq!(s.show_json(&b)["scanner_version"], "PMX 6.4/sigs-20260101");

    // clamd gone (a fresh store: no cached answer): the hold succeeds, the field is empty.
    drop(clamd);
    let t = store();
    t.set_config(&format!("clamd = \"unix:{}\"\n", s.scratch.work().join("clamd.sock").display()));
    let c = hold_cli(&t, &mail(3, "no clamd"), &[]);
    assert!(t.show_json(&c)["scanner_version"].is_null());
    // A clamd that accepts and never answers: the hold waits a few ms, not the deadline, and still succeeds.
    let mute = t.scratch.work().join("mute.sock");
    let listener = std::os::unix::net::UnixListener::bind(&mute).unwrap();
    let u = store();
    u.set_config(&format!("clamd = \"unix:{}\"\n", mute.display()));
    let out = u.run(
        &["hold", "--deadline", "5s", "--verdict", "X", "--from", "a@example.org", "--", "b@example.edu"],
        quarantine_testkit::Input::Bytes(b"Subject: mute clamd\r\n\r\nx\r\n"),
    );
    out.code_is(0, "hold beside a mute clamd");
    drop(listener);
    u.ingest();
    assert!(u.show_json(out.text().trim())["scanner_version"].is_null());
}

/// Holds one message `hours` ago (faketime shifts hold's clock, which stamps the spool file).
fn hold_at(s: &Store, hours_ago: u32, verdict: &str, i: usize) {
    let args = ["--verdict", verdict, "--from", "a@example.org", "--", "alice@example.edu"];
    s.hold_aged(&format!("{hours_ago}h"), &mail(i, verdict), &args).ok();
}

#[test]
fn a_spike_freezes_purges_audits_it_and_pages_through_check_until_thawed() {
    let s = store();
    s.set_config("[spike]\nfactor = 5\nmin = 20\n");
    // A week of one PMX:VIRUS an hour: the hourly median is 1.
    for h in 1..=168 {
        hold_at(&s, h, "PMX:VIRUS", h as usize);
    }
    s.ingest();
    s.q(&["check"]).code_is(0, "check before the burst");
    // A burst below the rule's minimum: no freeze.
    for i in 0..19 {
        s.hold_ok(
            &mail(1000 + i, "burst"),
            &["--verdict", "PMX:VIRUS", "--from", "a@example.org", "--", "b@example.edu"],
        );
    }
    s.ingest();
    s.q(&["check"]).code_is(0, "check after 19 in the hour (min is 20)");
    // The 20th in the hour: 20 > 5 x 1 and at least 20.
    s.hold_ok(&mail(2000, "burst"), &["--verdict", "PMX:VIRUS", "--from", "a@example.org", "--", "b@example.edu"]);
    let out = s.q(&["ingest"]);
    out.code_is(0, "ingest");
    assert!(out.stderr.contains("INCIDENT") && out.stderr.contains("PMX:VIRUS"), "{}", out.brief());
    let check = s.q(&["check"]);
    check.code_is(75, "check during the incident");
    assert!(check.stderr.contains("incident") && check.stderr.contains("spike of PMX:VIRUS"), "{}", check.brief());
    let purge = s.q(&["purge", "--older-than", "1d", "--yes"]);
    assert_ne!(purge.code, 0, "purge refuses while frozen: {}", purge.brief());
    assert_eq!(s.sql("SELECT actor FROM audit WHERE action = 'freeze'"), quarantine_store::SPIKE_ACTOR);
    // Thawing is a human decision.
    s.q(&["thaw", "--actor", "ops"]).code_is(0, "thaw");
    s.q(&["check"]).code_is(0, "check after thaw");
}

#[test]
fn a_released_copy_held_again_is_marked_and_a_forged_trace_is_just_a_header() {
    use quarantine_testkit::sink::Sink;
    let s = store();
    let orig = hold_cli(&s, &mail(7, "released then flagged again"), &[]);
    let sink = Sink::start(&[]);
    s.q(&["release", "--id", &orig, "--yes", "--relay", &sink.url()]).code_is(0, "release");
    let copy = sink.messages().remove(0).body;
    let again = hold_cli(&s, &copy, &["--verdict", "Heuristics.Again"]);
    assert_eq!(s.show_json(&again)["requarantined_from"], orig.as_str());
    let listed = s.q(&["search", "--requarantined", "--json"]);
    assert!(
        listed.text().contains(&again) && !listed.text().contains(&format!("\"id\":\"{orig}\"")),
        "{}",
        listed.brief()
    );
    let forged = String::from_utf8_lossy(&copy).replacen("; mac=", "; mac=f", 1);
    let other = hold_cli(&s, forged.as_bytes(), &["--verdict", "Heuristics.Forged"]);
    assert!(s.show_json(&other)["requarantined_from"].is_null());
}
