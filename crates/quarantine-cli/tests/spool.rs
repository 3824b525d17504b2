//! The spool (DESIGN sections 4, 7, 8; issue 12), against the real binary, real files and real processes:
//! SIGKILL at random moments and at every system call of a hold and of an ingest batch, EIO and ENOSPC at every
//! write-path call of both, hold beside a locked or unreadable index, retries and recipient batches, purge racing
//! ingest, damaged spool files, the upgrade of a store without `spool/`, and the monitoring surface.
//!
//! After every crash or fault the same invariant is checked ([`Ledger::check`]): `ingest` converges (the spool
//! drains); every hold that exited 0 is readable byte-exact with `show --raw`, exactly once (one row for its
//! queue id), with every recipient it was acknowledged for; no recipient twice; `verify --deep` exits 0.
//!
//! Self-contained (its own small runner). `QUARANTINE_TORTURE=long` runs every kill point and many more random
//! kills.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_quarantine");
const HANG: Duration = Duration::from_secs(60);
const KILLED: i32 = -9;

fn long_mode() -> bool {
    std::env::var("QUARANTINE_TORTURE").is_ok_and(|v| v == "long")
}

// ---------------------------------------------------------------------------------------------------------------
// A small runner

#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Out {
    fn id(&self) -> String {
        self.stdout.trim().to_string()
    }
}

fn hermetic(c: &mut Command) -> &mut Command {
    c.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin")
        .env("TZ", "UTC")
        .env("USER", "spooltest")
}

fn quarantine<S: AsRef<OsStr>>(args: &[S]) -> Command {
    let mut c = Command::new(BIN);
    hermetic(&mut c).args(args);
    c
}

fn strace<S: AsRef<OsStr>, T: AsRef<OsStr>>(strace_args: &[S], args: &[T]) -> Command {
    let mut c = Command::new("strace");
    hermetic(&mut c).args(["-f", "-qq"]).args(strace_args).arg("--").arg(BIN).args(args);
    c
}

fn strace_works() -> bool {
    Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| -status.signal().unwrap_or(0))
}

/// Runs `c` with `input` on stdin; kills it after `kill_after` (a random crash) or fails the test after HANG.
fn run_with(mut c: Command, input: &[u8], kill_after: Option<Duration>) -> Out {
    let started = Instant::now();
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let (mut so, mut se) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let r1 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let r2 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let limit = kill_after.unwrap_or(HANG);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() >= limit {
            let _ = child.kill();
            let st = child.wait().unwrap();
            assert!(kill_after.is_some(), "{c:?} hung for {HANG:?}");
            break st;
        }
        std::thread::sleep(Duration::from_micros(500));
    };
    let _ = feeder.join();
    Out {
        code: code_of(status),
        stdout: String::from_utf8_lossy(&r1.join().unwrap()).to_string(),
        stderr: String::from_utf8_lossy(&r2.join().unwrap()).to_string(),
        elapsed: started.elapsed(),
    }
}

fn run(c: Command, input: &[u8]) -> Out {
    run_with(c, input, None)
}

struct XorShift(u64);
impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn message(tag: &str, len: usize) -> Vec<u8> {
    let mut m = format!("From: sender@example.org\r\nTo: rcpt@example.net\r\nSubject: {tag}\r\n\r\n").into_bytes();
    let mut i = 0u64;
    while m.len() < len {
        m.extend_from_slice(format!("{tag} line {i}\r\n").as_bytes());
        i += 1;
    }
    m
}

// ---------------------------------------------------------------------------------------------------------------
// A store and what it acknowledged

struct Store {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Store {
    fn new() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let s = Store { _dir: dir, root };
        let out = s.q(&["init"]);
        assert_eq!(out.code, 0, "init: {out:?}");
        s
    }

    fn copy_of(t: &Store) -> Store {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let st = Command::new("cp").arg("-a").arg(&t.root).arg(&root).status().unwrap();
        assert!(st.success());
        Store { _dir: dir, root }
    }

