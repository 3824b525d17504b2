//! The spool (DESIGN sections 4, 7, 8; issue 12), against the real binary, real files and real processes:
//! SIGKILL at random moments and at every system call of a hold and of an ingest batch, EIO and ENOSPC at every
//! write-path call of both, hold beside a locked or unreadable index, retries and recipient batches, purge racing
//! ingest, damaged spool files, the upgrade of a store without `spool/`, and the monitoring surface.
//!
//! After every crash or fault the same invariant is checked ([`Ledger::check`]): `ingest` converges (the spool
//! drains); every hold that exited 0 is readable byte-exact with `show --raw`, exactly once (one row for its
//! queue id), with every recipient it was acknowledged for; no recipient twice; `verify --deep` exits 0.
//!
//! Everything comes from `quarantine-testkit` (runner, hermetic scratch store, strace points and sweep).
//! `QUARANTINE_TORTURE=long` runs every kill point and many more random kills.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use quarantine_testkit::gen::{self, threads};
use quarantine_testkit::run::{run, run_killed_after};
use quarantine_testkit::strace::{self, Call, Fault, Point, Strace};
use quarantine_testkit::{require, Input, Out, Store, XorShift, HANG, KILLED};

use crate::{store, BIN};

fn long_mode() -> bool {
    std::env::var("QUARANTINE_TORTURE").is_ok_and(|v| v == "long")
}

/// A message of about `len` bytes whose content depends only on `tag` (deterministic across runs).
fn message(tag: &str, len: usize) -> Vec<u8> {
    let seed = tag.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    gen::message(tag, &mut XorShift::new(seed), len)
}

/// `hold --verdict SPAM --from sender@example.org [--queue-id QID] -- RCPTS...`.
fn hold_argv(qid: &str, rcpts: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["hold", "--verdict", "SPAM", "--from", "sender@example.org"].map(String::from).into();
    if !qid.is_empty() {
        a.extend(["--queue-id".to_string(), qid.to_string()]);
    }
    a.push("--".into());
    a.extend(rcpts.iter().map(|r| r.to_string()));
    a
}

/// Runs `c` to completion, or kills it after `kill_after` (a random crash).
fn run_maybe_killed(c: Command, input: Input, kill_after: Option<Duration>) -> Out {
    match kill_after {
        Some(d) => run_killed_after(c, input, d),
        None => run(c, input, HANG),
    }
}

/// A hold of `msg` with [`hold_argv`]; the outcome unchecked.
fn hold(s: &Store, msg: &[u8], qid: &str, rcpts: &[&str]) -> Out {
    s.run(&hold_argv(qid, rcpts), Input::Bytes(msg))
}

/// A hold that must succeed (exit 0, an id, nothing on stderr); returns the id.
#[track_caller]
fn hold_ok(s: &Store, msg: &[u8], qid: &str, rcpts: &[&str]) -> String {
    s.hold_ok(msg, &hold_argv(qid, rcpts)[1..])
}

/// Runs `ingest` until the spool is empty (a crashed one may have left files): convergence.
#[track_caller]
fn converge(s: &Store, what: &str) {
    s.q(&["ingest"]).code_is(0, &format!("{what}: ingest"));
    assert!(s.spool_files().is_empty(), "{what}: spool not drained: {:?}", s.spool_files());
}

/// What was acknowledged: per id, the bytes, the queue id and the recipients of every hold that exited 0.
#[derive(Default, Clone)]
struct Ledger {
    acked: BTreeMap<String, (Vec<u8>, String, BTreeSet<String>)>,
}

impl Ledger {
    fn ack(&mut self, id: &str, msg: &[u8], qid: &str, rcpts: &[&str]) {
        let e = self.acked.entry(id.to_string()).or_insert_with(|| (msg.to_vec(), qid.to_string(), BTreeSet::new()));
        assert_eq!(e.0, msg, "one id, two different messages");
        e.2.extend(rcpts.iter().map(|r| r.to_string()));
    }

