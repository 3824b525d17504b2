//! End to end inside a real MTA: a private Postfix instance (tests/postfix/*.in, see docs/integration/postfix.md)
//! whose header checks send flagged mail to a pipe transport running `quarantine hold` as `nobody`.
//!
//! 1. Mail sent over SMTP lands in the store with the right envelope: several recipients in one pipe call, the
//!    null sender kept empty, the Postfix queue id recorded; unflagged mail is delivered to the inside server.
//! 2. With the store unusable (its `tmp/` replaced by a file) flagged mail stays deferred in Postfix's queue;
//!    nothing bounces. `quarantine check` says so (75) as the pipe's user.
//! 3. Store repaired, queue flushed: everything is held, nothing lost, nothing bounced.
//! 4. `quarantine release` sends those messages back through Postfix on its re-injection port, which skips the
//!    header checks, to the smtp-sink: each recipient gets the original once, nothing loops into the quarantine.
//!
//! Needs root (a private Postfix instance runs as root and drops to its users) and Postfix; installs Postfix
//! with scripts/install-test-deps. Fails, saying so, when not run as root or when Postfix is missing.

use std::process::Command;
use std::time::Duration;

use quarantine_testkit::env::require_root;
use quarantine_testkit::postfix::Postfix;
use quarantine_testkit::run::wait_for;
use quarantine_testkit::smtp::send;

use crate::BIN;
const WAIT: Duration = Duration::from_secs(30);

fn ensure_postfix() {
    require_root("a private Postfix instance");
    quarantine_testkit::postfix::postfix_bin();
    quarantine_testkit::sink::smtp_sink();
}

/// The sqlite3 shell as the store's owner, waiting for locks: run as root, it would leave a root-owned `-wal` or
/// `-shm` behind whenever it is the first to open the index, and the next `hold` (as nobody) would fail.
fn sqlite3() -> Command {
    let mut c = crate::program(quarantine_testkit::require("setpriv", "util-linux"));
    c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]);
    c.arg(crate::sqlite3()).args(["-cmd", ".timeout 10000"]);
    c
}

/// `(queue_id, env_from, verdict)` of every live message, and its recipients, through sqlite3.
fn held(pf: &Postfix) -> Vec<(String, String, String, String, Vec<String>)> {
    // hold writes the spool (DESIGN section 4); index what it acknowledged first (fails while spool/ is broken).
    let _ = pf.q_as_user(&["ingest"]);
    let out = sqlite3()
        .arg("-separator")
        .arg("\t")
        .arg(pf.store.join("index.sqlite"))
        .arg(
            "SELECT m.id, coalesce(m.queue_id, ''), m.env_from, m.verdict,
                    (SELECT group_concat(address, char(31)) FROM (SELECT address FROM recipients r
                      WHERE r.message = m.id ORDER BY address))
             FROM messages m WHERE m.purged_us IS NULL ORDER BY m.queue_id",
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].to_string(),
                f[1].to_string(),
                f[2].to_string(),
                f[3].to_string(),
                f[4].split('\u{1f}').map(str::to_string).collect(),
            )
        })
        .collect()
}

fn find<'a>(
    rows: &'a [(String, String, String, String, Vec<String>)],
    queue_id: &str,
) -> &'a (String, String, String, String, Vec<String>) {
    rows.iter().find(|r| r.1 == queue_id).unwrap_or_else(|| panic!("queue id {queue_id} not in the store: {rows:?}"))
}

fn nothing_bounced(pf: &Postfix) {
    let log = pf.maillog();
    for bad in ["status=bounced", "sender non-delivery notification", "status=expired", "fatal:", "panic:"] {
        assert!(!log.contains(bad), "the maillog has {bad:?}:\n{log}");
    }
}

/// Postfix's pipe (`flags=q`, as documented) hands a local part with a space over quoted: held as given, and
/// released as given through Postfix again (it used to make every `hold` of it exit 75 until Postfix bounced it).
#[test]
fn postfix_a_quoted_local_part_with_a_space_is_held_and_released_as_given() {
    ensure_postfix();
    let pf = Postfix::start(BIN);
    let odd = "\"odd quoted\"@example.edu";
    let msg = b"From: s@example.org\nSubject: odd local part\nX-Test-Verdict: spam\n\nbody\n";
    let q = send(pf.smtp_port, "s@example.org", &[odd, "a@example.edu"], msg);
    wait_for(WAIT, "the message held and the queue empty", || held(&pf).len() == 1 && pf.queue().is_empty());
    let rows = held(&pf);
    let m = find(&rows, &q);
    assert_eq!(m.4, [odd, "a@example.edu"]);
    nothing_bounced(&pf);
    let relay = format!("smtp://127.0.0.1:{}", pf.release_port);
    let out = pf.q(&["release", "--id", &m.0, "--relay", &relay, "--yes"]);
    assert!(out.status.success(), "release: {out:?}");
    let at_sink = || pf.sink_files().into_iter().find(|f| f.contains("Subject: odd local part"));
    wait_for(WAIT, "the released message at the sink", || at_sink().is_some() && pf.queue().is_empty());
    let f = at_sink().unwrap();
    assert!(f.contains(&format!("X-Rcpt-Args: <{odd}>")), "{f}");
    nothing_bounced(&pf);
}