    fn args<'a>(&'a self, rest: &[&'a str]) -> Vec<&'a OsStr> {
        let mut v = vec![OsStr::new("--store"), self.root.as_os_str()];
        v.extend(rest.iter().map(|r| OsStr::new(*r)));
        v
    }

    fn cmd(&self, rest: &[&str]) -> Command {
        quarantine(&self.args(rest))
    }

    fn q(&self, rest: &[&str]) -> Out {
        run(self.cmd(rest), b"")
    }

    fn hold(&self, msg: &[u8], qid: &str, rcpts: &[&str]) -> Out {
        run(self.cmd(&hold_args(qid, rcpts)), msg)
    }

    fn hold_ok(&self, msg: &[u8], qid: &str, rcpts: &[&str]) -> String {
        let out = self.hold(msg, qid, rcpts);
        assert_eq!(out.code, 0, "hold: {out:?}");
        out.id()
    }

    fn sql(&self, sql: &str) -> String {
        let out = Command::new("sqlite3").arg(self.root.join("index.sqlite")).arg(sql).output().unwrap();
        assert!(out.status.success(), "sqlite3 {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn spool_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(self.root.join("spool"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_file() && !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect();
        v.sort();
        v
    }

    fn bad_files(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.root.join("spool/bad"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    }

    /// Runs `ingest` until the spool is empty (a crashed one may have left files): convergence.
    fn converge(&self, what: &str) {
        let out = self.q(&["ingest"]);
        assert!(out.code == 0, "{what}: ingest: {out:?}");
        assert!(self.spool_files().is_empty(), "{what}: spool not drained: {:?}", self.spool_files());
    }

    fn verify_clean(&self, what: &str) {
        let out = self.q(&["verify", "--deep"]);
        assert_eq!(out.code, 0, "{what}: verify --deep: {out:?}");
    }
}

fn hold_args<'a>(qid: &'a str, rcpts: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["hold", "--verdict", "SPAM", "--from", "sender@example.org"];
    if !qid.is_empty() {
        a.extend(["--queue-id", qid]);
    }
    a.push("--");
    a.extend(rcpts);
    a
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
    fn check(&self, s: &Store, what: &str) {
        s.converge(what);
        for (id, (bytes, qid, rcpts)) in &self.acked {
            let raw = Command::new(BIN)
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .args(s.args(&["show", id, "--raw"]))
                .output()
                .unwrap();
            assert!(raw.status.success(), "{what}: show --raw {id}: {}", String::from_utf8_lossy(&raw.stderr));
            assert!(raw.stdout == *bytes, "{what}: {id} is not byte-exact");
            if !qid.is_empty() {
                let n = s.sql(&format!("SELECT count(*) FROM messages WHERE queue_id = '{qid}'"));
                assert_eq!(n, "1", "{what}: queue id {qid} is {n} messages");
            }
            let got = s.sql(&format!("SELECT address FROM recipients WHERE message = '{id}' ORDER BY address"));
            let got: BTreeSet<String> = got.lines().map(str::to_string).collect();
            assert!(rcpts.is_subset(&got), "{what}: {id} has recipients {got:?}, acknowledged {rcpts:?}");
        }
        let dup =
            s.sql("SELECT count(*) FROM (SELECT 1 FROM recipients GROUP BY message, address_lc HAVING count(*) > 1)");
        assert_eq!(dup, "0", "{what}: a recipient twice");
        s.verify_clean(what);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 1. SIGKILL at random moments during hold and during ingest

#[test]
fn sigkill_at_random_moments_during_hold_and_ingest() {
    let started = Instant::now();
    let cycles = if long_mode() { 3000 } else { 320 };
    let s = Store::new();
    let mut rng = XorShift(0x5eed_1234_5678_9abc);
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
            std::thread::spawn(move || run_with(c, b"", di))
        };
        let out = run_with(s.cmd(&hold_args(&qid, &r)), &msgs[k], dh);
        let ing = ingest.join().unwrap();
        for (o, name) in [(&out, "hold"), (&ing, "ingest")] {
            match o.code {
                KILLED => kills += 1,
                0 => {}
                c if name == "hold" => assert_eq!(c, 75, "cycle {cycle}: hold exited {c}: {o:?}"),
                c => panic!("cycle {cycle}: ingest exited {c}: {o:?}"),
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

/// One call of a `strace -f` trace: its name and which call of that name it is in its thread (what `when=`
/// counts: per syscall and per tracee).
#[derive(Clone, Debug)]
struct Call {
    name: String,
    nth: u32,
    line: String,
}

fn parse_trace(text: &str) -> Vec<Call> {
    let mut counts: BTreeMap<(u32, String), u32> = BTreeMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((tid, rest)) = line.split_once(' ') else { continue };
        let Ok(tid) = tid.trim().parse::<u32>() else { continue };
        let rest = rest.trim_start();
        if rest.starts_with("<...") || rest.starts_with("+++") || rest.starts_with("---") {
            continue;
        }
        let Some(paren) = rest.find('(') else { continue };
        let name = &rest[..paren];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        let n = counts.entry((tid, name.to_string())).or_insert(0);
        *n += 1;
        out.push(Call { name: name.to_string(), nth: *n, line: line.to_string() });
    }
    out
}

fn trace(s: &Store, args: &[&str], input: &[u8]) -> (Out, Vec<Call>) {
    let file = s.root.parent().unwrap().join("baseline.trace");
    let st = [OsStr::new("-y"), OsStr::new("-o"), file.as_os_str()];
    let out = run(strace(&st, &s.args(args)), input);
    (out, parse_trace(&fs::read_to_string(&file).unwrap()))
}

/// Every distinct (name, n-th) kill point of a trace, from the first call touching `from` on (in quick mode;
/// every 4th before it), or every one in long mode.
fn kill_points(calls: &[Call], from: &str) -> Vec<(String, u32)> {
    let mut seen = BTreeSet::new();
    let first = calls.iter().position(|c| c.line.contains(from)).unwrap_or(0);
    calls
        .iter()
        .enumerate()
        .filter(|(i, c)| seen.insert((c.name.clone(), c.nth)) && (long_mode() || *i >= first || i % 4 == 0))
        .map(|(_, c)| (c.name.clone(), c.nth))
        .collect()
}

const FAULT_SYSCALLS: &[&str] = &[
    "fsync",
    "fdatasync",
    "write",
    "pwrite64",
    "rename",
    "renameat",
    "renameat2",
    "openat",
    "unlink",
    "unlinkat",
    "mkdir",
    "mkdirat",
    "ftruncate",
    "fchown",
    "flock",
];

/// Write-path calls of a trace (loader calls before main skipped: a failure there is ld.so's exit 127).
fn fault_points(calls: &[Call]) -> Vec<(String, u32)> {
    let mut seen = BTreeSet::new();
    calls
        .iter()
        .filter(|c| FAULT_SYSCALLS.contains(&c.name.as_str()))
        .filter(|c| !(c.name == "openat" && (c.line.contains("/etc/ld.so") || c.line.contains(".so"))))
        .filter(|c| seen.insert((c.name.clone(), c.nth)))
        .map(|c| (c.name.clone(), c.nth))
        .collect()
}

fn par_for_each<T: Sync>(items: &[T], f: impl Fn(&T) + Sync) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 4);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                f(item);
            });
        }
    });
}

