//! Helpers for the torture suite (`tests/torture.rs`): throw-away stores copied from a template, runs of the real
//! binary with a time limit (plainly, under strace, or to be killed), strace trace parsing, a fake SMTP relay,
//! a deterministic PRNG and the figures each test prints.
//!
//! Checks read the index and blobs through the `quarantine-store` library (fast enough to check thousands of
//! messages after every crash) and always compare against bytes the test kept itself; `verify --deep` runs through
//! the real binary.
#![allow(dead_code)] // each test uses its own subset

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_quarantine");

/// No single run of the binary should come near this; a hang fails the test instead of stalling CI.
pub const HANG: Duration = Duration::from_secs(120);

/// Exit code of a process killed by SIGKILL, as [`Out::code`] reports it.
pub const KILLED: i32 = 128 + 9;

/// `QUARANTINE_TORTURE=long` (scripts/torture) runs every case at full size; anything else is the quick mode
/// that `cargo test --workspace` runs.
pub fn long_mode() -> bool {
    std::env::var("QUARANTINE_TORTURE").map(|v| v == "long").unwrap_or(false)
}

/// Picks the quick or the long figure.
pub fn quick_or_long<T>(quick: T, long: T) -> T {
    if long_mode() {
        long
    } else {
        quick
    }
}