    /// The invariant of the module docs.
    #[track_caller]
    fn check(&self, s: &Store, what: &str) {
        converge(s, what);
        for (id, (bytes, qid, rcpts)) in &self.acked {
            let raw = s.q(&["show", id, "--raw"]);
            assert!(raw.code == 0, "{what}: show --raw {id}: {}", raw.brief());
            assert!(raw.stdout == *bytes, "{what}: {id} is not byte-exact");
            if !qid.is_empty() {
                let n = s.sql(&format!("SELECT count(*) FROM messages WHERE queue_id = '{qid}'"));
                assert_eq!(n, "1", "{what}: queue id {qid} is {n} messages");
            }
            let got = s.sql(&format!("SELECT address FROM recipients WHERE message = '{id}' ORDER BY address"));
            let got: BTreeSet<String> = got.lines().map(str::to_string).collect();
            assert!(rcpts.is_subset(&got), "{what}: {id} has recipients {got:?}, acknowledged {rcpts:?}");
        }
        let dup = s.sql(
            "SELECT count(*) FROM (SELECT 1 FROM recipients GROUP BY message, address_lc HAVING count(*) > 1) AS d",
        );
        assert_eq!(dup, "0", "{what}: a recipient twice");
        s.verify_deep_clean(what);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 1. SIGKILL at random moments during hold and during ingest

#[test]
fn sigkill_at_random_moments_during_hold_and_ingest() {
    let started = Instant::now();
    let cycles = if long_mode() { 3000 } else { 320 };
    let s = store();
    let mut rng = XorShift::new(0x5eed_1234_5678_9abc);
    let mut ledger = Ledger::default();
    let rcpt_pool = ["a@x.example", "b@x.example", "c@x.example", "d@x.example"];
    let msgs: Vec<Vec<u8>> = (0..12).map(|i| message(&format!("random-kill-{i}"), 2000 + i * 3000)).collect();
    let (mut kills, mut acks) = (0u64, 0u64);
    for cycle in 0..cycles {
        // A hold (one of a few queue ids, so retries and recipient batches happen) and an ingest, both killed at
        // a random moment (a quarter of them run to completion), at the same time.
        let k = rng.below(msgs.len() as u64) as usize;
        let qid = format!("RQ{k}");
        let r: Vec<&str> = rcpt_pool.iter().copied().filter(|_| rng.below(2) == 0).collect();
        let r = if r.is_empty() { vec![rcpt_pool[0]] } else { r };
        let delay = |rng: &mut XorShift| (rng.below(4) != 0).then(|| Duration::from_micros(rng.below(25_000)));
        let (dh, di) = (delay(&mut rng), delay(&mut rng));
        let ingest = {
            let c = s.cmd(&["ingest"]);
            std::thread::spawn(move || run_maybe_killed(c, Input::Null, di))
        };
        let out = run_maybe_killed(s.cmd(&hold_argv(&qid, &r)), Input::Bytes(&msgs[k]), dh);
        let ing = ingest.join().unwrap();
        for (o, name) in [(&out, "hold"), (&ing, "ingest")] {
            match o.code {
                KILLED => kills += 1,
                0 => {}
                c if name == "hold" => assert_eq!(c, 75, "cycle {cycle}: hold exited {c}: {}", o.brief()),
                c => panic!("cycle {cycle}: ingest exited {c}: {}", o.brief()),
            }
        }
        if out.code == 0 {
            acks += 1;
            ledger.ack(&out.id(), &msgs[k], &qid, &r);
        }
        if cycle % 40 == 39 {
            ledger.check(&s, &format!("after cycle {cycle}"));
        }
    }
    ledger.check(&s, "at the end");
    assert!(kills >= 100, "only {kills} processes were killed");
    eprintln!(
        "spool: random-kill cycles={cycles} processes_killed={kills} holds_acked={acks} ids={} in {:?}",
        ledger.acked.len(),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// 2. SIGKILL at every system call of one hold and of one ingest batch; EIO and ENOSPC at every write-path call

/// A traced run of `quarantine --store ROOT ARGS` on a copy of `t`: the outcome and the calls of the trace.
fn trace(t: &Store, args: &[String], input: Input) -> (Out, Vec<Call>) {
    let s = Store::copy_of(t);
    let file = s.work().join("baseline.trace");
    let (out, _, calls) = strace::traced(Strace::new(), &s, &s.args(args), input, &file);
    (out, calls)
}

/// Every distinct (name, n-th) kill point of a trace, from the first call touching `from` on (in quick mode;
/// every 4th before it), or every one in long mode.
fn kill_points(calls: &[Call], from: &str) -> Vec<Point> {
    let first = calls.iter().position(|c| c.line.contains(from)).unwrap_or(0);
    let mut seen = BTreeSet::new();
    calls
        .iter()
        .enumerate()
        .filter(|(i, c)| seen.insert((c.name.clone(), c.nth)) && (long_mode() || *i >= first || i % 4 == 0))
        .map(|(_, c)| Point { name: c.name.clone(), nth: c.nth, fault: Fault::Kill })
        .collect()
}

/// EIO and ENOSPC at every write-path call of a trace (loader calls before main skipped: a failure there is
/// ld.so's exit 127).
fn fault_points(calls: &[Call]) -> Vec<Point> {
    let loader = |c: &Call| c.name == "openat" && (c.line.contains("/etc/ld.so") || c.line.contains(".so"));
    strace::points(calls, strace::WRITE_PATH_SYSCALLS, &[Fault::Errno("EIO"), Fault::Errno("ENOSPC")], |c| !loader(c))
}

/// What a case ended in, counted per outcome.
fn tally(counts: &Mutex<BTreeMap<&'static str, u64>>, outcome: &'static str) {
    *counts.lock().unwrap().entry(outcome).or_default() += 1;
}

const SEED: &[u8] = b"From: seed@example.org\r\nSubject: seed\r\n\r\nseed\r\n";

/// A store with one message indexed (blob directories exist, the index has a row).
fn template() -> (Store, Ledger) {
    let t = store();
    let mut l = Ledger::default();
    let id = hold_ok(&t, SEED, "SEED", &["seed@x.example"]);
    l.ack(&id, SEED, "SEED", &["seed@x.example"]);
    converge(&t, "template");
    (t, l)
}

#[test]
fn sigkill_and_io_errors_at_every_syscall_of_a_hold() {
    strace::require();
    let started = Instant::now();
    let (t, base_ledger) = template();
    let msg = message("every-syscall-hold", 5000);
    // A regular file on stdin: the reads, and so the calls' counts, are the same in every run.
    let msg_file = t.file("msg.eml", &msg);
    let rcpts = ["r1@x.example", "r2@x.example"];
    let args = hold_argv("HQ1", &rcpts);
    let (out, calls) = trace(&t, &args, Input::File(&msg_file));
    assert_eq!(out.code, 0, "baseline: {}", out.brief());
    let mut cases = kill_points(&calls, "/spool/");
    cases.extend(fault_points(&calls));
    let counts = Mutex::new(BTreeMap::new());
    strace::sweep(&cases, threads(), |p| {
        let label = format!("hold: {p}");
        let s = Store::copy_of(&t);
        let mut ledger = base_ledger.clone();
        let out = run(Strace::new().fault(p).command(&s, &s.args(&args)), Input::File(&msg_file), HANG);
        let outcome = match out.code {
            0 => {
                ledger.ack(&out.id(), &msg, "HQ1", &rcpts);
                "exit0"
            }
            75 => {
                assert!(out.stdout.is_empty(), "{label}: 75 but printed an id");
                assert_eq!(out.stderr.matches('\n').count(), 1, "{label}: stderr is not one line: {:?}", out.stderr);
                "exit75"
            }
            KILLED => "killed",
            c => panic!("{label}: hold exited {c}: {}", out.brief()),
        };
        tally(&counts, outcome);
        ledger.check(&s, &label);
        // The MTA retries whatever was not acknowledged (and a retry of an acknowledged one is harmless).
        let id = hold_ok(&s, &msg, "HQ1", &rcpts);
        ledger.ack(&id, &msg, "HQ1", &rcpts);
        ledger.check(&s, &format!("{label}, after the retry"));
    });
    let counts = counts.into_inner().unwrap();
    assert!(counts.get("exit75").copied().unwrap_or(0) > 0, "no fault failed a hold: {counts:?}");
    assert!(counts.get("killed").copied().unwrap_or(0) > 0, "no kill landed: {counts:?}");
    eprintln!("spool: hold every-syscall cases={} {counts:?} in {:?}", cases.len(), started.elapsed());
}

#[test]
fn sigkill_and_io_errors_at_every_syscall_of_an_ingest_batch() {
    strace::require();
    let started = Instant::now();
    let (t, mut ledger) = template();
    // One batch: a new message, a retry of the seed with a new recipient (merge), the seed's bytes under
    // another queue id (the blob exists: checked, kept), and a second recipient batch of the new message.
    let new = message("every-syscall-ingest", 7000);
    for (m, q, r) in [
        (&new[..], "IQ1", &["n1@x.example"][..]),
        (SEED, "SEED", &["seed2@x.example"][..]),
        (SEED, "IQ2", &["d@x.example"][..]),
        (&new[..], "IQ1", &["n2@x.example"][..]),
    ] {
        let id = hold_ok(&t, m, q, r);
        ledger.ack(&id, m, q, r);
    }
    assert_eq!(t.spool_files().len(), 4);
    let args: Vec<String> = ["ingest", "--jobs", "1"].map(String::from).into();
    let (out, calls) = trace(&t, &args, Input::Null);
    assert_eq!(out.code, 0, "baseline: {}", out.brief());
    let mut cases = kill_points(&calls, "/spool/");
    // Quick mode: EIO everywhere, ENOSPC at every other occurrence.
    cases.extend(
        fault_points(&calls).into_iter().filter(|p| long_mode() || p.fault == Fault::Errno("EIO") || p.nth % 2 == 1),
    );
    let counts = Mutex::new(BTreeMap::new());
    strace::sweep(&cases, threads(), |p| {
        let label = format!("ingest: {p}");
        let s = Store::copy_of(&t);
        let out = run(Strace::new().fault(p).command(&s, &s.args(&args)), Input::Null, HANG);
        let outcome = match out.code {
            0 => "exit0",
            1 => {
                assert_eq!(out.stderr.matches('\n').count(), 1, "{label}: not one line: {:?}", out.stderr);
                "exit1"
            }
            KILLED => "killed",
            c => panic!("{label}: ingest exited {c}: {}", out.brief()),
        };
        assert!(s.bad_files().is_empty(), "{label}: a fault made a good file bad: {:?}", s.bad_files());
        tally(&counts, outcome);
        ledger.check(&s, &label);
    });
    let counts = counts.into_inner().unwrap();
    assert!(counts.get("exit1").copied().unwrap_or(0) > 0, "no fault failed an ingest: {counts:?}");
    assert!(counts.get("killed").copied().unwrap_or(0) > 0, "no kill landed: {counts:?}");
    eprintln!("spool: ingest every-syscall cases={} {counts:?} in {:?}", cases.len(), started.elapsed());
}

// ---------------------------------------------------------------------------------------------------------------
// 3. hold beside a locked or unreadable index

#[test]
fn hold_exits_0_while_the_index_is_locked_or_unreadable() {
    let s = store();
    let mut ledger = Ledger::default();
    let seed = hold_ok(&s, SEED, "SEED", &["seed@x.example"]);
    ledger.ack(&seed, SEED, "SEED", &["seed@x.example"]);
    converge(&s, "seed");

    let locker = s.lock_index();
    let locked_at = Instant::now();
    let m1 = message("while-locked", 4000);
    let mut a = vec!["hold", "--deadline", "1s", "--verdict", "SPAM", "--from", "x@y.example", "--queue-id", "L1"];
    a.extend(["--", "r@x.example"]);
    let out = s.run(&a, Input::Bytes(&m1));
    assert_eq!(out.code, 0, "hold beside a held write lock: {}", out.brief());
    assert!(out.elapsed < Duration::from_millis(900), "hold waited {:?}", out.elapsed);
    ledger.ack(&out.id(), &m1, "L1", &["r@x.example"]);
    // Keep the lock for longer than the deadline; a second hold still goes through.
    std::thread::sleep(Duration::from_millis(1200).saturating_sub(locked_at.elapsed()));
    let out2 = s.run(&a, Input::Bytes(&m1));
    assert_eq!(out2.code, 0, "second hold beside the lock: {}", out2.brief());
    assert_eq!(out2.id(), out.id(), "a retry of the same queue id, sender and bytes gets the same id");
    drop(locker);

    // Unreadable index: garbage in its place (as root chmod 000 would not stop us), or chmod 000 otherwise.
    let index = s.root.join("index.sqlite");
    let away = s.root.join("index.away");
    use std::os::unix::fs::MetadataExt;
    let root_user = fs::metadata(&s.root).unwrap().uid() == 0;
    if root_user {
        fs::rename(&index, &away).unwrap();
        fs::write(&index, b"this is not an SQLite database at all, it is garbage").unwrap();
    } else {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&index, fs::Permissions::from_mode(0o000)).unwrap();
    }
    let m2 = message("while-unreadable", 3000);
    let out = hold(&s, &m2, "U1", &["u@x.example"]);
    assert_eq!(out.code, 0, "hold with an unreadable index: {}", out.brief());
    ledger.ack(&out.id(), &m2, "U1", &["u@x.example"]);
    let search = s.q(&["search"]);
    assert_ne!(search.code, 0, "search on a damaged index must fail: {}", search.brief());
    if root_user {
        fs::remove_file(&index).unwrap();
        fs::rename(&away, &index).unwrap();
    } else {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&index, fs::Permissions::from_mode(0o600)).unwrap();
    }
    // The index is back: search ingests first and finds both messages.
    let found = s.q(&["search", "--json"]);
    assert_eq!(found.code, 0, "{}", found.brief());
    for id in ledger.acked.keys() {
        assert!(found.text().contains(id.as_str()), "search does not find {id}: {}", found.text());
    }
    ledger.check(&s, "after the index is back");
}

// ---------------------------------------------------------------------------------------------------------------
// 4. Retries and recipient batches

#[test]
fn retries_are_one_message_and_recipient_batches_merge() {
    let s = store();
    let m = message("retry", 3000);
    // Twice pending at once (one ingest batch), then a third time after ingest (an earlier batch).
    let a = hold_ok(&s, &m, "QR1", &["a@x.example"]);
    let b = hold_ok(&s, &m, "QR1", &["a@x.example"]);
    assert_eq!(a, b);
    converge(&s, "two retries");
    let c = hold_ok(&s, &m, "QR1", &["a@x.example"]);
    assert_eq!(a, c);
    converge(&s, "third retry");
    assert_eq!(s.sql("SELECT count(*) FROM messages WHERE queue_id = 'QR1'"), "1");
    assert_eq!(s.sql(&format!("SELECT count(*) FROM recipients WHERE message = '{a}'")), "1");

    // One queue file delivered in two recipient batches: one message, both recipients.
    let m2 = message("batches", 2500);
    let x = hold_ok(&s, &m2, "QB1", &["one@x.example", "two@x.example"]);
    converge(&s, "first batch");
    let y = hold_ok(&s, &m2, "QB1", &["three@x.example", "TWO@x.example"]);
    assert_eq!(x, y);
    converge(&s, "second batch");
    let rc = s.sql(&format!("SELECT address FROM recipients WHERE message = '{x}' ORDER BY address_lc"));
    assert_eq!(rc, "one@x.example\nthree@x.example\ntwo@x.example");
    // Another sender, or other bytes, under the same queue id: another message.
    let z = s.run(
        &["hold", "--verdict", "SPAM", "--from", "o@y.example", "--queue-id", "QB1", "--", "r@x.example"],
        Input::Bytes(&m2),
    );
    assert_eq!(z.code, 0);
    assert_ne!(z.id(), x);
    // No queue id: random ids, two messages.
    let p = hold_ok(&s, &m, "", &["a@x.example"]);
    let q = hold_ok(&s, &m, "", &["a@x.example"]);
    assert_ne!(p, q);
    converge(&s, "no queue id");
    assert_eq!(s.sql("SELECT count(*) FROM messages"), "5");
    s.verify_deep_clean("retries");
    // The audit trail has one `hold` row per ingest batch.
    let log = s.q(&["log", "--json"]);
    assert!(log.text().lines().filter(|l| l.contains("\"action\":\"hold\"")).count() >= 4, "{}", log.text());
}

// ---------------------------------------------------------------------------------------------------------------
// 5. Purge racing ingest

#[test]
fn purge_racing_ingest_never_dangles_deletes_or_resurrects() {
    let s = store();
    let rounds = if long_mode() { 20 } else { 4 };
    let mut purged_qids: BTreeSet<String> = BTreeSet::new();
    for round in 0..rounds {
        // Holds pile up in the spool; then ingest and purge --all run at once (purge ingests first too).
        let mut qids = Vec::new();
        for i in 0..25 {
            let qid = format!("P{round}-{i}");
            // Some bytes are shared across rounds: purge's GC and ingest's dedup meet on the same blobs.
            let m = message(&format!("purge-race-{}", i % 7), 1500 + (i % 7) * 900);
            hold_ok(&s, &m, &qid, &["p@x.example"]);
            qids.push(qid);
        }
        let ingest = {
            let c = s.cmd(&["ingest", "--jobs", "4"]);
            std::thread::spawn(move || run(c, Input::Null, HANG))
        };
        let purge = s.q(&["purge", "--all", "--yes", "--orphan-grace", "24h"]);
        let ing = ingest.join().unwrap();
        assert_eq!(purge.code, 0, "round {round}: purge: {}", purge.brief());
        assert_eq!(ing.code, 0, "round {round}: ingest: {}", ing.brief());
        converge(&s, &format!("round {round}"));
        // Every message is exactly one row: live or a tombstone, never both, never twice.
        for qid in &qids {
            let n = s.sql(&format!("SELECT count(*) FROM messages WHERE queue_id = '{qid}'"));
            assert_eq!(n, "1", "round {round}: {qid} is {n} rows");
        }
        // Everything live has its blob (verify --deep), and what purge tombstoned stays purged.
        s.verify_deep_clean(&format!("round {round}"));
        for qid in &purged_qids {
            let live = s.sql(&format!("SELECT count(*) FROM messages WHERE queue_id = '{qid}' AND purged_us IS NULL"));
            assert_eq!(live, "0", "round {round}: purged {qid} came back");
        }
        let p = s.sql("SELECT queue_id FROM messages WHERE purged_us IS NOT NULL");
        purged_qids.extend(p.lines().map(str::to_string));
    }
    assert!(!purged_qids.is_empty(), "purge never purged anything");

    // The crash case the rule exists for: a spool file whose rows committed but which was not unlinked (ingest
    // killed in between), its message purged, then the file ingested again: dropped, not resurrected.
    let m = message("ingested-then-purged", 2000);
    let id = hold_ok(&s, &m, "PX", &["p@x.example"]);
    let file = s.spool_files().pop().unwrap();
    let keep = s.root.join("keep.spool");
    fs::copy(&file, &keep).unwrap();
    converge(&s, "before the purge");
    let out = s.q(&["purge", "--id", &id, "--yes"]);
    assert_eq!(out.code, 0, "{}", out.brief());
    fs::rename(&keep, &file).unwrap();
    converge(&s, "the old file again");
    assert_eq!(s.sql("SELECT count(*) FROM messages WHERE queue_id = 'PX' AND purged_us IS NULL"), "0");
    assert_eq!(s.sql("SELECT count(*) FROM messages WHERE queue_id = 'PX'"), "1");
    // A new delivery of the same queue id after the purge is acknowledged mail: it gets a fresh id.
    let again = hold_ok(&s, &m, "PX", &["p@x.example"]);
    assert_eq!(again, id, "the id is derived from the queue id, sender and bytes");
    converge(&s, "a new delivery");
    let live = s.sql("SELECT id FROM messages WHERE queue_id = 'PX' AND purged_us IS NULL");
    assert!(!live.is_empty() && live != id, "the new delivery was dropped or reused the purged id: {live:?}");
    // And the MTA's retries of that new delivery merge into it (same queue id, sender and bytes, live).
    hold_ok(&s, &m, "PX", &["p2@x.example"]);
    hold_ok(&s, &m, "PX", &["p3@x.example"]);
    converge(&s, "retries of the new delivery");
    assert_eq!(s.sql("SELECT count(*) FROM messages WHERE queue_id = 'PX' AND purged_us IS NULL"), "1");
    assert_eq!(s.sql(&format!("SELECT count(*) FROM recipients WHERE message = '{live}'")), "3");
    s.verify_deep_clean("after the new delivery");
}

// ---------------------------------------------------------------------------------------------------------------
// 6. Damaged spool files

#[test]
fn truncated_bit_flipped_and_empty_spool_files_go_to_bad() {
    let s = store();
    let good = message("good", 3000);
    let victim = message("victim", 3000);
    let good_id = hold_ok(&s, &good, "G1", &["g@x.example"]);
    let vid = hold_ok(&s, &victim, "V1", &["v@x.example"]);
    let vfile =
        s.spool_files().into_iter().find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&vid)).unwrap();
    let bytes = fs::read(&vfile).unwrap();
    fs::remove_file(&vfile).unwrap();
    let dir = s.root.join("spool");
    fs::write(dir.join(format!("{vid}.truncated")), &bytes[..bytes.len() - 40]).unwrap();
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x08;
    fs::write(dir.join(format!("{vid}.flipped")), &flipped).unwrap();
    fs::write(dir.join("0000000000.empty"), b"").unwrap();