fn inject_args(name: &str, nth: u32, what: &str) -> Vec<String> {
    let mut v = vec!["-o".to_string(), "/dev/null".into(), "-e".into(), format!("trace={name}")];
    v.extend(["-e".into(), format!("inject={name}:{what}:when={nth}")]);
    if !what.starts_with("signal") {
        v.insert(0, "--seccomp-bpf".into()); // (with signals strace 6.1 then never delivers the kill)
    }
    v
}

const SEED: &[u8] = b"From: seed@example.org\r\nSubject: seed\r\n\r\nseed\r\n";

/// A store with one message indexed (blob directories exist, the index has a row).
fn template() -> (Store, Ledger) {
    let t = Store::new();
    let mut l = Ledger::default();
    let id = t.hold_ok(SEED, "SEED", &["seed@x.example"]);
    l.ack(&id, SEED, "SEED", &["seed@x.example"]);
    t.converge("template");
    (t, l)
}

#[test]
fn sigkill_and_io_errors_at_every_syscall_of_a_hold() {
    if !strace_works() {
        eprintln!("spool: strace cannot trace here: skipped");
        return;
    }
    let started = Instant::now();
    let (t, base_ledger) = template();
    let msg = message("every-syscall-hold", 5000);
    let args = hold_args("HQ1", &["r1@x.example", "r2@x.example"]);
    let (out, calls) = trace(&Store::copy_of(&t), &args, &msg);
    assert_eq!(out.code, 0, "baseline: {out:?}");
    let mut cases: Vec<(String, u32, String)> =
        kill_points(&calls, "/spool/").into_iter().map(|(n, k)| (n, k, "signal=KILL".to_string())).collect();
    for (n, k) in fault_points(&calls) {
        for e in ["EIO", "ENOSPC"] {
            cases.push((n.clone(), k, format!("error={e}")));
        }
    }
    let counts = Mutex::new(BTreeMap::<String, u64>::new());
    par_for_each(&cases, |(name, nth, what)| {
        let label = format!("hold: {what} at {name} #{nth}");
        let s = Store::copy_of(&t);
        let mut ledger = base_ledger.clone();
        let st = inject_args(name, *nth, what);
        let out = run(strace(&st, &s.args(&args)), &msg);
        let outcome = match out.code {
            0 => {
                ledger.ack(&out.id(), &msg, "HQ1", &["r1@x.example", "r2@x.example"]);
                "exit0"
            }
            75 => {
                assert!(out.stdout.is_empty(), "{label}: 75 but printed an id");
                assert_eq!(out.stderr.matches('\n').count(), 1, "{label}: stderr is not one line: {:?}", out.stderr);
                "exit75"
            }
            KILLED => "killed",
            c => panic!("{label}: hold exited {c}: {out:?}"),
        };
        *counts.lock().unwrap().entry(outcome.to_string()).or_default() += 1;
        ledger.check(&s, &label);
        // The MTA retries whatever was not acknowledged (and a retry of an acknowledged one is harmless).
        let id = s.hold_ok(&msg, "HQ1", &["r1@x.example", "r2@x.example"]);
        ledger.ack(&id, &msg, "HQ1", &["r1@x.example", "r2@x.example"]);
        ledger.check(&s, &format!("{label}, after the retry"));
    });
    let counts = counts.into_inner().unwrap();
    assert!(counts.get("exit75").copied().unwrap_or(0) > 0, "no fault failed a hold: {counts:?}");
    assert!(counts.get("killed").copied().unwrap_or(0) > 0, "no kill landed: {counts:?}");
    eprintln!("spool: hold every-syscall cases={} {counts:?} in {:?}", cases.len(), started.elapsed());
}

