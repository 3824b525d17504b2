//! `quarantine import` and `quarantine check` against the real binary: every format from fixtures built here,
//! byte-exact round trips through `show --raw`, envelopes recovered from each format's headers, idempotent
//! re-runs, imports killed with SIGKILL and resumed, unreadable sources, and the health probe's exit codes.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use quarantine_testkit::env::is_root;
use quarantine_testkit::run::run;
use quarantine_testkit::{Input, Out, Store, XorShift, HANG};

use crate::store;

/// `(id, env_from, subject)` of every live message, through the index's own shell (not the code under test).
fn rows(ts: &Store) -> Vec<(String, String, String)> {
    ts.rows("SELECT id, env_from, coalesce(subject, '') FROM messages WHERE purged_us IS NULL ORDER BY subject")
        .into_iter()
        .map(|mut r| {
            r.resize(3, String::new());
            let mut f = r.into_iter();
            (f.next().unwrap(), f.next().unwrap(), f.next().unwrap())
        })
        .collect()
}

/// The id of the live message with this subject.
fn id_of(ts: &Store, subject: &str) -> String {
    let matches: Vec<_> = rows(ts).into_iter().filter(|r| r.2 == subject).collect();
    assert_eq!(matches.len(), 1, "messages with subject {subject:?}: {matches:?}");
    matches[0].0.clone()
}

/// Envelope recipients of a message, in order.
fn rcpts(ts: &Store, id: &str) -> Vec<String> {
    ts.rows(&format!("SELECT address FROM recipients WHERE message = '{id}' ORDER BY rowid"))
        .into_iter()
        .map(|r| r[0].clone())
        .collect()
}

fn import(ts: &Store, args: &[&str]) -> Out {
    let mut full = vec!["import"];
    full.extend_from_slice(args);
    ts.q(&full)
}

fn import_ok(ts: &Store, args: &[&str]) -> String {
    let out = import(ts, args);
    assert_eq!(out.code, 0, "import {args:?}: {out:?}");
    out.text()
}