#[test]
fn postfix_defers_while_the_store_is_broken_and_delivers_after_repair_then_release_goes_back_out() {
    ensure_postfix();
    let pf = Postfix::start(BIN);

    // ----- 1. flagged mail is held with its envelope; clean mail is delivered
    // Date and Message-ID given, so Postfix's cleanup adds nothing but its Received line.
    let spam = b"From: Sender <s@example.org>\nTo: a@example.edu\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\
        Message-ID: <spam1@example.org>\nSubject: flagged spam\nX-Test-Verdict: spam\n\n\
        Body line one.\n.leading dot line\nlast line\n";
    let bounce = b"From: MAILER-DAEMON@example.org\nTo: a@example.edu\nSubject: a bounce\nX-Test-Verdict: virus\n\nundeliverable\n";
    let clean = b"From: s@example.org\nTo: d@example.edu\nSubject: clean\n\nhello\n";
    let q_spam = send(pf.smtp_port, "s@example.org", &["a@example.edu", "b@example.edu", "C@example.edu"], spam);
    let q_bounce = send(pf.smtp_port, "", &["a@example.edu"], bounce);
    let q_clean = send(pf.smtp_port, "s@example.org", &["d@example.edu"], clean);
    wait_for(WAIT, "two messages held and the queue empty", || held(&pf).len() == 2 && pf.queue().is_empty());
    wait_for(WAIT, "the clean message at the sink", || pf.sink_files().iter().any(|f| f.contains("Subject: clean")));
    let rows = held(&pf);
    let s = find(&rows, &q_spam);
    assert_eq!((s.2.as_str(), s.3.as_str()), ("s@example.org", "SPAM"));
    assert_eq!(s.4, ["C@example.edu", "a@example.edu", "b@example.edu"], "all recipients in one message");
    let b = find(&rows, &q_bounce);
    assert_eq!((b.2.as_str(), b.3.as_str(), b.4.clone()), ("", "VIRUS", vec!["a@example.edu".to_string()]));
    assert!(rows.iter().all(|r| r.1 != q_clean), "clean mail is not quarantined");
    let raw = pf.q(&["show", &s.0, "--raw"]);
    assert!(raw.status.success());
    let raw = String::from_utf8_lossy(&raw.stdout).into_owned();
    assert!(
        raw.contains(&format!("by gateway.test.invalid (Postfix) with ESMTP id {q_spam}"))
            && raw.ends_with(std::str::from_utf8(spam).unwrap()),
        "the held bytes are what Postfix received (plus its Received line), un-dot-stuffed, LF line ends:\n{raw}"
    );
    nothing_bounced(&pf);

    // ----- 2. store unusable: mail stays deferred in the queue
    let tmp = pf.store.join("spool");
    let away = pf.store.join("spool.away");
    std::fs::rename(&tmp, &away).unwrap();
    std::fs::write(&tmp, b"").unwrap();
    let check = pf.q_as_user(&["check"]);
    assert_eq!(check.status.code(), Some(75), "check on the broken store: {check:?}");
    let late1 = b"From: s@example.org\nSubject: while broken 1\nX-Test-Verdict: spam\n\none\n";
    let late2 = b"From: x@example.org\nSubject: while broken 2\nX-Test-Verdict: virus\n\ntwo\n";
    let q1 = send(pf.smtp_port, "s@example.org", &["a@example.edu", "b@example.edu"], late1);
    let q2 = send(pf.smtp_port, "", &["e@example.edu"], late2);
    // pipe(8) logs status=deferred before qmgr has moved the file to the deferred queue: wait for both.
    wait_for(WAIT, "both deliveries deferred", || {
        let log = pf.maillog();
        let queue = pf.queue();
        [&q1, &q2].iter().all(|q| {
            log.lines().any(|l| l.contains(q.as_str()) && l.contains("status=deferred"))
                && queue.iter().any(|m| m["queue_id"] == q.as_str() && m["queue_name"] == "deferred")
        })
    });
    let queue = pf.queue();
    let queued: Vec<&str> = queue.iter().map(|m| m["queue_id"].as_str().unwrap()).collect();
    assert!(queued.contains(&q1.as_str()) && queued.contains(&q2.as_str()), "{}", pf.queue_text());
    assert!(queue.iter().all(|m| m["queue_name"] == "deferred"), "{}", pf.queue_text());
    let reasons = pf.queue_text();
    assert!(reasons.contains("quarantine hold:"), "the deferral reason is hold's one line:\n{reasons}");
    assert_eq!(held(&pf).len(), 2);
    nothing_bounced(&pf);

    // ----- 3. repaired and flushed: held, nothing lost
    std::fs::remove_file(&tmp).unwrap();
    std::fs::rename(&away, &tmp).unwrap();
    let check = pf.q_as_user(&["check"]);
    assert_eq!(check.status.code(), Some(0), "check after repair: {check:?}");
    pf.flush();
    wait_for(WAIT, "the deferred mail held and the queue empty", || held(&pf).len() == 4 && pf.queue().is_empty());
    let rows = held(&pf);
    let r1 = find(&rows, &q1);
    assert_eq!((r1.2.as_str(), r1.3.as_str()), ("s@example.org", "SPAM"));
    assert_eq!(r1.4, ["a@example.edu", "b@example.edu"]);
    let r2 = find(&rows, &q2);
    assert_eq!((r2.2.as_str(), r2.4.clone()), ("", vec!["e@example.edu".to_string()]));
    nothing_bounced(&pf);
    let deep = pf.q(&["verify", "--deep"]);
    assert!(deep.status.success(), "{deep:?}");

    // ----- 4. release through the re-injection port to the sink
    let help = pf.q(&["release", "--help"]);
    assert!(help.status.success(), "`quarantine release --help` failed: {help:?}");
    let relay = format!("smtp://127.0.0.1:{}", pf.release_port);
    let out = pf.q(&["release", "--id", &r1.0, "--id", &r2.0, "--relay", &relay, "--yes"]);
    assert!(out.status.success(), "release: {out:?}");
    let at_sink = |subject: &str| -> Vec<String> {
        pf.sink_files().into_iter().filter(|f| f.contains(&format!("Subject: {subject}"))).collect()
    };
    wait_for(WAIT, "the released messages at the sink", || {
        !at_sink("while broken 1").is_empty() && !at_sink("while broken 2").is_empty() && pf.queue().is_empty()
    });
    let one = at_sink("while broken 1");
    assert_eq!(one.len(), 1, "one delivery for both recipients: {one:?}");
    assert!(one[0].contains("X-Mail-Args: <s@example.org>"), "{}", one[0]);
    for r in ["a@example.edu", "b@example.edu"] {
        assert!(one[0].contains(&format!("X-Rcpt-Args: <{r}>")), "{r}: {}", one[0]);
    }
    assert!(one[0].contains("X-Quarantine-Released:"), "{}", one[0]);
    assert!(one[0].contains("one\n") || one[0].contains("one\r\n"));
    let two = at_sink("while broken 2");
    assert_eq!(two.len(), 1, "{two:?}");
    assert!(two[0].contains("X-Mail-Args: <>") && two[0].contains("X-Rcpt-Args: <e@example.edu>"), "{}", two[0]);
    // The released mail carries X-Test-Verdict but went through the port without header checks: not held again.
    assert_eq!(held(&pf).len(), 4, "released mail looped back into the quarantine");
    let states = sqlite3()
        .arg(pf.store.join("index.sqlite"))
        .arg(format!("SELECT state FROM recipients WHERE message IN ('{}', '{}')", r1.0, r2.0))
        .output()
        .unwrap();
    let states = String::from_utf8_lossy(&states.stdout).into_owned();
    assert_eq!(states.lines().filter(|s| *s == "released").count(), 3, "{states}");
    // The admin ran release as root; the pipe's account can still hold (no root-owned file in the store).
    let late3 = b"From: s@example.org\nSubject: after release\nX-Test-Verdict: spam\n\nthree\n";
    let q3 = send(pf.smtp_port, "s@example.org", &["a@example.edu"], late3);
    wait_for(WAIT, "a hold after the release", || held(&pf).iter().any(|r| r.1 == q3));
    nothing_bounced(&pf);
}