#[test]
fn sigkill_and_io_errors_at_every_syscall_of_an_ingest_batch() {
    if !strace_works() {
        eprintln!("spool: strace cannot trace here: skipped");
        return;
    }
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
        let id = t.hold_ok(m, q, r);
        ledger.ack(&id, m, q, r);
    }
    assert_eq!(t.spool_files().len(), 4);
    let args = ["ingest", "--jobs", "1"];
    let (out, calls) = trace(&Store::copy_of(&t), &args, b"");
    assert_eq!(out.code, 0, "baseline: {out:?}");
    let mut cases: Vec<(String, u32, String)> =
        kill_points(&calls, "/spool/").into_iter().map(|(n, k)| (n, k, "signal=KILL".to_string())).collect();
    for (n, k) in fault_points(&calls) {
        for e in ["EIO", "ENOSPC"] {
            if long_mode() || e == "EIO" || k % 2 == 1 {
                cases.push((n.clone(), k, format!("error={e}")));
            }
        }
    }
    let counts = Mutex::new(BTreeMap::<String, u64>::new());
    par_for_each(&cases, |(name, nth, what)| {
        let label = format!("ingest: {what} at {name} #{nth}");
        let s = Store::copy_of(&t);
        let st = inject_args(name, *nth, what);
        let out = run(strace(&st, &s.args(&args)), b"");
        let outcome = match out.code {
            0 => "exit0",
            1 => {
                assert_eq!(out.stderr.matches('\n').count(), 1, "{label}: not one line: {:?}", out.stderr);
                "exit1"
            }
            KILLED => "killed",
            c => panic!("{label}: ingest exited {c}: {out:?}"),
        };
        assert!(s.bad_files().is_empty(), "{label}: a fault made a good file bad: {:?}", s.bad_files());
        *counts.lock().unwrap().entry(outcome.to_string()).or_default() += 1;
        ledger.check(&s, &label);
    });
    let counts = counts.into_inner().unwrap();
    assert!(counts.get("exit1").copied().unwrap_or(0) > 0, "no fault failed an ingest: {counts:?}");
    assert!(counts.get("killed").copied().unwrap_or(0) > 0, "no kill landed: {counts:?}");
    eprintln!("spool: ingest every-syscall cases={} {counts:?} in {:?}", cases.len(), started.elapsed());
}