    let out = s.q(&["ingest", "--json"]);
    assert_eq!(out.code, 1, "ingest with bad files exits 1: {}", out.brief());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ingested"], 1, "{report}");
    assert_eq!(report["bad"].as_array().unwrap().len(), 3, "{report}");
    let bad = s.bad_files();
    assert_eq!(bad.len(), 6, "three files and three .reason files: {bad:?}");
    let reason = |name: &str| fs::read_to_string(s.root.join("spool/bad").join(format!("{name}.reason"))).unwrap();
    assert!(reason(&format!("{vid}.truncated")).starts_with("truncated"), "{}", reason(&format!("{vid}.truncated")));
    assert!(reason(&format!("{vid}.flipped")).starts_with("hash-mismatch"), "{}", reason(&format!("{vid}.flipped")));
    assert!(reason("0000000000.empty").starts_with("truncated"));
    // Kept byte for byte.
    assert_eq!(fs::read(s.root.join("spool/bad").join(format!("{vid}.flipped"))).unwrap(), flipped);
    // Nothing else affected: the good message is there.
    let raw = s.q(&["show", &good_id, "--raw"]);
    assert_eq!(&raw.stdout[..], &good[..]);
    // Reported by verify (exit 1), stats, and never deleted by any command.
    let v = s.q(&["verify"]);
    assert_eq!(v.code, 1, "verify with spool/bad entries: {}", v.brief());
    assert!(v.text().contains("truncated") && v.text().contains("hash-mismatch"), "{}", v.text());
    let st = s.q(&["stats", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["spool"]["bad"], 3, "{st}");
    assert_eq!(s.q(&["purge", "--all", "--yes", "--orphan-grace", "0s"]).code, 0);
    assert_eq!(s.q(&["ingest"]).code, 0, "nothing new is bad");
    assert_eq!(s.bad_files().len(), 6, "a command deleted something in spool/bad/");
}

// ---------------------------------------------------------------------------------------------------------------
// 7. Upgrade, monitoring, memory

#[test]
fn a_store_without_spool_is_upgraded_on_first_open() {
    for first in ["hold", "search"] {
        let s = store();
        let seed = hold_ok(&s, SEED, "SEED", &["s@x.example"]);
        converge(&s, "seed");
        // The previous release's layout: no spool/ at all.
        fs::remove_dir_all(s.root.join("spool")).unwrap();
        if first == "hold" {
            let m = message("after-upgrade", 1000);
            let id = hold_ok(&s, &m, "UP1", &["u@x.example"]);
            assert!(s.root.join("spool/bad").is_dir(), "hold did not create spool/bad/");
            converge(&s, "after the upgrade");
            assert_eq!(s.q(&["show", &id, "--raw"]).stdout, m);
        } else {
            assert_eq!(s.q(&["search"]).code, 0);
            assert!(s.root.join("spool/bad").is_dir(), "search did not create spool/bad/");
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(s.root.join("spool")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(s.q(&["show", &seed, "--raw"]).stdout, SEED);
        s.verify_deep_clean(first);
    }
}

#[test]
fn stats_and_check_report_the_backlog() {
    let s = store();
    let cfg =
        s.file("config.toml", format!("{}spool_max_age = \"30s\"\nmin_free_space = \"1M\"\n", crate::index_line(&s)));
    let cfgs = cfg.to_str().unwrap();
    hold_ok(&s, &message("backlog", 5000), "B1", &["b@x.example"]);
    // Made to look two minutes old (ingest is not running).
    let file = s.spool_files().pop().unwrap();
    let two_minutes_ago = std::time::SystemTime::now() - Duration::from_secs(120);
    fs::File::options().write(true).open(&file).unwrap().set_modified(two_minutes_ago).unwrap();
    let check = s.q(&["--config", cfgs, "check"]);
    assert_eq!(check.code, 75, "{}", check.brief());
    assert!(check.stderr.contains("spool") && check.stderr.contains("spool_max_age"), "{}", check.stderr);
    assert_eq!(check.stderr.matches('\n').count(), 1);
    // stats ingests first (bounded) unless another ingest runs: hold the ingest lock to see the backlog.
    // (flock(2) on an open file description of this process: the child's flock on its own one conflicts.)
    let locker = fs::File::options().create(true).append(true).open(s.root.join("spool/.ingest.lock")).unwrap();
    locker.lock().expect("take the ingest lock");
    let st = s.q(&["stats", "--json"]);
    drop(locker);
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["spool"]["pending"], 1, "{st}");
    assert!(st["spool"]["bytes"].as_u64().unwrap() > 5000, "{st}");
    assert!(st["spool"]["oldest_age_s"].as_f64().unwrap() >= 100.0, "{st}");
    assert_eq!(st["spool"]["bad"], 0, "{st}");
    // Without the lock, stats ingests first.
    let st = s.q(&["stats", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["spool"]["pending"], 0, "stats ingested first: {st}");
    let check = s.q(&["--config", cfgs, "check"]);
    assert_eq!(check.code, 0, "{}", check.brief());
    let text = s.q(&["stats"]);
    assert!(text.text().contains("spool: 0 pending"), "{}", text.text());
}

#[test]
fn a_20_mib_hold_stays_under_64_mib_rss() {
    let s = store();
    let big = s.work().join("big.eml");
    let mut m = message("big", 1000);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while m.len() < 20 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        m.extend_from_slice(format!("{x:016x}{:016x}{x:024x}\r\n", x.rotate_left(17)).as_bytes());
    }
    fs::write(&big, &m).unwrap();
    // python3 reads the child's peak RSS (ru_maxrss, KiB) after it exits.
    let script = "import resource, subprocess, sys\n\
        r = subprocess.run(sys.argv[2:], stdin=open(sys.argv[1], 'rb'), stdout=subprocess.PIPE)\n\
        print(r.returncode, r.stdout.decode().strip(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n";
    let mut c = s.program(require("python3", "python3"));
    c.arg("-c").arg(script).arg(&big).arg(BIN).args(s.args(&hold_argv("BIG", &["r@x.example"])));
    let out = run(c, Input::Null, HANG);
    let text = out.text();
    let parts: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(parts.first(), Some(&"0"), "{}", out.brief());
    let kib: u64 = parts[2].parse().unwrap();
    assert!(kib < 64 * 1024, "a 20 MiB hold peaked at {kib} KiB");
    let id = parts[1].to_string();
    converge(&s, "big");
    let raw = s.raw(&id);
    assert!(raw == m, "the 20 MiB message is not byte-exact");
    eprintln!("spool: 20 MiB hold peak RSS {kib} KiB");
}

#[test]
fn a_backlog_past_one_batch_is_named_not_hidden() {
    let s = store();
    // Two messages of 17 MiB: the bounded ingest every command runs first (32 MiB a batch) takes only one.
    let mut big = message("backlog-big", 1000);
    big.extend(
        std::iter::repeat_n(b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n", 17 << 14).flatten(),
    );
    hold_ok(&s, &big, "BIG1", &["b@x.example"]);
    // Ingest takes the oldest first; file times are as coarse as a jiffy.
    std::thread::sleep(Duration::from_millis(30));
    big.extend_from_slice(b"2\r\n");
    hold_ok(&s, &big, "BIG2", &["b@x.example"]);
    std::thread::sleep(Duration::from_millis(30));
    let small = hold_ok(&s, &message("backlog-small", 500), "SMALL", &["alice@x.example"]);
    let show = s.q(&["show", &small]);
    assert_eq!(show.code, 1, "{}", show.brief());
    assert!(show.stderr.contains("2 held message(s) still in spool/, not yet indexed"), "{}", show.stderr);
    // The next command's batch takes the rest: the message is there and nothing is left to warn about.
    let search = s.q(&["search", "--rcpt", "alice@x.example"]);
    assert!(search.success() && search.text().contains(&small), "{}", search.brief());
    assert!(search.stderr.is_empty(), "{}", search.stderr);
}
