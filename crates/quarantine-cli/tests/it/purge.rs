//! Purge and GC against real processes and files: shared blobs, tombstones, policy ages (via faketime),
//! releasing recipients, freeze, orphan grace, holds racing purges, and SIGKILL during purge.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use quarantine_testkit::{Out, Store};

use crate::store;

/// `hold --verdict VERDICT --from a@example.org -- b@example.net` with `bytes`, then an `ingest` (hold writes only
/// the spool, DESIGN section 4; these tests expect rows and blobs at once); asserted, returns the id.
fn hold(s: &Store, verdict: &str, bytes: &[u8]) -> String {
    let id = s.hold_ok(bytes, &["--verdict", verdict, "--from", "a@example.org", "--", "b@example.net"]);
    s.ingest();
    id
}

/// Holds as if it happened `ago` in the past (faketime shifts the clock hold reads).
fn hold_aged(s: &Store, verdict: &str, ago: &str, bytes: &[u8]) -> String {
    let id = s.hold_aged(ago, bytes, &["--verdict", verdict, "--from", "a@example.org", "--", "b@example.net"]);
    let id = id.ok().trim().to_string();
    s.ingest();
    id
}

fn state(s: &Store, id: &str) -> String {
    s.show_json(id)["state"].as_str().unwrap().to_string()
}

fn msg(tag: &str) -> Vec<u8> {
    format!("From: x@example.org\r\nSubject: {tag}\r\n\r\nbody of {tag}\r\n").into_bytes()
}

fn ok(o: &Out) {
    o.code_is(0, "");
}

#[test]
fn shared_blob_survives_until_its_last_message_goes() {
    let s = store();
    let a = hold(&s, "SPAM", &msg("shared"));
    let b = hold(&s, "PMX:VIRUS", &msg("shared"));
    assert_eq!(s.blob_files().len(), 1);
    ok(&s.q(&["purge", "--id", &a, "--yes"]));
    assert_eq!(state(&s, &a), "purged");
    assert_eq!(s.blob_files().len(), 1, "blob still referenced by {b} must stay");
    let raw = s.q(&["show", &b, "--raw"]);
    ok(&raw);
    assert_eq!(raw.stdout, msg("shared"));
    ok(&s.q(&["purge", "--id", &b, "--yes"]));
    assert_eq!(s.blob_files().len(), 0, "last reference gone: blob must go");
    assert_eq!(s.sql("SELECT count(*) FROM gc_queue"), "0");
    s.verify_deep_clean("purge");
}

#[test]
fn tombstones_keep_who_when_and_why() {
    let s = store();
    let id = hold(&s, "SPAM", &msg("tomb"));
    ok(&s.q(&["purge", "--id", &id, "--yes", "--reason", "helpdesk ticket 42", "--actor", "carol"]));
    let j = s.show_json(&id);
    assert_eq!(j["state"], "purged");
    assert_eq!(j["purged_by"], "carol");
    assert_eq!(j["purge_reason"], "helpdesk ticket 42");
    assert!(j["purged_at"].as_str().unwrap().starts_with("20"));
    assert_eq!(j["recipients"][0]["state"], "purged");
    // The original is gone and show --raw says so instead of printing anything.
    let raw = s.q(&["show", &id, "--raw"]);
    assert_eq!(raw.code, 1);
    assert!(raw.stdout.is_empty());
    assert!(raw.stderr.contains("purged"));
    let log = s.sql("SELECT actor || ' ' || action || ' ' || reason FROM audit");
    assert_eq!(log, "carol purge helpdesk ticket 42");
}

#[test]
fn refuses_without_selector_or_policy() {
    let s = store();
    let id = hold(&s, "SPAM", &msg("x"));
    let out = s.q(&["purge", "--yes"]);
    assert_eq!(out.code, 2);
    let err = out.stderr;
    assert!(err.contains("retention policy"), "{err}");
    assert_eq!(err.trim().lines().count(), 1);
    assert_eq!(state(&s, &id), "held");
}