// ---------------------------------------------------------------------------------------------------------------
// 3. hold beside a locked or unreadable index

/// A python3 process that holds the index write lock (`BEGIN IMMEDIATE`) until its stdin closes; returns once it
/// printed "locked" (it holds the lock then: no race).
fn lock_index(index: &Path) -> Child {
    let script = "import sqlite3, sys\n\
        c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n\
        c.execute('BEGIN IMMEDIATE')\n\
        print('locked', flush=True)\n\
        sys.stdin.read()\n";
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(index)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "locked", "the locker did not take the lock");
    child
}

#[test]
fn hold_exits_0_while_the_index_is_locked_or_unreadable() {
    let s = Store::new();
    let mut ledger = Ledger::default();
    let seed = s.hold_ok(SEED, "SEED", &["seed@x.example"]);
    ledger.ack(&seed, SEED, "SEED", &["seed@x.example"]);
    s.converge("seed");

    let mut locker = lock_index(&s.root.join("index.sqlite"));
    let locked_at = Instant::now();
    let m1 = message("while-locked", 4000);
    let mut a = vec!["hold", "--deadline", "1s", "--verdict", "SPAM", "--from", "x@y.example", "--queue-id", "L1"];
    a.extend(["--", "r@x.example"]);
    let out = run(s.cmd(&a), &m1);
    assert_eq!(out.code, 0, "hold beside a held write lock: {out:?}");
    assert!(out.elapsed < Duration::from_millis(900), "hold waited {:?}", out.elapsed);
    ledger.ack(&out.id(), &m1, "L1", &["r@x.example"]);
    // Keep the lock for longer than the deadline; a second hold still goes through.
    std::thread::sleep(Duration::from_millis(1200).saturating_sub(locked_at.elapsed()));
    let out2 = run(s.cmd(&a), &m1);
    assert_eq!(out2.code, 0, "second hold beside the lock: {out2:?}");
    assert_eq!(out2.id(), out.id(), "a retry of the same queue id, sender and bytes gets the same id");
    drop(locker.stdin.take());
    locker.wait().unwrap();

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
    let out = s.hold(&m2, "U1", &["u@x.example"]);
    assert_eq!(out.code, 0, "hold with an unreadable index: {out:?}");
    ledger.ack(&out.id(), &m2, "U1", &["u@x.example"]);
    let search = s.q(&["search"]);
    assert_ne!(search.code, 0, "search on a damaged index must fail: {search:?}");
    if root_user {
        fs::remove_file(&index).unwrap();
        fs::rename(&away, &index).unwrap();
    } else {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&index, fs::Permissions::from_mode(0o600)).unwrap();
    }
    // The index is back: search ingests first and finds both messages.
    let found = s.q(&["search", "--json"]);
    assert_eq!(found.code, 0, "{found:?}");
    for id in ledger.acked.keys() {
        assert!(found.stdout.contains(id.as_str()), "search does not find {id}: {}", found.stdout);
    }
    ledger.check(&s, "after the index is back");
}