/// The seed for a test's PRNG: `QUARANTINE_TORTURE_SEED` if set, else the test's fixed default. Printed with the
/// figures so a failure reproduces.
pub fn seed(default: u64) -> u64 {
    std::env::var("QUARANTINE_TORTURE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Prints one line of figures (`torture: NAME: k=v ...`); scripts/torture collects these for docs/RELIABILITY.md.
pub fn figures(name: &str, pairs: &[(&str, u64)], started: Instant) {
    let kv: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let line = format!(
        "torture: {name}: {} mode={} secs={:.1}",
        kv.join(" "),
        if long_mode() { "long" } else { "quick" },
        started.elapsed().as_secs_f64()
    );
    eprintln!("{line}");
    if let Ok(path) = std::env::var("QUARANTINE_TORTURE_FIGURES") {
        if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// The outcome of one run. `code` is the exit status, or 128 + the signal for a killed process.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Out {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The id a successful hold printed (one line).
    pub fn id(&self) -> String {
        self.text().trim().to_string()
    }

    /// One line for an assertion message.
    pub fn brief(&self) -> String {
        format!("exit {} stdout {:?} stderr {:?}", self.code, self.text(), self.stderr)
    }
}

pub fn code_of(status: ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// What a run reads on stdin.
pub enum Input<'a> {
    Null,
    Bytes(&'a [u8]),
    /// A regular file: reads are then the same at every run, which the per-syscall sweeps rely on.
    File(&'a Path),
}

/// Spawns `c` with `input`, stdout and stderr piped.
pub fn spawn(c: &mut Command, input: &Input) -> (Child, Option<std::thread::JoinHandle<()>>) {
    match input {
        Input::Null => c.stdin(Stdio::null()),
        Input::Bytes(_) => c.stdin(Stdio::piped()),
        Input::File(p) => c.stdin(fs::File::open(p).expect("open the message file")),
    };
    let mut child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let writer = match input {
        Input::Bytes(b) => {
            let mut stdin = child.stdin.take().expect("piped stdin");
            let b = b.to_vec();
            // Write errors (the child died or stopped reading) are the exit status's story, not ours.
            Some(std::thread::spawn(move || {
                let _ = stdin.write_all(&b);
            }))
        }
        _ => None,
    };
    (child, writer)
}

/// Runs `c` to completion (killing it and failing after `limit`).
pub fn run(mut c: Command, input: Input, limit: Duration) -> Out {
    let started = Instant::now();
    let (child, writer) = spawn(&mut c, &input);
    let out = wait(child, Some(limit), None, started);
    if let Some(w) = writer {
        let _ = w.join();
    }
    out
}

/// Runs `c` and sends it SIGKILL after `after` unless it finished first.
pub fn run_killed_after(mut c: Command, input: Input, after: Duration) -> Out {
    let started = Instant::now();
    let (child, writer) = spawn(&mut c, &input);
    let out = wait(child, Some(HANG), Some(after).filter(|a| *a < HANG), started);
    if let Some(w) = writer {
        let _ = w.join();
    }
    out
}

/// Waits for `child`, draining its pipes on threads; kills it at `kill_at` (a test's SIGKILL), and at `limit`
/// (a hang: fails the test).
pub fn wait(mut child: Child, limit: Option<Duration>, kill_at: Option<Duration>, started: Instant) -> Out {
    // A pipe the caller closed on purpose (a test of a vanished reader) reads as empty.
    let so = child.stdout.take();
    let se = child.stderr.take();
    let so = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(mut p) = so {
            let _ = p.read_to_end(&mut v);
        }
        v
    });
    let se = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(mut p) = se {
            let _ = p.read_to_end(&mut v);
        }
        v
    });
    let mut killed = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        let t = started.elapsed();
        if let Some(k) = kill_at {
            if !killed && t >= k {
                let _ = child.kill();
                killed = true;
            }
        }
        if let Some(l) = limit {
            if t > l {
                let _ = child.kill();
                let _ = child.wait();
                panic!("quarantine still running after {l:?}; killed it");
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    };
    Out {
        code: code_of(status),
        stdout: so.join().unwrap(),
        stderr: String::from_utf8_lossy(&se.join().unwrap()).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// `quarantine ARGS` with a hermetic environment: no config file, no `$QUARANTINE_STORE`.
pub fn cmd<S: AsRef<OsStr>>(args: &[S]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).env("QUARANTINE_CONFIG", "/dev/null").env_remove("QUARANTINE_STORE");
    c
}

/// `strace -f -qq -o /dev/null STRACE_ARGS -- quarantine ARGS`, hermetic like [`cmd`].
pub fn strace<S: AsRef<OsStr>, T: AsRef<OsStr>>(strace_args: &[S], args: &[T]) -> Command {
    let mut c = Command::new("strace");
    c.args(["-f", "-qq"])
        .args(strace_args)
        .arg("--")
        .arg(BIN)
        .args(args)
        .env("QUARANTINE_CONFIG", "/dev/null")
        .env_remove("QUARANTINE_STORE");
    c
}

/// True if strace can trace here (ptrace may be forbidden in some containers).
pub fn strace_works() -> bool {
    Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A store in its own temporary directory; `work` beside it holds message files and traces.
pub struct Store {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub work: PathBuf,
}

impl Store {
    pub fn new() -> Store {
        Store::new_in(None)
    }

    /// A store under `parent` (e.g. a small mounted filesystem), or a fresh temp dir.
    pub fn new_in(parent: Option<&Path>) -> Store {
        let dir = match parent {
            Some(p) => tempfile::tempdir_in(p).expect("tempdir"),
            None => tempfile::tempdir().expect("tempdir"),
        };
        let root = dir.path().join("store");
        let work = dir.path().join("work");
        fs::create_dir(&work).unwrap();
        let s = Store { dir, root, work };
        let out = s.q(&["init"]);
        assert_eq!(out.code, 0, "init: {}", out.brief());
        s
    }

    /// A byte-for-byte copy of `template`'s store (modes kept), so every case of a sweep starts from the same
    /// state. The template must be at rest (no process using it).
    pub fn copy_of(template: &Store) -> Store {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("store");
        let work = dir.path().join("work");
        fs::create_dir(&work).unwrap();
        copy_tree(&template.root, &root);
        Store { dir, root, work }
    }

    pub fn args<'a>(&'a self, rest: &'a [&'a str]) -> Vec<&'a OsStr> {
        let mut v: Vec<&OsStr> = vec![OsStr::new("--store"), self.root.as_os_str()];
        v.extend(rest.iter().map(OsStr::new));
        v
    }

    pub fn cmd(&self, rest: &[&str]) -> Command {
        let rest: Vec<&OsStr> = rest.iter().map(OsStr::new).collect();
        let mut v: Vec<&OsStr> = vec![OsStr::new("--store"), self.root.as_os_str()];
        v.extend(rest);
        cmd(&v)
    }

    /// Runs a command with an empty stdin.
    pub fn q(&self, rest: &[&str]) -> Out {
        run(self.cmd(rest), Input::Null, HANG)
    }

    /// `hold` with `msg` on stdin and [`hold_args`].
    pub fn hold(&self, msg: &[u8], verdict: &str, queue_id: Option<&str>) -> Out {
        let a = hold_args(verdict, queue_id);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        run(self.cmd(&a), Input::Bytes(msg), HANG)
    }

    /// Holds `msg` and returns its id, asserting success.
    pub fn hold_ok(&self, msg: &[u8], verdict: &str, queue_id: Option<&str>) -> String {
        let out = self.hold(msg, verdict, queue_id);
        assert_eq!(out.code, 0, "hold: {}", out.brief());
        out.id()
    }

    /// Writes `msg` to a file under `work/` (for stdin from a regular file) and returns its path.
    pub fn message_file(&self, name: &str, msg: &[u8]) -> PathBuf {
        let p = self.work.join(name);
        fs::write(&p, msg).unwrap();
        p
    }

    /// `verify --deep` through the real binary: exit 0 means no live row's blob is missing or corrupt (orphans
    /// and temp files are allowed).
    pub fn assert_verify_clean(&self, what: &str) {
        let out = self.q(&["verify", "--deep"]);
        assert_eq!(out.code, 0, "{what}: verify --deep: {}", out.brief());
    }

    /// Opens the store through the library (no other process may be writing).
    pub fn open(&self) -> quarantine_store::Store {
        let mut s = quarantine_store::Store::open(&self.root, Duration::from_secs(30)).expect("open the store");
        // hold writes the spool (DESIGN section 4): index what it acknowledged before looking at rows.
        // (It fails on a full filesystem; the rows already there are what the caller looks at then.)
        let _ = s.ingest(&quarantine_store::ingest::IngestOptions::drain("torture".into()));
        s
    }

    /// One integer from the index.
    pub fn count(&self, sql: &str) -> u64 {
        let s = self.open();
        s.conn().query_row(sql, [], |r| r.get::<_, i64>(0)).expect(sql) as u64
    }

    /// Ids of the messages (live or tombstoned) with this queue id.
    pub fn ids_for_queue_id(&self, qid: &str) -> Vec<(String, bool)> {
        let s = self.open();
        let mut stmt = s
            .conn()
            .prepare("SELECT id, purged_us IS NOT NULL FROM messages WHERE queue_id = ?1 ORDER BY rowid")
            .unwrap();
        stmt.query_map([qid], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap()
    }

    /// Asserts message `id` is live and its original is byte-exact `want` (read through the library, which
    /// re-hashes the blob).
    pub fn assert_intact(&self, id: &str, want: &[u8], what: &str) {
        let s = self.open();
        assert_intact_in(&s, id, want, what);
    }

    pub fn blob_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk_files(&self.root.join("blobs"), &mut out);
        out
    }

    pub fn tmp_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk_files(&self.root.join("tmp"), &mut out);
        out
    }
}