#[test]
fn retention_policy_per_verdict_with_real_ages() {
    let s = store();
    // The scratch config every run reads (QUARANTINE_CONFIG).
    s.set_config("[retention]\ndefault = \"30d\"\n[retention.verdict]\nSPAM = \"14d\"\n\"PMX:VIRUS\" = \"90d\"\n");
    let spam_old = hold_aged(&s, "SPAM", "20d", &msg("spam old"));
    let spam_new = hold_aged(&s, "SPAM", "10d", &msg("spam new"));
    let virus_old = hold_aged(&s, "PMX:VIRUS", "60d", &msg("virus 60d"));
    let virus_older = hold_aged(&s, "PMX:VIRUS", "100d", &msg("virus 100d"));
    let other_old = hold_aged(&s, "Heuristics.Phishing", "40d", &msg("phish 40d"));
    let other_new = hold(&s, "Heuristics.Phishing", &msg("phish now"));
    let dry = s.q(&["purge", "--dry-run"]);
    assert!(dry.ok().contains("would purge 3 message(s)"), "{}", dry.brief());
    assert_eq!(state(&s, &spam_old), "held", "dry run changes nothing");
    ok(&s.q(&["purge", "--yes"]));
    for (id, want) in [
        (&spam_old, "purged"),
        (&spam_new, "held"),
        (&virus_old, "held"),
        (&virus_older, "purged"),
        (&other_old, "purged"),
        (&other_new, "held"),
    ] {
        assert_eq!(state(&s, id), want, "{id}");
    }
    s.verify_deep_clean("purge");
}

