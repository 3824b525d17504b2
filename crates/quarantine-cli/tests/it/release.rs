//! `quarantine release` against real SMTP servers (DESIGN section 6, issue 4).
//!
//! The relay is Postfix's `smtp-sink`, which records every message it accepts (MAIL FROM, each RCPT TO, the
//! bytes) to a file, and can be told to answer 4xx or 5xx to chosen commands. One behaviour no real server
//! offers on demand — closing the connection after the final dot without answering — comes from the testkit's
//! scriptable server. The sendmail path runs a recording stand-in script to prove the argv contract.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use quarantine_testkit::env::require_root;
use quarantine_testkit::gen::{lf, XorShift};
use quarantine_testkit::postfix::Postfix;
use quarantine_testkit::run::{finish, run, wait_for};
use quarantine_testkit::sink::{Sink, Sunk};
use quarantine_testkit::smtp::{free_port, AfterData, Script, Server};
use quarantine_testkit::{require, Input, Out, Store, HANG};

use crate::{store, BIN};

/// What the release tests do with a store besides running commands. `hold_many` and `audit` go through the
/// `quarantine_store` library (fast bulk holds; the audit rows as typed values).
trait ReleaseStore {
    fn hold_from(&self, verdict: &str, from: &str, rcpts: &[&str], msg: &[u8]) -> String;
    fn hold_many(&self, verdict: &str, from: &str, rcpts: &[&str], msgs: &[Vec<u8>]) -> Vec<String>;
    fn release<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Out;
    fn states(&self, id: &str) -> Vec<(String, String, i64, String)>;
    fn audit(&self) -> Vec<quarantine_store::AuditRow>;
}

impl ReleaseStore for Store {
    /// `quarantine hold --verdict V --from F -- RCPTS < msg`; returns the id.
    fn hold_from(&self, verdict: &str, from: &str, rcpts: &[&str], msg: &[u8]) -> String {
        let mut args = vec!["--verdict", verdict, "--from", from, "--"];
        args.extend_from_slice(rcpts);
        let r = self.hold(msg, &args);
        assert_eq!(r.code, 0, "hold: {}", r.all());
        r.text().trim().to_string()
    }

    /// Holds many messages quickly through the library (the same code path `hold` runs).
    fn hold_many(&self, verdict: &str, from: &str, rcpts: &[&str], msgs: &[Vec<u8>]) -> Vec<String> {
        let mut store = crate::open_store(self, Duration::from_secs(30));
        msgs.iter()
            .map(|m| {
                let req = quarantine_store::HoldRequest {
                    from: from.into(),
                    recipients: rcpts.iter().map(|s| s.to_string()).collect(),
                    verdict: verdict.into(),
                    ..Default::default()
                };
                store.hold(&req, &mut &m[..]).unwrap().id
            })
            .collect()
    }

    /// `quarantine release ARGS`.
    fn release<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Out {
        let mut full: Vec<&std::ffi::OsStr> = vec![std::ffi::OsStr::new("release")];
        full.extend(args.iter().map(|a| a.as_ref()));
        self.q(&full)
    }