// ---------------------------------------------------------------------------------------------------------------
// 4. Retries and recipient batches

#[test]
fn retries_are_one_message_and_recipient_batches_merge() {
    let s = Store::new();
    let m = message("retry", 3000);
    // Twice pending at once (one ingest batch), then a third time after ingest (an earlier batch).
    let a = s.hold_ok(&m, "QR1", &["a@x.example"]);
    let b = s.hold_ok(&m, "QR1", &["a@x.example"]);
    assert_eq!(a, b);
    s.converge("two retries");
    let c = s.hold_ok(&m, "QR1", &["a@x.example"]);
    assert_eq!(a, c);
    s.converge("third retry");
    assert_eq!(s.sql("SELECT count(*) FROM messages WHERE queue_id = 'QR1'"), "1");
    assert_eq!(s.sql(&format!("SELECT count(*) FROM recipients WHERE message = '{a}'")), "1");

    // One queue file delivered in two recipient batches: one message, both recipients.
    let m2 = message("batches", 2500);
    let x = s.hold_ok(&m2, "QB1", &["one@x.example", "two@x.example"]);
    s.converge("first batch");
    let y = s.hold_ok(&m2, "QB1", &["three@x.example", "TWO@x.example"]);
    assert_eq!(x, y);
    s.converge("second batch");
    let rc = s.sql(&format!("SELECT address FROM recipients WHERE message = '{x}' ORDER BY address_lc"));
    assert_eq!(rc, "one@x.example\nthree@x.example\ntwo@x.example");
    // Another sender, or other bytes, under the same queue id: another message.
    let z = run(
        s.cmd(&["hold", "--verdict", "SPAM", "--from", "o@y.example", "--queue-id", "QB1", "--", "r@x.example"]),
        &m2,
    );
    assert_eq!(z.code, 0);
    assert_ne!(z.id(), x);
    // No queue id: random ids, two messages.
    let p = s.hold_ok(&m, "", &["a@x.example"]);
    let q = s.hold_ok(&m, "", &["a@x.example"]);
    assert_ne!(p, q);
    s.converge("no queue id");
    assert_eq!(s.sql("SELECT count(*) FROM messages"), "5");
    s.verify_clean("retries");
    // The audit trail has one `hold` row per ingest batch.
    let log = s.q(&["log", "--json"]);
    assert!(log.stdout.lines().filter(|l| l.contains("\"action\":\"hold\"")).count() >= 4, "{}", log.stdout);
}

// ---------------------------------------------------------------------------------------------------------------
// 5. Purge racing ingest