#[test]
fn older_than_combines_with_selectors() {
    let s = store();
    let old_spam = hold_aged(&s, "SPAM", "3d", &msg("a"));
    let old_virus = hold_aged(&s, "PMX:VIRUS", "3d", &msg("b"));
    let new_spam = hold(&s, "SPAM", &msg("c"));
    ok(&s.q(&["purge", "--older-than", "2d", "--verdict", "SPAM", "--yes"]));
    assert_eq!(state(&s, &old_spam), "purged");
    assert_eq!(state(&s, &old_virus), "held");
    assert_eq!(state(&s, &new_spam), "held");
    let bad = s.q(&["purge", "--older-than", "soon", "--yes"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("\"soon\""));
}

#[test]
fn releasing_recipients_are_never_purged() {
    let s = store();
    let busy = hold(&s, "SPAM", &msg("on the wire"));
    let idle = hold(&s, "SPAM", &msg("idle"));
    s.sql(&format!("UPDATE recipients SET state = 'releasing' WHERE message = '{busy}'"));
    let out = s.q(&["purge", "--verdict", "SPAM", "--yes"]);
    ok(&out);
    assert!(out.text().contains("skipped 1"), "{}", out.brief());
    assert_eq!(state(&s, &busy), "releasing");
    assert_eq!(state(&s, &idle), "purged");
    assert_eq!(s.q(&["show", &busy, "--raw"]).stdout, msg("on the wire"));
}

#[test]
fn frozen_store_refuses_until_thawed() {
    let s = store();
    let id = hold(&s, "SPAM", &msg("evidence"));
    ok(&s.q(&["freeze", "--reason", "PMX signature incident"]));
    let dry = s.q(&["purge", "--verdict", "SPAM", "--dry-run"]);
    ok(&dry);
    assert!(String::from_utf8_lossy(&dry.stdout).contains("FROZEN"));
    let out = s.q(&["purge", "--verdict", "SPAM", "--yes"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("frozen"));
    assert_eq!(state(&s, &id), "held");
    ok(&s.q(&["thaw"]));
    ok(&s.q(&["purge", "--verdict", "SPAM", "--yes"]));
    assert_eq!(state(&s, &id), "purged");
    let actions: Vec<String> = s
        .rows("SELECT action FROM audit WHERE action != 'hold' ORDER BY seq")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(actions, ["freeze", "thaw", "purge"]);
}

#[test]
fn orphans_and_temp_files_survive_the_grace_period() {
    let s = store();
    let keep = hold(&s, "SPAM", &msg("live"));
    let hex = "ab".repeat(32);
    let dir = s.root.join("blobs/ab/ab");
    std::fs::create_dir_all(&dir).unwrap();
    let orphan = dir.join(&hex);
    std::fs::write(&orphan, b"left by a killed hold").unwrap();
    let tmp = s.root.join("tmp/0123.999.tmp");
    std::fs::write(&tmp, b"partial").unwrap();
    ok(&s.q(&["purge", "--verdict", "NO-SUCH-VERDICT", "--yes"]));
    assert!(orphan.exists(), "young orphan must survive the default 24h grace");
    assert!(tmp.exists());
    let verify = s.q(&["verify"]);
    ok(&verify);
    assert!(String::from_utf8_lossy(&verify.stdout).contains(&hex), "verify lists the orphan");
    for p in [&orphan, &tmp] {
        let st = Command::new("touch").args(["-d", "2 days ago"]).arg(p).status().unwrap();
        assert!(st.success());
    }
    ok(&s.q(&["purge", "--verdict", "NO-SUCH-VERDICT", "--yes"]));
    assert!(!orphan.exists(), "old orphan is removed");
    assert!(!tmp.exists(), "stale temp file is removed");
    assert_eq!(s.q(&["show", &keep, "--raw"]).stdout, msg("live"));
    s.verify_deep_clean("purge");
}

/// Holds race purges over the same blobs: each body is held three times as CHURN and then once as KEEP, while
/// a purge loop removes CHURN (orphan grace 0). So a KEEP hold regularly deduplicates onto a blob that a purge has
/// just queued for GC. Every acknowledged KEEP hold must read back byte-exact and the store must verify clean.
#[test]
fn holds_racing_purges_lose_nothing_acknowledged() {
    let s = store();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let purger = {
        let stop = stop.clone();
        let path = s.root.clone();
        let config = s.config();
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = crate::quarantine()
                    .env("QUARANTINE_CONFIG", &config)
                    .arg("--store")
                    .arg(&path)
                    .args(["purge", "--verdict", "CHURN", "--yes", "--orphan-grace", "0s"])
                    .stdin(Stdio::null())
                    .output()
                    .unwrap();
                assert!(out.status.success(), "purge failed: {out:?}");
                runs += 1;
            }
            runs
        })
    };
    let holder = |lane: usize| {
        let s = &s;
        move || {
            let started = Instant::now();
            let mut acknowledged = Vec::new();
            let mut i = 0usize;
            while started.elapsed() < Duration::from_secs(30) {
                let body = msg(&format!("lane {lane} generation {}", i / 4));
                let verdict = if i % 4 == 3 { "KEEP" } else { "CHURN" };
                let out = s.hold(&body, &["--verdict", verdict, "--from", "a@example.org", "--", "b@example.net"]);
                match out.code {
                    0 if verdict == "KEEP" => acknowledged.push((out.id(), body)),
                    // 75 is allowed: the sweep with grace 0 may remove a live hold's temp file; the MTA retries.
                    0 | 75 => {}
                    other => panic!("hold exited {other}: {}", out.brief()),
                }
                i += 1;
            }
            (i, acknowledged)
        }
    };
    let (r0, r1) = std::thread::scope(|sc| {
        let a = sc.spawn(holder(0));
        let b = sc.spawn(holder(1));
        (a.join().unwrap(), b.join().unwrap())
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let purges = purger.join().unwrap();
    let holds = r0.0 + r1.0;
    let acknowledged: Vec<_> = r0.1.into_iter().chain(r1.1).collect();
    assert!(purges >= 3, "only {purges} purge runs overlapped the holds");
    assert!(acknowledged.len() >= 20, "only {} KEEP holds", acknowledged.len());
    // Every command ingests a bounded batch first; the whole backlog of the race goes in now.
    s.ingest();
    for (id, body) in &acknowledged {
        let raw = s.q(&["show", id, "--raw"]);
        assert!(raw.success(), "acknowledged {id} unreadable: {}", raw.brief());
        assert_eq!(&raw.stdout, body, "{id}");
    }
    s.verify_deep_clean("purge");
    eprintln!("{holds} holds ({} KEEP acknowledged) raced {purges} purges", acknowledged.len());
}

/// SIGKILL at random moments during purge: never a live row without its blob.
#[test]
fn killed_purges_never_leave_a_row_without_its_blob() {
    let s = store();
    for i in 0..150 {
        hold(&s, if i % 2 == 0 { "SPAM" } else { "CHURN" }, &msg(&format!("kill {}", i % 100)));
    }
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for _round in 0..25 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = s
            .cmd(&["purge", "--verdict", "CHURN", "--verdict", "SPAM", "--yes", "--orphan-grace", "0s"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(seed % 40_000));
        let _ = child.kill();
        let _ = child.wait();
        s.verify_deep_clean("purge");
        // Refill a few so later rounds have work.
        for j in 0..6 {
            hold(&s, "CHURN", &msg(&format!("refill {}", (seed as usize + j) % 50)));
        }
    }
    ok(&s.q(&["purge", "--verdict", "CHURN", "--verdict", "SPAM", "--yes", "--orphan-grace", "0s"]));
    s.verify_deep_clean("purge");
    assert_eq!(s.blob_files().len(), 0, "a completed purge after the kills removes every blob");
    assert_eq!(s.sql("SELECT count(*) FROM gc_queue"), "0");
}