    /// (address, state, attempts, reply or last_error) per recipient of `id`.
    fn states(&self, id: &str) -> Vec<(String, String, i64, String)> {
        let v = self.show_json(id);
        v["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["address"].as_str().unwrap().to_string(),
                    r["state"].as_str().unwrap().to_string(),
                    r["attempts"].as_i64().unwrap(),
                    r["reply"].as_str().or(r["last_error"].as_str()).unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    fn audit(&self) -> Vec<quarantine_store::AuditRow> {
        let store = crate::open_store(self, Duration::from_secs(30));
        store.audit_log(None).unwrap()
    }
}

/// A small sendmail stand-in: records its argv (one per line) and stdin in DIR/N.args and DIR/N.stdin, then exits
/// with the number in DIR/exit (0 if missing).
fn fake_sendmail(dir: &Path) -> PathBuf {
    let script = dir.join("fake-sendmail");
    let body = format!(
        "#!/bin/sh\nd='{d}'\nn=$(ls \"$d\" | grep -c '\\.args$')\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > \"$d/$n.args\"\ncat > \"$d/$n.stdin\"\nif [ -f \"$d/exit\" ]; then code=$(cat \"$d/exit\"); else code=0; fi\n[ \"$code\" = 0 ] || echo \"fake-sendmail: exiting $code\" >&2\nexit $code\n",
        d = dir.display()
    );
    std::fs::write(&script, body).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// The one-trick server: takes everything up to the final dot, then closes the connection without a reply.
fn drop_after_dot() -> Server {
    Server::start(Script::default().ehlo(&["8BITMIME"]).after_data(AfterData::Drop))
}

/// The receiver SMTP smuggling exploits: it takes a bare LF or a bare CR as a line end, so `LF . LF`,
/// `LF . CRLF`, `CR . CRLF` and friends all end its DATA, and whatever follows is read as new commands. A client
/// that normalises line endings and stuffs dots still gets exactly one transaction per message through it.
fn naive_relay() -> Server {
    Server::start(Script {
        naive_line_ends: true,
        after_data: AfterData::Reply("250 2.0.0 Ok: queued".into()),
        ..Script::default().ehlo(&["8BITMIME"])
    })
}

const MSG: &[u8] = b"From: Alice <alice@example.org>\r\nTo: Bob <bob@example.net>\r\nSubject: invoice 42\r\n\
Message-ID: <inv42@example.org>\r\n\r\nHello Bob,\r\nthe invoice is attached.\r\n";

fn trace_prefix(body: &[u8]) -> Option<&[u8]> {
    let end = body.iter().position(|&b| b == b'\n')?;
    body[..end].starts_with(b"X-Quarantine-Released: ").then(|| &body[..end + 1])
}

#[test]
fn delivers_the_original_to_every_envelope_recipient_once() {
    let env = store();
    let sink = Sink::start(&[]);
    // carol is a Bcc recipient: in the envelope, not in any header.
    let plain = env.hold_from("PMX:VIRUS", "alice@example.org", &["bob@example.net", "carol@example.net"], MSG);
    let bounce = env.hold_from(
        "PMX:VIRUS",
        "<>",
        &["postmaster@example.net"],
        b"Subject: Undelivered Mail\r\nFrom: MAILER-DAEMON\r\n\r\nbounce\r\n",
    );
    let eight = env.hold_from(
        "PMX:VIRUS",
        "jose@example.org",
        &["dave@example.net"],
        "Subject: =?utf-8?q?caf=C3=A9?=\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nCafé crème, ünïcödé body\n"
            .as_bytes(),
    );
    let other = env.hold_from("SPAM", "x@example.org", &["eve@example.net"], b"Subject: not selected\r\n\r\nx\r\n");

    let r = env.release(&["--verdict", "PMX:VIRUS", "--relay", &sink.url(), "--reason", "FP storm"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.text().contains("delivered 4 · deferred 0 · failed 0 · in doubt 0 · skipped 0"), "{}", r.all());

    let got = sink.messages();
    assert_eq!(got.len(), 3, "{got:#?}");
    let by_sender: HashMap<String, &Sunk> = got.iter().map(|m| (m.sender().to_string(), m)).collect();

    let m = by_sender["alice@example.org"];
    assert_eq!(m.rcpt_addrs(), ["bob@example.net", "carol@example.net"]);
    assert_eq!(m.mail, "<alice@example.org>", "no BODY=8BITMIME for a 7-bit message");
    let trace = trace_prefix(&m.body).expect("trace header first");
    let trace_s = String::from_utf8_lossy(trace);
    assert!(trace_s.starts_with(&format!("X-Quarantine-Released: {plain}; by tester; ")), "{trace_s}");
    assert_eq!(&m.body[trace.len()..], &lf(MSG)[..], "bytes after the trace header are the original");

    let m = by_sender[""];
    assert_eq!(m.mail, "<>", "the null sender stays null");
    assert_eq!(m.rcpt_addrs(), ["postmaster@example.net"]);

    let m = by_sender["jose@example.org"];
    assert_eq!(m.mail, "<jose@example.org> BODY=8BITMIME");
    let trace = trace_prefix(&m.body).unwrap();
    assert!(String::from_utf8_lossy(&m.body[trace.len()..]).contains("Café crème, ünïcödé body"));

    // The journal: released with the relay's reply; the SPAM message untouched.
    for id in [&plain, &bounce, &eight] {
        for (addr, state, _, reply) in env.states(id) {
            assert_eq!(state, "released", "{id} {addr}");
            assert!(reply.starts_with("250 "), "{id} {addr}: {reply}");
        }
    }
    assert_eq!(env.states(&other)[0].1, "held");

    // One audit row when the claim is made, one with the outcome.
    let audit = env.audit();
    let rel: Vec<_> = audit.iter().filter(|a| a.action.starts_with("release")).collect();
    assert_eq!(rel.len(), 2, "{audit:#?}");
    assert_eq!(rel[0].action, "release-start");
    assert_eq!(rel[1].action, "release");
    assert_eq!(rel[1].actor, "tester");
    assert_eq!(rel[1].reason.as_deref(), Some("FP storm"));
    assert_eq!(rel[1].counts["delivered"], 4);
    assert_eq!(rel[1].selection["selector"]["verdicts"][0], "PMX:VIRUS");

    // Re-running sends nothing new and is not a failure.
    let r = env.release(&["--verdict", "PMX:VIRUS", "--relay", &sink.url()]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.text().contains("delivered 0 · deferred 0 · failed 0 · in doubt 0 · skipped 4"), "{}", r.all());
    assert_eq!(sink.messages().len(), 3);
}

/// A quoted local part may hold a space (RFC 5321 qtextSMTP; Postfix's pipe hands it over quoted): held, found
/// and released exactly as given, where it used to make `hold` tempfail until Postfix bounced the message.
#[test]
fn a_quoted_local_part_with_a_space_is_held_and_released_as_given() {
    let env = store();
    let sink = Sink::start(&[]);
    let odd = "\"odd quoted\"@example.net";
    let id = env.hold_from("PMX:VIRUS", "alice@example.org", &[odd, "bob@example.net"], MSG);
    assert_eq!(env.states(&id).iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), [odd, "bob@example.net"]);
    let r = env.release(&["--verdict", "PMX:VIRUS", "--relay", &sink.url()]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.text().contains("delivered 2 · deferred 0 · failed 0"), "{}", r.all());
    let got = sink.messages();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].rcpt_addrs(), [odd, "bob@example.net"]);
}

#[test]
fn no_trace_header_sends_the_original_bytes_only() {
    let env = store();
    let sink = Sink::start(&[]);
    let id = env.hold_from("V", "a@example.org", &["b@example.net"], MSG);
    let r = env.release(&["--id", &id, "--relay", &sink.url(), "--no-trace-header"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let got = sink.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, lf(MSG));
}

#[test]
fn dry_run_sends_nothing_and_changes_nothing() {
    let env = store();
    let sink = Sink::start(&[]);
    let id = env.hold_from("V", "a@example.org", &["b@example.net", "c@example.net"], MSG);
    let r = env.release(&["--id", &id, "--relay", &sink.url(), "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.text().contains(&format!("send  {id}  from <a@example.org>  to <b@example.net>, <c@example.net>")),
        "{}",
        r.all()
    );
    assert!(r.text().contains("dry run: would release 1 message(s)"), "{}", r.all());
    assert!(r.text().contains("to 2 recipient(s) via smtp://127.0.0.1:"), "{}", r.all());
    assert!(sink.messages().is_empty());
    assert!(env.states(&id).iter().all(|s| s.1 == "held"));
    // Without any relay configured a dry run still works.
    let r = env.release(&["--id", &id, "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!env.audit().iter().any(|a| a.action.starts_with("release")));
}

#[test]
fn refuses_without_a_selector_or_a_relay() {
    let env = store();
    let sink = Sink::start(&[]);
    env.hold_from("V", "a@example.org", &["b@example.net"], MSG);
    let r = env.release(&["--relay", &sink.url()]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--all"), "{}", r.all());
    let r = env.release(&["--verdict", "V"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("no relay"), "{}", r.all());
    assert!(sink.messages().is_empty());
    let r = env.release(&["--all", "--relay", &sink.url()]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(sink.messages().len(), 1);
}

#[test]
fn rcpt_subset_releases_only_those_recipients() {
    let env = store();
    let sink = Sink::start(&[]);
    let id = env.hold_from("V", "a@example.org", &["alice@example.edu", "bob@example.edu"], MSG);
    let r = env.release(&["--id", &id, "--rcpt", "ALICE@example.edu", "--relay", &sink.url()]);
    assert_eq!(r.code, 0, "{}", r.all());
    let got = sink.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_addrs(), ["alice@example.edu"]);
    let st = env.states(&id);
    assert_eq!((st[0].1.as_str(), st[1].1.as_str()), ("released", "held"));
}

#[test]
fn to_sends_a_copy_without_changing_state() {
    let env = store();
    let sink = Sink::start(&[]);
    let id = env.hold_from("V", "a@example.org", &["alice@example.edu"], MSG);
    let r = env.release(&["--id", &id, "--to", "security@example.edu", "--relay", &sink.url()]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.text().contains("copies only"), "{}", r.all());
    let got = sink.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_addrs(), ["security@example.edu"]);
    assert_eq!(got[0].sender(), "a@example.org");
    assert_eq!(env.states(&id)[0].1, "held");
    let audit = env.audit();
    let last = audit.last().unwrap();
    assert_eq!(last.action, "release");
    assert_eq!(last.selection["copy_to"], "security@example.edu");
    // An invalid --to is a usage error.
    let r = env.release(&["--id", &id, "--to", "x@y\r\nRCPT TO:<z@w>", "--relay", &sink.url()]);
    assert_eq!(r.code, 2, "{}", r.all());
}

#[test]
fn rcpt_4xx_keeps_the_recipient_held_and_counts_attempts() {
    let env = store();
    let sink = Sink::start(&["-r", "RCPT"]);
    let id = env.hold_from("V", "a@example.org", &["b@example.net"], MSG);
    for attempt in 1..=2 {
        let r = env.release(&["--id", &id, "--relay", &sink.url()]);
        assert_eq!(r.code, 1, "{}", r.all());
        assert!(r.text().contains("deferred 1"), "{}", r.all());
        let st = &env.states(&id)[0];
        assert_eq!((st.1.as_str(), st.2), ("held", attempt), "{st:?}");
        assert!(st.3.contains("450"), "{st:?}");
    }
    assert!(sink.messages().is_empty());
}

#[test]
fn a_5xx_after_the_data_fails_with_the_reply() {
    let env = store();
    let sink = Sink::start(&["-f", "."]);
    let id = env.hold_from("V", "a@example.org", &["b@example.net", "c@example.net"], MSG);
    let r = env.release(&["--id", &id, "--relay", &sink.url()]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.text().contains("failed 2"), "{}", r.all());
    for (addr, state, attempts, reply) in env.states(&id) {
        assert_eq!(state, "failed", "{addr}");
        assert_eq!(attempts, 1);
        assert!(reply.starts_with("500 "), "{addr}: {reply}");
    }
    // Failed recipients are not retried by a plain re-run.
    let r = env.release(&["--id", &id, "--relay", &sink.url()]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.text().contains("skipped 2"), "{}", r.all());
}

#[test]
fn retry_failed_sends_refused_recipients_again_once_the_relay_is_fixed() {
    let env = store();
    let broken = Sink::start(&["-f", "."]);
    let id = env.hold_from("V", "a@example.org", &["b@example.net", "c@example.net"], MSG);
    assert_eq!(env.release(&["--id", &id, "--relay", &broken.url()]).code, 1);
    let fixed = Sink::start(&[]);
    let r = env.release(&["--id", &id, "--relay", &fixed.url()]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(fixed.messages().is_empty(), "a plain re-run never resends failed recipients");
    let r = env.release(&["--id", &id, "--relay", &fixed.url(), "--retry-failed"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let got = fixed.messages();
    assert_eq!(got.len(), 1, "one message, both recipients");
    assert_eq!(got[0].rcpt_addrs(), ["b@example.net", "c@example.net"]);
    for (addr, state, attempts, _) in env.states(&id) {
        assert_eq!(state, "released", "{addr}");
        assert_eq!(attempts, 1, "{addr}");
    }
}

#[test]
fn a_non_ascii_recipient_fails_alone_when_the_relay_lacks_smtputf8() {
    let env = store();
    // smtp-sink does not announce SMTPUTF8: that recipient fails with a clear reason, the other is delivered.
    let sink = Sink::start(&[]);
    let id = env.hold_from("V", "a@example.org", &["jürgen@example.de", "b@example.net"], MSG);
    let r = env.release(&["--id", &id, "--relay", &sink.url()]);
    assert_eq!(r.code, 1, "{}", r.all());
    let st = env.states(&id);
    assert_eq!(st[0].1, "failed");
    assert!(st[0].3.contains("SMTPUTF8"), "{st:?}");
    assert_eq!(st[1].1, "released");
    let got = sink.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_addrs(), ["b@example.net"]);
}

#[test]
fn an_unreachable_relay_leaves_everything_held() {
    let env = store();
    let ids = env.hold_many("V", "a@example.org", &["b@example.net"], &vec![MSG.to_vec(); 3]);
    let url = format!("smtp://127.0.0.1:{}", free_port());
    let r = env.release(&["--verdict", "V", "--relay", &url]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.text().contains("cannot connect"), "{}", r.all());
    assert!(r.text().contains("deferred 3"), "{}", r.all());
    for id in &ids {
        assert_eq!(env.states(id)[0].1, "held");
    }
    // The relay comes back: the next run delivers them all.
    let sink = Sink::start(&[]);
    let r = env.release(&["--verdict", "V", "--relay", &sink.url()]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(sink.messages().len(), 3);
}

#[test]
fn no_answer_to_the_final_dot_is_in_doubt_and_not_resent_without_asking() {
    let env = store();
    let id = env.hold_from("V", "a@example.org", &["b@example.net"], MSG);
    let dropper = drop_after_dot();
    let r = env.release(&["--id", &id, "--relay", &dropper.url()]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.text().contains("in doubt 1"), "{}", r.all());
    assert_eq!(dropper.transactions().len(), 1);
    let st = &env.states(&id)[0];
    assert_eq!(st.1, "releasing", "{st:?}");

    // The next run reports it and sends nothing.
    let sink = Sink::start(&[]);
    let r = env.release(&["--id", &id, "--relay", &sink.url()]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.text().contains("in doubt 1"), "{}", r.all());
    assert!(r.text().contains("--retry-in-doubt"), "{}", r.all());
    assert!(sink.messages().is_empty());
    let r = env.release(&["--id", &id, "--dry-run"]);
    assert!(r.text().contains("in doubt <b@example.net>"), "{}", r.all());

    // Asked explicitly, it goes out once more, and the audit row says so.
    let r = env.release(&["--id", &id, "--relay", &sink.url(), "--retry-in-doubt"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.text().contains("1 in doubt resent"), "{}", r.all());
    assert_eq!(sink.messages().len(), 1);
    assert_eq!(env.states(&id)[0].1, "released");
    let last = env.audit().pop().unwrap();
    assert_eq!(last.selection["retry_in_doubt"], true);
    assert_eq!(last.counts["retried_in_doubt"], 1);
}

#[test]
fn concurrent_releases_deliver_each_recipient_exactly_once() {
    let env = store();
    let sink = Sink::start(&[]);
    let msgs: Vec<Vec<u8>> = (0..300)
        .map(|i| format!("Subject: msg {i}\r\nMessage-ID: <m{i}@x>\r\n\r\nbody {i}\r\n").into_bytes())
        .collect();
    env.hold_many("V", "a@example.org", &["r1@example.net", "r2@example.net"], &msgs);
    let spawn = || {
        let mut c = env.cmd(&["release", "--verdict", "V", "--relay", &sink.url()]);
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (ra, rb) = (finish(a, "release", Instant::now()), finish(b, "release", Instant::now()));
    assert!(ra.code == 0 || ra.code == 1, "{}", ra.all());
    assert!(rb.code == 0 || rb.code == 1, "{}", rb.all());

    let seen = sink.deliveries();
    assert_eq!(seen.len(), 600, "every recipient of every message delivered");
    assert!(seen.values().all(|&n| n == 1), "a recipient was delivered twice");
    // Between them the two runs delivered everything; whatever one skipped the other sent.
    let delivered = |r: &Out| -> u64 {
        let s = r.text().split("delivered ").nth(1).unwrap().split(' ').next().unwrap().replace(',', "");
        s.parse().unwrap()
    };
    assert_eq!(delivered(&ra) + delivered(&rb), 600, "{}\n{}", ra.all(), rb.all());
    let r = env.release(&["--verdict", "V", "--relay", &sink.url()]);
    assert!(r.text().contains("delivered 0 · deferred 0 · failed 0 · in doubt 0 · skipped 600"), "{}", r.all());
}

/// SIGKILL at a random moment of a release over four connections, where the next batch's claim is committed
/// while this batch is being sent and the last batch's outcomes with it: whatever the moment, the rerun without
/// `--retry-in-doubt` delivers no recipient twice, every recipient is either delivered once or listed in doubt
/// (none silently left behind), and `--retry-in-doubt` then sends exactly the ones in doubt.
#[test]
fn sigkill_during_a_pipelined_release_never_delivers_twice_and_loses_nothing() {
    const N: u64 = 450; // four and a half batches of 100
    const RCPTS: [&str; 2] = ["r1@example.net", "r2@example.net"];
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut killed_rounds = 0;
    for round in 0..3 {
        let mut rng = XorShift::new(seed + round);
        let env = store();
        let sink = Sink::start(&[]);
        let msgs: Vec<Vec<u8>> = (0..N)
            .map(|i| {
                let mut m = format!("Subject: k{i}\r\nMessage-ID: <k{i}@x>\r\n\r\n").into_bytes();
                m.extend(rng.bytes(6_000).iter().map(|b| b"abcdefghij klmnop\n"[(*b % 18) as usize]));
                m
            })
            .collect();
        let ids = env.hold_many("V", "a@example.org", &RCPTS, &msgs);
        // Kill once the sink has seen this many messages (partial ones count): anywhere from the first batch to
        // the last, mid-DATA or between a reply and its record.
        let after = 1 + rng.below(N - 20) as usize;
        let mut c = env.cmd(&["release", "--verdict", "V", "--relay", &sink.url(), "--connections", "4"]);
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let started = Instant::now();
        let seen = || std::fs::read_dir(sink.dir.path()).unwrap().count();
        wait_for(HANG, "the sink to receive messages", || seen() >= after || child.try_wait().unwrap().is_some());
        let _ = child.kill(); // SIGKILL; a no-op if it already finished
        let out = finish(child, "release", started);
        eprintln!("seed {seed} round {round}: killed after {after} messages, exit {}", out.code);
        if out.code == 137 {
            killed_rounds += 1;
        } else {
            assert_eq!(out.code, 0, "{}", out.all());
        }

        // Which (message, recipient) the relay has, and how often.
        let delivered = |sink: &Sink| {
            let mut n: HashMap<(String, String), usize> = HashMap::new();
            for m in sink.messages() {
                let text = String::from_utf8_lossy(&m.body);
                let Some(subject) = text.lines().find_map(|l| l.strip_prefix("Subject: ").map(str::to_string)) else {
                    continue; // cut off before its header block: no transaction
                };
                for r in m.rcpt_addrs() {
                    *n.entry((subject.clone(), r)).or_default() += 1;
                }
            }
            n
        };
        let r = env.release(&["--verdict", "V", "--relay", &sink.url()]);
        assert!(r.code == 0 || r.code == 1, "{}", r.all());
        let got = delivered(&sink);
        assert!(got.values().all(|&n| n == 1), "delivered twice without --retry-in-doubt: {got:?}");
        let mut in_doubt = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            for (address, state, _, _) in env.states(id) {
                let key = (format!("k{i}"), address.clone());
                match state.as_str() {
                    "released" => assert_eq!(got.get(&key), Some(&1), "{key:?} released but not at the relay"),
                    "releasing" => in_doubt.push(key),
                    other => panic!("{key:?} left {other} by the rerun"),
                }
            }
        }
        let listed = r.text().split(" · in doubt ").nth(1).unwrap().split(' ').next().unwrap().replace(',', "");
        assert_eq!(listed.parse::<usize>().unwrap(), in_doubt.len(), "{}", r.all());
        // At most the batch being sent, the one claimed next, and the outcomes not yet committed.
        assert!(in_doubt.len() <= 3 * 100 * RCPTS.len(), "{} in doubt", in_doubt.len());

        // Asked explicitly, the ones in doubt go out (again, for those the relay already had), and only those.
        let r = env.release(&["--verdict", "V", "--relay", &sink.url(), "--retry-in-doubt"]);
        assert_eq!(r.code, 0, "{}", r.all());
        let again = delivered(&sink);
        assert_eq!(again.len(), N as usize * RCPTS.len(), "every recipient delivered");
        for (key, n) in &again {
            let before = got.get(key).copied().unwrap_or(0);
            let resent = n - before;
            assert_eq!(resent, usize::from(in_doubt.contains(key)), "{key:?}: {before} then {n}");
        }
    }
    assert!(killed_rounds > 0, "no round was killed before it finished (seed {seed}): the test proved nothing");
}

/// Bodies that would end the DATA early or smuggle a second message through a naive client. Each must arrive
/// as exactly one message with its bytes intact (line endings normalised to CRLF on the wire; smtp-sink records
/// LF), and smtp-sink must never see the smuggled MAIL FROM as a command.
#[test]
fn smtp_smuggling_payloads_arrive_as_one_intact_message_each() {
    let env = store();
    let sink = Sink::start(&[]);
    let smuggle = "MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n\
                   From: ceo@example.net\r\nSubject: smuggled\r\n\r\nwire money\r\n.\r\n";
    let cases: Vec<(&str, String)> = vec![
        ("lf-dot-lf", "line one\n.\nline after a lone dot\n".into()),
        ("crlf-dot-crlf", "line one\r\n.\r\nline after a lone dot\r\n".into()),
        ("bare-cr", "line one\rstill\r.\rnext\r".into()),
        ("lf-dot-crlf", format!("visible\n.\r\n{smuggle}")),
        ("cr-dot-crlf", format!("visible\r.\r\n{smuggle}")),
        ("crlf-dot-lf", format!("visible\r\n.\n{smuggle}")),
        ("leading-dots", ".\r\n..\r\n...x\r\n".into()),
    ];
    let mut ids = HashMap::new();
    for (name, body) in &cases {
        let msg = format!("Subject: case {name}\r\n\r\n{body}");
        let id = env.hold_from("SMUGGLE", "a@example.org", &["b@example.net"], msg.as_bytes());
        ids.insert(name.to_string(), (id, msg));
    }
    let r = env.release(&["--verdict", "SMUGGLE", "--relay", &sink.url(), "--no-trace-header"]);
    assert_eq!(r.code, 0, "{}", r.all());
    check_one_each(&sink.messages(), &ids, cases.len());

    // The receiver smuggling exploits (a bare LF or CR ends a line for it) sees one transaction per message too.
    // Everything is released by now; a copy run (--to) sends the same messages again without touching the journal.
    let naive = naive_relay();
    let r =
        env.release(&["--verdict", "SMUGGLE", "--relay", &naive.url(), "--no-trace-header", "--to", "b@example.net"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let txs = naive.transactions();
    assert_eq!(txs.len(), cases.len(), "a smuggled transaction got through: {txs:#?}");
    let as_sunk: Vec<Sunk> = txs
        .iter()
        .map(|t| Sunk { file: Default::default(), mail: t.mail.clone(), rcpts: t.rcpts.clone(), body: t.data.clone() })
        .collect();
    check_one_each(&as_sunk, &ids, cases.len());
}

fn check_one_each(got: &[Sunk], ids: &HashMap<String, (String, String)>, n: usize) {
    assert_eq!(got.len(), n, "one message per case, no more: {got:#?}");
    for m in got {
        assert_eq!(m.sender(), "a@example.org", "{m:#?}");
        assert_eq!(m.rcpt_addrs(), ["b@example.net"], "{m:#?}");
        let text = String::from_utf8_lossy(&m.body);
        let name = text.lines().next().unwrap().strip_prefix("Subject: case ").unwrap().to_string();
        let (_, msg) = &ids[&name];
        assert_eq!(String::from_utf8_lossy(&m.body), String::from_utf8_lossy(&lf(msg.as_bytes())), "case {name}");
    }
}

#[test]
fn a_corrupt_blob_is_never_sent() {
    let env = store();
    let sink = Sink::start(&[]);
    let good = env.hold_from("V", "a@example.org", &["b@example.net"], MSG);
    let bad = env.hold_from("V", "a@example.org", &["c@example.net"], b"Subject: other\r\n\r\nother body\r\n");
    let blob = env.blob_of(&bad);
    // A valid zstd frame of different bytes: decompresses fine, hashes wrong.
    let wrong = zstd_frame(b"Subject: other\r\n\r\nTAMPERED\r\n");
    std::fs::write(&blob, wrong).unwrap();
    let r = env.release(&["--verdict", "V", "--relay", &sink.url()]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.text().contains("not sent 1"), "{}", r.all());
    assert!(r.text().contains("corrupt"), "{}", r.all());
    let got = sink.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_addrs(), ["b@example.net"]);
    assert_eq!(env.states(&good)[0].1, "released");
    let st = &env.states(&bad)[0];
    assert_eq!(st.1, "held");
    assert!(st.3.contains("corrupt"), "{st:?}");
}

fn zstd_frame(bytes: &[u8]) -> Vec<u8> {
    let mut c = std::process::Command::new(require("zstd", "zstd"))
        .args(["-q", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("zstd");
    use std::io::Write;
    c.stdin.take().unwrap().write_all(bytes).unwrap();
    c.wait_with_output().unwrap().stdout
}

#[test]
fn sendmail_gets_the_documented_argv_and_exit_codes_decide() {
    let env = store();
    let rec = tempfile::tempdir().unwrap();
    let script = fake_sendmail(rec.path());
    let id = env.hold_from("V", "a@example.org", &["b@example.net", "-c@example.net"], b"Subject: s\r\n\r\n.\r\nx\r\n");
    let null = env.hold_from("W", "<>", &["d@example.net"], MSG);

    let r = env.release(&["--id", &id, "--sendmail", &script.display().to_string()]);
    assert_eq!(r.code, 0, "{}", r.all());
    let args = std::fs::read_to_string(rec.path().join("0.args")).unwrap();
    assert_eq!(args, "-i\n-f\na@example.org\n--\nb@example.net\n-c@example.net\n");
    let stdin = std::fs::read(rec.path().join("0.stdin")).unwrap();
    let stdin = String::from_utf8(stdin).unwrap();
    assert!(stdin.starts_with(&format!("X-Quarantine-Released: {id}; by tester; ")), "{stdin}");
    assert!(stdin.ends_with("\nSubject: s\n\n.\nx\n"), "LF line endings, no dot stuffing with -i: {stdin:?}");
    assert!(env.states(&id).iter().all(|s| s.1 == "released"));

    // EX_TEMPFAIL defers, anything else fails.
    std::fs::write(rec.path().join("exit"), "75").unwrap();
    let r = env.release(&["--id", &null, "--sendmail", &script.display().to_string()]);
    assert_eq!(r.code, 1, "{}", r.all());
    let args = std::fs::read_to_string(rec.path().join("1.args")).unwrap();
    assert_eq!(args, "-i\n-f\n<>\n--\nd@example.net\n", "the null sender is passed as <>");
    let st = &env.states(&null)[0];
    assert_eq!((st.1.as_str(), st.2), ("held", 1), "{st:?}");
    assert!(st.3.contains("exited 75"), "{st:?}");

    std::fs::write(rec.path().join("exit"), "67").unwrap();
    let r = env.release(&["--id", &null, "--sendmail", &script.display().to_string()]);
    assert_eq!(r.code, 1, "{}", r.all());
    let st = &env.states(&null)[0];
    assert_eq!(st.1, "failed", "{st:?}");
    assert!(st.3.contains("exited 67: fake-sendmail: exiting 67"), "{st:?}");
}

#[test]
fn a_missing_sendmail_command_leaves_everything_held() {
    let env = store();
    let id = env.hold_from("V", "a@example.org", &["b@example.net"], MSG);
    let r = env.release(&["--id", &id, "--sendmail", "/nonexistent/sendmail"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.text().contains("cannot run /nonexistent/sendmail"), "{}", r.all());
    assert_eq!(env.states(&id)[0].1, "held");
}

#[test]
fn the_config_file_supplies_the_relay_and_the_trace_header_switch() {
    let env = store();
    let sink = Sink::start(&[]);
    let id = env.hold_from("V", "a@example.org", &["b@example.net"], MSG);
    let cfg = env.work().as_path().join("config.toml");
    std::fs::write(&cfg, format!("{}relay = \"{}\"\ntrace_header = false\n", crate::index_line(&env), sink.url()))
        .unwrap();
    let mut c = env.cmd(&["release", "--id", &id]);
    c.env("QUARANTINE_CONFIG", &cfg);
    let r = run(c, Input::Null, HANG);
    assert_eq!(r.code, 0, "{}", r.all());
    let got = sink.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, lf(MSG), "trace_header = false in the config");
}

#[test]
fn ctrl_c_stops_after_the_current_message_and_puts_the_rest_back() {
    let env = store();
    let sink = Sink::start(&[]);
    let msgs: Vec<Vec<u8>> = (0..40).map(|i| format!("Subject: n{i}\r\n\r\nx\r\n").into_bytes()).collect();
    let ids = env.hold_many("V", "a@example.org", &["b@example.net"], &msgs);
    let mut c = env.cmd(&["release", "--verdict", "V", "--relay", &sink.url(), "--rate", "10"]);
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let kill =
        std::process::Command::new(require("kill", "procps")).args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let r = finish(child, "release", Instant::now());
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.text().contains("stopped early: interrupted"), "{}", r.all());
    let sent = sink.messages().len();
    assert!(sent > 0 && sent < 40, "{sent} sent");
    let mut released = 0;
    for id in &ids {
        match env.states(id)[0].1.as_str() {
            "released" => released += 1,
            "held" => {}
            other => panic!("{id} left {other}"),
        }
    }
    assert_eq!(released, sent, "the journal matches what the relay got");
    // The rest goes out on the next run.
    let r = env.release(&["--verdict", "V", "--relay", &sink.url()]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(sink.messages().len(), 40);
}

/// On a terminal a release states what it will do and waits for a yes; `--yes` and cron (no terminal) never ask.
/// `script` (util-linux) gives the binary a pseudo-terminal.
#[test]
fn asks_for_confirmation_only_on_a_terminal() {
    let env = store();
    let sink = Sink::start(&[]);
    let id = env.hold_from("V", "a@example.org", &["b@example.net"], MSG);
    let line = format!("{BIN} --store {} release --id {id} --relay {}", env.root.display(), sink.url());
    let on_tty = |answer: &str| {
        let mut c = env.program(require("script", "bsdutils"));
        c.args(["-qec", &line, "/dev/null"]);
        run(c, Input::Bytes(answer.as_bytes()), HANG)
    };
    let r = on_tty("n\n");
    assert!(r.text().contains("1 message(s) (") && r.text().contains("to 1 recipient(s) via smtp://"), "{}", r.all());
    assert!(r.text().contains("Release them? [y/N]"), "{}", r.all());
    assert!(r.text().contains("nothing released"), "{}", r.all());
    assert!(sink.messages().is_empty());
    assert_eq!(env.states(&id)[0].1, "held");
    let r = on_tty("y\n");
    assert!(r.text().contains("delivered 1"), "{}", r.all());
    assert_eq!(sink.messages().len(), 1);
}

/// `--sendmail` through Postfix's real `sendmail`, into a private Postfix instance (the one the Postfix
/// end-to-end test uses, from `postfix_util`) that relays to smtp-sink: the envelope sender (the null sender
/// too), every envelope recipient and the bytes arrive.
#[test]
fn sendmail_through_a_real_postfix_keeps_the_envelope_and_the_bytes() {
    require_root("a private Postfix instance");
    let pf = Postfix::start(BIN);
    let dir = tempfile::tempdir().unwrap();
    let hold = |from: &str, rcpts: &[&str], msg: &[u8]| -> String {
        let file = dir.path().join("msg.eml");
        std::fs::write(&file, msg).unwrap();
        let mut args = vec!["hold", "--verdict", "PF", "--file", file.to_str().unwrap(), "--from", from, "--"];
        args.extend_from_slice(rcpts);
        let out = pf.q(&args);
        assert!(out.status.success(), "hold: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let body = b"From: a@example.org\nSubject: via postfix sendmail\n\n.\nline after a lone dot\n";
    let a = hold("a@example.org", &["b@example.edu", "bcc@example.edu"], body);
    let bounce = hold("<>", &["c@example.edu"], b"Subject: a bounce via sendmail\n\nreturned\n");
    let sendmail = format!("/usr/sbin/sendmail -C {}", pf.conf.display());
    let out = pf.q(&["release", "--verdict", "PF", "--sendmail", &sendmail, "--actor", "tester"]);
    assert!(out.status.success(), "release: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("delivered 3"), "{text}");

    // smtp-sink creates each file before the message is in it: wait for both whole (their last lines in, and
    // Postfix's queue empty: it had the sink's reply to the final dot).
    wait_for(std::time::Duration::from_secs(30), "both messages whole at the sink", || {
        let files = pf.sink_files();
        ["line after a lone dot", "returned"].iter().all(|end| files.iter().any(|f| f.contains(end)))
            && pf.queue().is_empty()
    });
    let files = pf.sink_files();
    assert_eq!(files.len(), 2, "{files:#?}");
    let find =
        |subject: &str| files.iter().find(|f| f.contains(subject)).unwrap_or_else(|| panic!("{subject}: {files:#?}"));
    let f = find("Subject: via postfix sendmail");
    assert!(f.contains("X-Mail-Args: <a@example.org>"), "{f}");
    assert!(f.contains("X-Rcpt-Args: <b@example.edu>") && f.contains("X-Rcpt-Args: <bcc@example.edu>"), "{f}");
    assert!(f.contains(&format!("X-Quarantine-Released: {a}; by tester; ")), "{f}");
    assert!(f.contains("\n\n.\nline after a lone dot\n"), "the lone dot line arrives as a line: {f}");
    let f = find("Subject: a bounce via sendmail");
    assert!(f.contains("X-Mail-Args: <>"), "the null sender stays null: {f}");
    assert!(f.contains(&format!("X-Quarantine-Released: {bounce}; by tester; ")), "{f}");
}