pub fn assert_intact_in(s: &quarantine_store::Store, id: &str, want: &[u8], what: &str) {
    let rec = s.message(id).unwrap_or_else(|e| panic!("{what}: message {id} is gone: {e}"));
    assert!(rec.purged_at.is_none(), "{what}: message {id} was purged");
    let got = s.original(&rec).unwrap_or_else(|e| panic!("{what}: message {id} unreadable: {e}"));
    assert!(got == want, "{what}: message {id}: {} bytes back, {} held, not byte-exact", got.len(), want.len());
}

/// The arguments of a hold with a fixed envelope.
pub fn hold_args(verdict: &str, queue_id: Option<&str>) -> Vec<String> {
    let mut a: Vec<String> =
        vec!["hold".into(), "--verdict".into(), verdict.into(), "--scanner".into(), "torture".into()];
    if let Some(q) = queue_id {
        a.extend(["--queue-id".into(), q.into()]);
    }
    a.extend(["--from".into(), "sender@example.org".into(), "--".into(), "rcpt@example.net".into()]);
    a
}

pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir(to).unwrap();
    fs::set_permissions(to, fs::metadata(from).unwrap().permissions()).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        let dst = to.join(e.file_name());
        if ft.is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            fs::copy(e.path(), &dst).unwrap();
        }
    }
}

pub fn walk_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk_files(&p, out)
        } else {
            out.push(p)
        }
    }
    out.sort();
}

/// A message with a recognisable header and `body_len` bytes of pseudo-random text.
pub fn message(tag: &str, rng: &mut XorShift, body_len: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Torture <torture@example.org>\r\nTo: rcpt@example.net\r\nSubject: {tag}\r\nMessage-ID: <{tag}@torture.example>\r\n\r\n"
    )
    .into_bytes();
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut col = 0;
    for _ in 0..body_len {
        if col == 76 {
            m.extend_from_slice(b"\r\n");
            col = 0;
        } else {
            m.push(ALPHABET[rng.below(64) as usize]);
            col += 1;
        }
    }
    m.extend_from_slice(b"\r\n");
    m
}

#[path = "../common/xorshift.rs"]
mod xorshift;
pub use xorshift::XorShift;

/// Runs `f` over `items` on `threads` threads (a work queue), so sweeps use both cores.
pub fn par_for_each<T: Sync>(items: &[T], threads: usize, f: impl Fn(usize, &T) + Sync) {
    let next = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                if i >= items.len() {
                    break;
                }
                f(i, &items[i]);
            });
        }
    });
}

/// Threads for the sweeps: the machine's cores (2 here), at most 4.
pub fn threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).min(4)
}