/// mboxrd quoting, as a writer does it: `>` before every line that is `>`* followed by `From `.
fn mboxrd_quote(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in msg.split_inclusive(|&b| b == b'\n') {
        let k = line.iter().take_while(|&&b| b == b'>').count();
        if line[k..].starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Formats

#[test]
fn mbox_round_trips_byte_exact_with_from_quoting() {
    let ts = store();
    let m1: &[u8] = b"Return-Path: <ignored@example.org>\nDelivered-To: alice@example.edu\nSubject: quoted\n\n\
        From the start of a line.\n>From already quoted once\n>>From twice\n> From not a from line\n\nFrom after a blank line\nend\n";
    let m2: &[u8] = b"Delivered-To: bob@example.edu\nSubject: bounce\n\nA bounce: null sender.\n";
    let m3: &[u8] = b"To: Carl <carl@example.edu>\r\nCc: dora@example.edu\r\nSubject: crlf\r\n\r\nbody\r\n";
    // The last message of a file whose writer added no blank line after it.
    let m4: &[u8] = b"Delivered-To: eve@example.edu\nSubject: at the end\n\nlast line\n";
    let mut mbox = Vec::new();
    for (from_line, m) in [
        ("From sender@example.org Thu Jan  2 03:04:05 2025\n", m1),
        ("From MAILER-DAEMON Fri Jan  3 00:00:00 2025\n", m2),
        ("From <fwd@example.net> Sat Jan  4 00:00:00 2025\n", m3),
        ("From last@example.org Sun Jan  5 00:00:00 2025\n", m4),
    ] {
        mbox.extend_from_slice(from_line.as_bytes());
        mbox.extend_from_slice(&mboxrd_quote(m));
        if m != m4 {
            mbox.push(b'\n');
        }
    }
    let path = ts.path().join("quarantine.mbox");
    fs::write(&path, &mbox).unwrap();

    let text = import_ok(&ts, &["--format", "mbox", "--verdict", "SPAM", "--scanner", "old", path.to_str().unwrap()]);
    assert!(text.contains("imported 4 messages"), "{text}");
    for (subject, original, from) in [
        ("quoted", m1, "sender@example.org"),
        ("bounce", m2, ""),
        ("crlf", m3, "fwd@example.net"),
        ("at the end", m4, "last@example.org"),
    ] {
        let id = id_of(&ts, subject);
        assert_eq!(ts.raw(&id), original, "{subject}: bytes differ");
        let j = ts.show_json(&id);
        assert_eq!(j["verdict"], "SPAM");
        let row = rows(&ts).into_iter().find(|r| r.0 == id).unwrap();
        assert_eq!(row.1, from, "{subject}: envelope sender from the From line");
    }
    assert_eq!(rcpts(&ts, &id_of(&ts, "quoted")), ["alice@example.edu"]);
    assert_eq!(rcpts(&ts, &id_of(&ts, "crlf")), ["carl@example.edu", "dora@example.edu"]);
    ts.verify_deep_clean("");
}

#[test]
fn mboxo_keeps_quoted_lines_as_found() {
    let ts = store();
    let mbox = b"From a@example.org Thu Jan  2 03:04:05 2025\nDelivered-To: r@example.edu\nSubject: o\n\n>From quoted by mboxo\n>>From kept\n\n";
    let path = ts.path().join("o.mbox");
    fs::write(&path, mbox).unwrap();
    import_ok(&ts, &["--format", "mbox", "--mbox-variant", "mboxo", "--verdict", "V", path.to_str().unwrap()]);
    assert_eq!(
        ts.raw(&id_of(&ts, "o")),
        b"Delivered-To: r@example.edu\nSubject: o\n\n>From quoted by mboxo\n>>From kept\n"
    );
}

#[test]
fn maildir_reads_new_and_cur_and_subfolders_but_never_tmp() {
    let ts = store();
    let md = ts.path().join("Maildir");
    for d in ["new", "cur", "tmp", ".Junk/new", ".Junk/cur", ".Junk/tmp"] {
        fs::create_dir_all(md.join(d)).unwrap();
    }
    let mut rng = XorShift::new(7);
    let mut binary = b"Return-Path: <>\nDelivered-To: ann@example.edu\nSubject: binary\n\n".to_vec();
    binary.extend(rng.bytes(70_000));
    let files: Vec<(&str, Vec<u8>)> = vec![
        (
            "new/1700000000.M1P1.host",
            b"Return-Path: <s1@example.org>\nDelivered-To: ann@example.edu\nX-Original-To: alias@example.edu\nSubject: in new\n\nx\n".to_vec(),
        ),
        ("cur/1700000001.M2P1.host:2,S", b"X-Original-To: bo@example.edu\nSubject: in cur\n\ny\n".to_vec()),
        ("cur/1700000002.M3P1.host:2,", binary),
        (".Junk/cur/1700000003.M4P1.host:2,S", b"Delivered-To: junk@example.edu\nSubject: in junk\n\nz\n".to_vec()),
        ("tmp/1700000004.M5P1.host", b"Delivered-To: never@example.edu\nSubject: in tmp\n\nw\n".to_vec()),
        ("new/.hidden", b"Delivered-To: never@example.edu\nSubject: hidden\n\nw\n".to_vec()),
    ];
    for (name, bytes) in &files {
        fs::write(md.join(name), bytes).unwrap();
    }
    let text = import_ok(&ts, &["--format", "maildir", "--verdict", "SPAM", md.to_str().unwrap()]);
    assert!(text.contains("imported 4 messages"), "{text}");
    let subjects: Vec<String> = rows(&ts).into_iter().map(|r| r.2).collect();
    assert_eq!(subjects, ["binary", "in cur", "in junk", "in new"]);
    for (name, bytes) in &files[..4] {
        let subject = String::from_utf8_lossy(bytes)
            .lines()
            .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
            .unwrap();
        assert_eq!(ts.raw(&id_of(&ts, &subject)), *bytes, "{name}");
    }
    assert_eq!(rcpts(&ts, &id_of(&ts, "in new")), ["ann@example.edu"], "Delivered-To wins over X-Original-To");
    assert_eq!(rcpts(&ts, &id_of(&ts, "in cur")), ["bo@example.edu"]);
    let senders: Vec<(String, String)> = rows(&ts).into_iter().map(|r| (r.2, r.1)).collect();
    assert!(senders.contains(&("in new".into(), "s1@example.org".into())));
    assert!(senders.contains(&("binary".into(), "".into())), "Return-Path: <> is the null sender");
    // Not a Maildir at all: reported, exit 1.
    let out = import(&ts, &["--format", "maildir", "--verdict", "SPAM", ts.path().to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("not a Maildir"), "{}", out.stderr);
}

#[test]
fn keep_dates_takes_the_received_time_from_the_source() {
    let ts = store();
    let md = ts.path().join("Maildir");
    fs::create_dir_all(md.join("new")).unwrap();
    fs::write(md.join("new/1700000000.M1P1.host"), b"Delivered-To: a@example.edu\nSubject: old\n\nx\n").unwrap();
    let mbox = ts.path().join("mbox");
    fs::write(
        &mbox,
        b"From s@example.org Thu Jan  2 03:04:05 2025\nDelivered-To: a@example.edu\nSubject: boxed\n\ny\n",
    )
    .unwrap();
    import_ok(&ts, &["--format", "maildir", "--verdict", "V", "--keep-dates", md.to_str().unwrap()]);
    let mut c = ts.cmd(&["import", "--format", "mbox", "--verdict", "V", "--keep-dates", mbox.to_str().unwrap()]);
    c.env("TZ", "UTC");
    let out = run(c, Input::Null, HANG);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(ts.sql_count("SELECT received_us FROM messages WHERE subject = 'old'"), 1_700_000_000_000_000);
    assert_eq!(ts.sql_count("SELECT received_us FROM messages WHERE subject = 'boxed'"), 1_735_787_045_000_000);
    // Without it, the import time.
    let fresh = ts.path().join("fresh.eml");
    fs::write(&fresh, b"Delivered-To: a@example.edu\nSubject: fresh\n\nz\n").unwrap();
    import_ok(&ts, &["--format", "eml", "--verdict", "V", fresh.to_str().unwrap()]);
    assert!(ts.sql_count("SELECT received_us FROM messages WHERE subject = 'fresh'") > 1_760_000_000_000_000);
}

#[test]
fn eml_files_and_directories_keep_their_envelope_flags() {
    let ts = store();
    let dir = ts.path().join("eml");
    fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    let a = b"From: x@example.org\r\nTo: hidden@example.edu\r\nSubject: a\r\n\r\nnul \0 and \xff bytes\r\n".to_vec();
    let b = b"Subject: b\n\nno headers with addresses\n".to_vec();
    fs::write(dir.join("a.eml"), &a).unwrap();
    fs::write(dir.join("sub/deeper/b.eml"), &b).unwrap();
    let single = ts.path().join("single.eml");
    fs::write(&single, b"Subject: c\n\nc\n").unwrap();
    let text = import_ok(
        &ts,
        &[
            "--format",
            "eml",
            "--verdict",
            "PMX:VIRUS",
            "--from",
            "<>",
            "--rcpt",
            "Admin@Example.edu",
            "--rcpt",
            "sec@example.edu",
            dir.to_str().unwrap(),
            single.to_str().unwrap(),
        ],
    );
    assert!(text.contains("imported 3 messages"), "{text}");
    for (s, bytes) in [("a", &a[..]), ("b", &b[..]), ("c", b"Subject: c\n\nc\n")] {
        let id = id_of(&ts, s);
        assert_eq!(ts.raw(&id), bytes);
        assert_eq!(rcpts(&ts, &id), ["Admin@Example.edu", "sec@example.edu"], "--rcpt overrides the headers");
    }
    assert!(rows(&ts).iter().all(|r| r.1.is_empty()), "--from <> is the null sender for all");
}

#[test]
fn amavis_files_plain_and_gzipped_keep_their_bytes_and_envelope() {
    let ts = store();
    let dir = ts.path().join("virusmails");
    fs::create_dir_all(dir.join("spam/A")).unwrap();
    let virus = b"X-Envelope-From: <>\nX-Envelope-To: <alice@example.edu>,\n <Bob@example.edu>, <alice@EXAMPLE.edu>\nX-Envelope-To-Blocked: <alice@example.edu>\nX-Quarantine-ID: <AbC123>\nX-Amavis-Alert: INFECTED, message contains virus:\n Eicar-Test-Signature\nReturn-Path: <not-this@example.org>\nDelivered-To: not-this@example.edu\nSubject: virus\n\nX5O!P%@AP\n".to_vec();
    let spam = b"X-Envelope-From: <spammer@example.net>\nX-Envelope-To: <carl@example.edu>\nX-Quarantine-ID: <Zz9>\nSubject: spam\n\nbuy\n".to_vec();
    fs::write(dir.join("virus-AbC123"), &virus).unwrap();
    let gz = dir.join("spam/A/spam-Zz9.gz");
    fs::write(dir.join("spam/A/spam-Zz9"), &spam).unwrap();
    assert!(Command::new(quarantine_testkit::require("gzip", "gzip"))
        .arg(dir.join("spam/A/spam-Zz9"))
        .status()
        .unwrap()
        .success());
    assert!(gz.is_file());
    // A gzip file cut short: reported and skipped, the rest goes on.
    let gz_bytes = fs::read(&gz).unwrap();
    fs::write(dir.join("spam/A/spam-broken.gz"), &gz_bytes[..gz_bytes.len() / 2]).unwrap();

    let out =
        import(&ts, &["--format", "amavis", "--verdict", "PMX:VIRUS", "--scanner", "amavis", dir.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.text().contains("imported 2 messages"), "{}", out.text());
    assert_eq!(out.stderr.lines().filter(|l| l.starts_with("skipped ")).count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("spam-broken.gz"), "{}", out.stderr);

    let v = id_of(&ts, "virus");
    assert_eq!(ts.raw(&v), virus, "the file's bytes as found, amavis headers included");
    assert_eq!(rcpts(&ts, &v), ["alice@example.edu", "Bob@example.edu"]);
    let j = ts.show_json(&v);
    assert!(j["reason"].as_str().unwrap().contains("Eicar-Test-Signature"), "{j}");
    let s = id_of(&ts, "spam");
    assert_eq!(ts.raw(&s), spam, "gunzipped");
    assert_eq!(rcpts(&ts, &s), ["carl@example.edu"]);
    let senders: Vec<(String, String)> = rows(&ts).into_iter().map(|r| (r.2, r.1)).collect();
    assert_eq!(senders, [("spam".into(), "spammer@example.net".into()), ("virus".into(), "".into())]);
    assert_eq!(
        fs::read_dir(ts.root.join("tmp")).unwrap().count(),
        0,
        "no temp file is left behind by the skipped message"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Idempotency, skips, audit

#[test]
fn re_running_an_import_adds_nothing_and_merges_recipients() {
    let ts = store();
    let dir = ts.path().join("eml");
    fs::create_dir(&dir).unwrap();
    for i in 0..20 {
        fs::write(dir.join(format!("{i:02}.eml")), format!("Delivered-To: u{i}@example.edu\nSubject: m{i}\n\n{i}\n"))
            .unwrap();
    }
    // The same bytes twice in one run are one message.
    fs::write(dir.join("dup.eml"), fs::read(dir.join("00.eml")).unwrap()).unwrap();
    let text = import_ok(&ts, &["--format", "eml", "--verdict", "SPAM", dir.to_str().unwrap()]);
    assert!(text.contains("imported 20 messages") && text.contains("1 already held"), "{text}");
    assert_eq!(ts.messages(), 20);
    let before = ts.sql_count("SELECT count(*) FROM recipients");

    let text = import_ok(&ts, &["--format", "eml", "--verdict", "SPAM", dir.to_str().unwrap()]);
    assert!(text.contains("imported 0 messages") && text.contains("21 already held"), "{text}");
    assert_eq!(ts.messages(), 20);
    assert_eq!(ts.sql_count("SELECT count(*) FROM recipients"), before);
    assert_eq!(fs::read_dir(ts.root.join("tmp")).unwrap().count(), 0);

    // Same bytes, an extra recipient: the existing message gains it, no new message.
    let text =
        import_ok(&ts, &["--format", "eml", "--verdict", "SPAM", "--rcpt", "extra@example.edu", dir.to_str().unwrap()]);
    assert!(text.contains("imported 0 messages") && text.contains("20 recipient(s) added"), "{text}");
    assert_eq!(ts.messages(), 20);

    // The audit rows of each run add up to its summary.
    let log = ts.q(&["log", "--json"]);
    assert_eq!(log.code, 0, "{log:?}");
    let mut imported = 0;
    let mut dups = 0;
    for line in log.text().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["action"] == "import" {
            imported += v["counts"]["imported"].as_u64().unwrap();
            dups += v["counts"]["duplicates"].as_u64().unwrap();
        }
    }
    assert_eq!((imported, dups), (20, 1 + 21 + 21));
}

#[test]
fn unreadable_sources_are_reported_one_line_each_and_skipped() {
    let ts = store();
    let dir = ts.path().join("eml");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("good1.eml"), b"Delivered-To: a@example.edu\nSubject: good1\n\nx\n").unwrap();
    fs::write(dir.join("good2.eml"), b"Delivered-To: a@example.edu\nSubject: good2\n\ny\n").unwrap();
    symlink(dir.join("gone.eml"), dir.join("dangling.eml")).unwrap();
    // Opens fine, fails on read (EIO): an error in the middle of reading a message.
    symlink("/proc/self/mem", dir.join("eio.eml")).unwrap();
    fs::write(dir.join("norcpt.eml"), b"Subject: nobody to deliver to\n\nz\n").unwrap();
    let missing = ts.path().join("no-such-file.eml");

    let out = import(&ts, &["--format", "eml", "--verdict", "SPAM", dir.to_str().unwrap(), missing.to_str().unwrap()]);
    assert_eq!(out.code, 1, "anything skipped exits 1: {out:?}");
    assert!(out.text().contains("imported 2 messages"), "{}", out.text());
    let skipped: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("skipped ")).collect();
    assert_eq!(skipped.len(), 4, "{}", out.stderr);
    for name in ["dangling.eml", "eio.eml", "norcpt.eml", "no-such-file.eml"] {
        assert_eq!(skipped.iter().filter(|l| l.contains(name)).count(), 1, "{name}: {}", out.stderr);
    }
    assert!(out.text().contains("4 skipped"), "{}", out.text());
    assert_eq!(ts.messages(), 2);
    assert_eq!(fs::read_dir(ts.root.join("tmp")).unwrap().count(), 0);
    // --json carries the same.
    let out = import(&ts, &["--format", "eml", "--verdict", "SPAM", "--json", dir.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["skipped"].as_array().unwrap().len(), 3);
    assert_eq!(v["duplicates"], 2);
}

#[test]
fn bad_arguments_are_usage_errors() {
    let ts = store();
    let out = import(&ts, &["--format", "pst", "--verdict", "V", "x"]);
    assert_eq!(out.code, 2, "{out:?}");
    let out = import(&ts, &["--format", "eml", "--verdict", "V"]);
    assert_eq!(out.code, 2, "no PATH: {out:?}");
    let out = import(&ts, &["--format", "eml", "--verdict", "V", "--rcpt", "a\r\nDATA", "x"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(ts.messages(), 0);
}

// ---------------------------------------------------------------------------------------------------------------
// Crash: SIGKILL at random points, then resume

/// A corpus of `n` distinct messages of mixed sizes (200 B to ~300 KB) in a directory.
fn corpus(dir: &Path, n: usize, seed: u64) -> Vec<PathBuf> {
    fs::create_dir_all(dir).unwrap();
    let mut rng = XorShift::new(seed);
    (0..n)
        .map(|i| {
            let size = match rng.below(10) {
                0 => 100_000 + rng.below(200_000) as usize,
                1..=3 => 10_000 + rng.below(40_000) as usize,
                _ => 200 + rng.below(8_000) as usize,
            };
            let mut m = format!(
                "Return-Path: <s{}@example.org>\nDelivered-To: r{}@example.edu\nSubject: msg {i}\n\n",
                i % 7,
                i % 13
            )
            .into_bytes();
            let body = rng.bytes(size / 2);
            for chunk in body.chunks(38) {
                for b in chunk {
                    m.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                m.push(b'\n');
            }
            let p = dir.join(format!("{i:05}.eml"));
            fs::write(&p, &m).unwrap();
            p
        })
        .collect()
}

#[test]
fn an_import_killed_at_random_points_resumes_without_duplicates() {
    let ts = store();
    let dir = ts.path().join("corpus");
    let files = corpus(&dir, 600, 42);
    let mut rng = XorShift::new(99);
    let args =
        ["import", "--format", "eml", "--verdict", "SPAM", "--batch", "16", "--jobs", "8", dir.to_str().unwrap()];
    let mut kills = 0;
    for round in 0..5 {
        let before = ts.messages();
        let mut child = ts.cmd(&args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let started = Instant::now();
        let wait = Duration::from_millis(30 + rng.below(400));
        let finished = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if started.elapsed() >= wait {
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        if finished.is_none() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            kills += 1;
        }
        let after = ts.messages();
        assert!(after >= before, "round {round}: committed messages vanished ({before} -> {after})");
        assert_eq!(
            ts.sql_count("SELECT count(*) - count(DISTINCT hash) FROM messages"),
            0,
            "round {round}: a message was imported twice"
        );
        ts.verify_deep_clean("");
    }
    assert!(kills >= 2, "the import was too fast to be killed; use a bigger corpus");
    let out = ts.q(&args);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(ts.messages(), files.len() as u64);
    assert_eq!(ts.sql_count("SELECT count(DISTINCT hash) FROM messages"), files.len() as u64);
    assert_eq!(ts.sql_count("SELECT count(*) FROM recipients"), files.len() as u64);
    ts.verify_deep_clean("");
    // Every message is byte-exact (a sample; all hashes were checked by verify --deep).
    for i in (0..files.len()).step_by(37) {
        let id = id_of(&ts, &format!("msg {i}"));
        assert_eq!(ts.raw(&id), fs::read(&files[i]).unwrap(), "msg {i}");
    }
    // And a run after completion adds nothing.
    let out = ts.q(&args);
    assert!(out.text().contains("imported 0 messages"), "{}", out.text());
    assert_eq!(ts.messages(), files.len() as u64);
}

#[test]
fn holds_run_beside_an_import() {
    let ts = store();
    let dir = ts.path().join("corpus");
    corpus(&dir, 300, 5);
    let child = ts
        .cmd(&["import", "--format", "eml", "--verdict", "SPAM", dir.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut held = 0;
    for i in 0..10 {
        let out = ts.hold(format!("Subject: beside {i}\n\nx\n").as_bytes(), crate::hold::ENVELOPE);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.elapsed < Duration::from_secs(10), "a hold waited {:?} beside the import", out.elapsed);
        held += 1;
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(ts.messages(), 300 + held);
    ts.verify_deep_clean("");
}

// ---------------------------------------------------------------------------------------------------------------
// check

#[test]
fn check_passes_on_a_healthy_store_and_fails_75_with_one_line_otherwise() {
    let ts = store();
    let out = ts.q(&["check"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.text().starts_with("ok: "), "{}", out.text());
    assert_eq!(fs::read_dir(ts.root.join("tmp")).unwrap().count(), 0, "the probe file is removed");

    let fails = |out: &Out, what: &str, needle: &str| {
        assert_eq!(out.code, 75, "{what}: {out:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{what}: one line: {:?}", out.stderr);
        assert!(out.stderr.contains(needle), "{what}: {:?} lacks {needle:?}", out.stderr);
    };
    // Above the free space.
    fails(&ts.q(&["check", "--min-free", "1000000T"]), "min-free", "free");
    // Missing store, and a directory that is not a store.
    let missing = ts.path().join("nowhere");
    fails(&check_at(&missing), "missing", "does not exist");
    fs::create_dir(ts.path().join("empty")).unwrap();
    let empty = ts.path().join("empty");
    fails(&check_at(&empty), "not a store", "not a quarantine store");
    // tmp/ replaced by a file: a hold could not stage anything.
    fs::remove_dir(ts.root.join("tmp")).unwrap();
    fs::write(ts.root.join("tmp"), b"").unwrap();
    fails(&ts.q(&["check"]), "tmp is a file", "tmp");
    fs::remove_file(ts.root.join("tmp")).unwrap();
    fs::create_dir(ts.root.join("tmp")).unwrap();
    assert_eq!(ts.q(&["check"]).code, 0);
    // A config hold cannot read fails the check the same way.
    let bad = ts.path().join("bad.toml");
    fs::write(&bad, "stroe = 1\n").unwrap();
    let out = ts.q(&["--config", bad.to_str().unwrap(), "check"]);
    assert_eq!(out.code, 75, "{out:?}");
    // A bad flag is a usage error.
    assert_eq!(ts.q(&["check", "--min-free", "lots"]).code, 2);
}

#[test]
fn check_fails_on_a_read_only_store_for_its_owner() {
    // As root, permissions do not stop writes: drop to `nobody` for the store's owner.
    let ts = store();
    if !is_root() {
        // The test user owns the store: make tmp/ read-only.
        let mut p = fs::metadata(ts.root.join("tmp")).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o500);
        fs::set_permissions(ts.root.join("tmp"), p).unwrap();
        let out = ts.q(&["check"]);
        assert_eq!(out.code, 75, "{out:?}");
        return;
    }
    // Give the store to nobody, then make tmp/ read-only: nobody (as hold would run) cannot stage a blob.
    chown_r(&ts.root, "nobody:nogroup");
    let traverse = |p: &Path| {
        let mut perm = fs::metadata(p).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o711);
        fs::set_permissions(p, perm).unwrap();
    };
    traverse(ts.path());
    let as_nobody = |args: &[&str]| {
        let out = ts
            .program(quarantine_testkit::require("setpriv", "util-linux"))
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(crate::BIN)
            .arg("--store")
            .arg(&ts.root)
            .args(args)
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert_eq!(as_nobody(&["check"]).0, 0, "{:?}", as_nobody(&["check"]));
    let mut p = fs::metadata(ts.root.join("tmp")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o500);
    fs::set_permissions(ts.root.join("tmp"), p).unwrap();
    let (code, err) = as_nobody(&["check"]);
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("cannot write") && err.lines().count() == 1, "{err}");
}

fn chown_r(path: &Path, owner: &str) {
    assert!(Command::new("chown").arg("-R").arg(owner).arg(path).status().unwrap().success());
}

/// `quarantine --store PATH check`.
fn check_at(store: &Path) -> Out {
    let scratch = crate::scratch();
    let mut c = scratch.cmd(&["--store"]);
    c.arg(store).arg("check");
    run(c, Input::Null, HANG)
}