#[test]
fn purge_racing_ingest_never_dangles_deletes_or_resurrects() {
    let s = Store::new();
    let rounds = if long_mode() { 20 } else { 4 };
    let mut purged_qids: BTreeSet<String> = BTreeSet::new();
    for round in 0..rounds {
        // Holds pile up in the spool; then ingest and purge --all run at once (purge ingests first too).
        let mut qids = Vec::new();
        for i in 0..25 {
            let qid = format!("P{round}-{i}");
            // Some bytes are shared across rounds: purge's GC and ingest's dedup meet on the same blobs.
            let m = message(&format!("purge-race-{}", i % 7), 1500 + (i % 7) * 900);
            s.hold_ok(&m, &qid, &["p@x.example"]);
            qids.push(qid);
        }
        let ingest = {
            let c = s.cmd(&["ingest", "--jobs", "4"]);
            std::thread::spawn(move || run(c, b""))
        };
        let purge = s.q(&["purge", "--all", "--yes", "--orphan-grace", "24h"]);
        let ing = ingest.join().unwrap();
        assert_eq!(purge.code, 0, "round {round}: purge: {purge:?}");
        assert_eq!(ing.code, 0, "round {round}: ingest: {ing:?}");
        s.converge(&format!("round {round}"));
        // Every message is exactly one row: live or a tombstone, never both, never twice.
        for qid in &qids {
            let n = s.sql(&format!("SELECT count(*) FROM messages WHERE queue_id = '{qid}'"));
            assert_eq!(n, "1", "round {round}: {qid} is {n} rows");
        }
        // Everything live has its blob (verify --deep), and what purge tombstoned stays purged.
        s.verify_clean(&format!("round {round}"));
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
    let id = s.hold_ok(&m, "PX", &["p@x.example"]);
    let file = s.spool_files().pop().unwrap();
    let keep = s.root.join("keep.spool");
    fs::copy(&file, &keep).unwrap();
    s.converge("before the purge");
    let out = s.q(&["purge", "--id", &id, "--yes"]);
    assert_eq!(out.code, 0, "{out:?}");
    fs::rename(&keep, &file).unwrap();
    s.converge("the old file again");
    assert_eq!(s.sql("SELECT count(*) FROM messages WHERE queue_id = 'PX' AND purged_us IS NULL"), "0");
    assert_eq!(s.sql("SELECT count(*) FROM messages WHERE queue_id = 'PX'"), "1");
    // A new delivery of the same queue id after the purge is acknowledged mail: it gets a fresh id.
    let again = s.hold_ok(&m, "PX", &["p@x.example"]);
    assert_eq!(again, id, "the id is derived from the queue id, sender and bytes");
    s.converge("a new delivery");
    let live = s.sql("SELECT id FROM messages WHERE queue_id = 'PX' AND purged_us IS NULL");
    assert!(!live.is_empty() && live != id, "the new delivery was dropped or reused the purged id: {live:?}");
    // And the MTA's retries of that new delivery merge into it (same queue id, sender and bytes, live).
    s.hold_ok(&m, "PX", &["p2@x.example"]);
    s.hold_ok(&m, "PX", &["p3@x.example"]);
    s.converge("retries of the new delivery");
    assert_eq!(s.sql("SELECT count(*) FROM messages WHERE queue_id = 'PX' AND purged_us IS NULL"), "1");
    assert_eq!(s.sql(&format!("SELECT count(*) FROM recipients WHERE message = '{live}'")), "3");
    s.verify_clean("after the new delivery");
}

// ---------------------------------------------------------------------------------------------------------------
// 6. Damaged spool files

#[test]
fn truncated_bit_flipped_and_empty_spool_files_go_to_bad() {
    let s = Store::new();
    let good = message("good", 3000);
    let victim = message("victim", 3000);
    let good_id = s.hold_ok(&good, "G1", &["g@x.example"]);
    let vid = s.hold_ok(&victim, "V1", &["v@x.example"]);
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
    assert_eq!(out.code, 1, "ingest with bad files exits 1: {out:?}");
    let report: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
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
    assert_eq!(raw.stdout.as_bytes(), &good[..]);
    // Reported by verify (exit 1), stats, and never deleted by any command.
    let v = s.q(&["verify"]);
    assert_eq!(v.code, 1, "verify with spool/bad entries: {v:?}");
    assert!(v.stdout.contains("truncated") && v.stdout.contains("hash-mismatch"), "{}", v.stdout);
    let st = s.q(&["stats", "--json"]);
    let st: serde_json::Value = serde_json::from_str(st.stdout.trim()).unwrap();
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
        let s = Store::new();
        let seed = s.hold_ok(SEED, "SEED", &["s@x.example"]);
        s.converge("seed");
        // The previous release's layout: no spool/ at all.
        fs::remove_dir_all(s.root.join("spool")).unwrap();
        if first == "hold" {
            let m = message("after-upgrade", 1000);
            let id = s.hold_ok(&m, "UP1", &["u@x.example"]);
            assert!(s.root.join("spool/bad").is_dir(), "hold did not create spool/bad/");
            s.converge("after the upgrade");
            assert_eq!(s.q(&["show", &id, "--raw"]).stdout.as_bytes(), &m[..]);
        } else {
            assert_eq!(s.q(&["search"]).code, 0);
            assert!(s.root.join("spool/bad").is_dir(), "search did not create spool/bad/");
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(s.root.join("spool")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(s.q(&["show", &seed, "--raw"]).stdout.as_bytes(), SEED);
        s.verify_clean(first);
    }
}

#[test]
fn stats_and_check_report_the_backlog() {
    let s = Store::new();
    let cfg = s.root.parent().unwrap().join("config.toml");
    fs::write(&cfg, "spool_max_age = \"30s\"\nmin_free_space = \"1M\"\n").unwrap();
    let cfgs = cfg.to_str().unwrap();
    s.hold_ok(&message("backlog", 5000), "B1", &["b@x.example"]);
    // Made to look two minutes old (ingest is not running).
    let file = s.spool_files().pop().unwrap();
    let st = Command::new("touch").arg("-d").arg("2 minutes ago").arg(&file).status().unwrap();
    assert!(st.success());
    let check = s.q(&["--config", cfgs, "check"]);
    assert_eq!(check.code, 75, "{check:?}");
    assert!(check.stderr.contains("spool") && check.stderr.contains("spool_max_age"), "{}", check.stderr);
    assert_eq!(check.stderr.matches('\n').count(), 1);
    // stats ingests first (bounded) unless another ingest runs: hold the ingest lock to see the backlog.
    let script = "import fcntl, sys\n\
        f = open(sys.argv[1], 'a')\n\
        fcntl.flock(f, fcntl.LOCK_EX)\n\
        print('locked', flush=True)\n\
        sys.stdin.read()\n";
    let mut locker = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(s.root.join("spool/.ingest.lock"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(locker.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "locked");
    let st = s.q(&["stats", "--json"]);
    drop(locker.stdin.take());
    locker.wait().unwrap();
    let st: serde_json::Value = serde_json::from_str(st.stdout.trim()).unwrap();
    assert_eq!(st["spool"]["pending"], 1, "{st}");
    assert!(st["spool"]["bytes"].as_u64().unwrap() > 5000, "{st}");
    assert!(st["spool"]["oldest_age_s"].as_f64().unwrap() >= 100.0, "{st}");
    assert_eq!(st["spool"]["bad"], 0, "{st}");
    // Without the lock, stats ingests first.
    let st = s.q(&["stats", "--json"]);
    let st: serde_json::Value = serde_json::from_str(st.stdout.trim()).unwrap();
    assert_eq!(st["spool"]["pending"], 0, "stats ingested first: {st}");
    let check = s.q(&["--config", cfgs, "check"]);
    assert_eq!(check.code, 0, "{check:?}");
    let text = s.q(&["stats"]);
    assert!(text.stdout.contains("spool: 0 pending"), "{}", text.stdout);
}

#[test]
fn a_20_mib_hold_stays_under_64_mib_rss() {
    let s = Store::new();
    let big = s.root.parent().unwrap().join("big.eml");
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
    let mut c = Command::new("python3");
    hermetic(&mut c).arg("-c").arg(script).arg(&big).arg(BIN).args(s.args(&hold_args("BIG", &["r@x.example"])));
    let out = run(c, b"");
    let parts: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(parts.first(), Some(&"0"), "{out:?}");
    let kib: u64 = parts[2].parse().unwrap();
    assert!(kib < 64 * 1024, "a 20 MiB hold peaked at {kib} KiB");
    let id = parts[1].to_string();
    s.converge("big");
    let raw = Command::new(BIN).args(s.args(&["show", &id, "--raw"])).output().unwrap();
    assert!(raw.stdout == m, "the 20 MiB message is not byte-exact");
    eprintln!("spool: 20 MiB hold peak RSS {kib} KiB");
}