// ---------------------------------------------------------------------------------------------------------------
// strace traces

/// One system call in a `strace -f -y` trace.
#[derive(Clone, Debug)]
pub struct Call {
    pub tid: u32,
    pub name: String,
    /// This call's number among the calls of the same name by the same thread, from 1: what `:when=` counts
    /// ("accounting of syscalls that are subject to injection is done per syscall and per tracee").
    pub nth: u32,
    /// The line, for messages and path filters.
    pub line: String,
}

/// Parses a `strace -f` trace (lines `TID name(args...`; `<... name resumed>`, signals and exits skipped).
pub fn parse_trace(text: &str) -> Vec<Call> {
    let mut counts: std::collections::HashMap<(u32, String), u32> = std::collections::HashMap::new();
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
        out.push(Call { tid, name: name.to_string(), nth: *n, line: line.to_string() });
    }
    out
}

/// Traces one run of `args` with `input`, returning its outcome and calls.
pub fn trace_run(args: &[&OsStr], input: Input, trace_file: &Path) -> (Out, Vec<Call>) {
    let strace_args: Vec<&OsStr> = vec![OsStr::new("-y"), OsStr::new("-o"), trace_file.as_os_str()];
    let out = run(strace(&strace_args, args), input, HANG);
    let text = fs::read_to_string(trace_file).expect("strace wrote no trace");
    (out, parse_trace(&text))
}

// ---------------------------------------------------------------------------------------------------------------
// A fake SMTP relay on loopback

/// How the fake relay behaves after it has read a message's final `.`.
#[derive(Clone, Copy, Debug)]
pub enum AfterData {
    /// Wait, then answer 250.
    Accept(Duration),
    /// Close the connection without answering: the sender cannot know whether the message was taken.
    Drop,
}

/// A minimal SMTP server on 127.0.0.1 that records every message it is sent. Stops when dropped.
pub struct FakeRelay {
    pub port: u16,
    pub received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Clone, Debug)]
pub struct Received {
    pub from: String,
    pub rcpts: Vec<String>,
    /// The DATA payload as received, dot-stuffing undone and terminator removed.
    pub data: Vec<u8>,
    /// True once the relay answered 250 (false for [`AfterData::Drop`] and for a sender killed while we waited).
    pub accepted: bool,
}

impl FakeRelay {
    pub fn start(after: AfterData) -> FakeRelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, st) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            // Bounded: a relay left running by a failed test stops by itself.
            while !st.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(3600) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let r = r.clone();
                        std::thread::spawn(move || {
                            let _ = serve(sock, after, &r);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        FakeRelay { port, received, stop, thread: Some(thread) }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for FakeRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(sock: TcpStream, after: AfterData, received: &Mutex<Vec<Received>>) -> std::io::Result<()> {
    sock.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut w = sock.try_clone()?;
    let mut r = BufReader::new(sock);
    w.write_all(b"220 fake.example ESMTP torture relay\r\n")?;
    let (mut from, mut rcpts) = (String::new(), Vec::new());
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        let verb = text.split([' ', ':']).next().unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => w.write_all(b"250-fake.example\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 PIPELINING\r\n")?,
            "HELO" => w.write_all(b"250 fake.example\r\n")?,
            "MAIL" => {
                from = text.clone();
                rcpts.clear();
                w.write_all(b"250 2.1.0 Ok\r\n")?
            }
            "RCPT" => {
                rcpts.push(text.clone());
                w.write_all(b"250 2.1.5 Ok\r\n")?
            }
            "DATA" => {
                w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")?;
                let mut data = Vec::new();
                loop {
                    line.clear();
                    if r.read_until(b'\n', &mut line)? == 0 {
                        return Ok(());
                    }
                    if line == b".\r\n" {
                        break;
                    }
                    let l = line.strip_prefix(b".").unwrap_or(&line);
                    data.extend_from_slice(l);
                }
                let idx = {
                    let mut g = received.lock().unwrap();
                    g.push(Received { from: from.clone(), rcpts: rcpts.clone(), data, accepted: false });
                    g.len() - 1
                };
                match after {
                    AfterData::Drop => return Ok(()),
                    AfterData::Accept(d) => {
                        std::thread::sleep(d);
                        w.write_all(format!("250 2.0.0 Ok: queued as FAKE{idx}\r\n").as_bytes())?;
                        received.lock().unwrap()[idx].accepted = true;
                    }
                }
            }
            "QUIT" => {
                w.write_all(b"221 2.0.0 Bye\r\n")?;
                return Ok(());
            }
            _ => w.write_all(b"250 2.0.0 Ok\r\n")?,
        }
    }
}
