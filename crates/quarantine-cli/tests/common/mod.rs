//! Helpers for the integration tests: a throw-away store per test, and runners for the real `quarantine` binary
//! (plainly, with a time limit, or under strace fault injection). Every run is hermetic: the config is /dev/null
//! (an empty TOML file) and `$QUARANTINE_STORE` is unset, so nothing on the host leaks in.
#![allow(dead_code)] // each test file uses its own subset

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_quarantine");

/// No run of the binary in these tests should get anywhere near this; a hang fails the test instead of CI.
pub const HANG: Duration = Duration::from_secs(120);

/// The outcome of one run. `code` is the exit status, or 128 + the signal number for a killed process.
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
}

fn code_of(status: ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// `quarantine` with a hermetic environment and the given arguments.
pub fn cmd<S: AsRef<OsStr>>(args: &[S]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).env("QUARANTINE_CONFIG", "/dev/null").env_remove("QUARANTINE_STORE");
    c
}

/// Runs `c` with `input` on stdin (written from a thread, so a child that stops reading cannot block us), and
/// kills it if it is still running after `limit`.
pub fn run(mut c: Command, input: &[u8], limit: Duration) -> Out {
    let started = Instant::now();
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let writer = feed(&mut child, input);
    let out = wait_limited(child, limit, started);
    let _ = writer.join();
    out
}

/// Starts writing `input` to the child's stdin on a thread, closing it at the end. Write errors (the child died or
/// stopped reading) are ignored: the exit status tells the story.
pub fn feed(child: &mut Child, input: &[u8]) -> std::thread::JoinHandle<()> {
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    })
}

/// Waits for `child` (stdout and stderr piped), killing it and failing the test after `limit`.
pub fn wait_limited(mut child: Child, limit: Duration, started: Instant) -> Out {
    // Drain the pipes on threads so a chatty child never blocks on a full pipe while we poll.
    let mut so = child.stdout.take().expect("piped stdout");
    let mut se = child.stderr.take().expect("piped stderr");
    let so = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut so, &mut v).map(|_| v).unwrap_or_default()
    });
    let se = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut se, &mut v).map(|_| v).unwrap_or_default()
    });
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("quarantine still running after {limit:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    Out {
        code: code_of(status),
        stdout: so.join().unwrap(),
        stderr: String::from_utf8_lossy(&se.join().unwrap()).into_owned(),
        elapsed,
    }
}

/// A store in its own temporary directory, created with `quarantine --store DIR init`.
pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
}

/// The envelope most tests hold with.
pub const ENVELOPE: &[&str] =
    &["--verdict", "PMX:VIRUS", "--scanner", "pmx", "--from", "sender@example.org", "--", "rcpt@example.net"];

impl TestStore {
    pub fn new() -> TestStore {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("store");
        let ts = TestStore { dir, root };
        let out = ts.q(&["init"]);
        assert_eq!(out.code, 0, "init failed: {out:?}");
        ts
    }

    /// `quarantine --store ROOT ARGS...` as a Command, for callers that need to spawn it themselves.
    pub fn cmd<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = cmd(&[OsStr::new("--store"), self.root.as_os_str()]);
        c.args(args);
        c
    }

    /// Runs `quarantine --store ROOT ARGS...` with an empty stdin.
    pub fn q<S: AsRef<OsStr>>(&self, args: &[S]) -> Out {
        run(self.cmd(args), b"", HANG)
    }

    /// `quarantine hold ARGS...` with `msg` on stdin.
    pub fn hold(&self, msg: &[u8], args: &[&str]) -> Out {
        let mut full = vec!["hold"];
        full.extend_from_slice(args);
        run(self.cmd(&full), msg, HANG)
    }

    /// Holds `msg` with [`ENVELOPE`]; asserts success and returns the printed id.
    pub fn hold_ok(&self, msg: &[u8]) -> String {
        self.hold_ok_with(msg, ENVELOPE)
    }

    pub fn hold_ok_with(&self, msg: &[u8], args: &[&str]) -> String {
        let out = self.hold(msg, args);
        assert_eq!(out.code, 0, "hold failed: {out:?}");
        assert!(out.stderr.is_empty(), "hold succeeded but wrote to stderr: {:?}", out.stderr);
        let id = out.text();
        let id = id.strip_suffix('\n').expect("the id ends with a newline");
        assert!(is_id(id), "hold printed {id:?}, not an id");
        id.to_string()
    }

    /// `show ID --json`, parsed.
    pub fn json(&self, id: &str) -> serde_json::Value {
        let out = self.q(&["show", id, "--json"]);
        assert_eq!(out.code, 0, "show --json {id}: {out:?}");
        serde_json::from_slice(&out.stdout).expect("show --json prints one JSON object")
    }

    /// `show ID --raw`, asserting success.
    pub fn raw(&self, id: &str) -> Vec<u8> {
        let out = self.q(&["show", id, "--raw"]);
        assert_eq!(out.code, 0, "show --raw {id}: exit {} {}", out.code, out.stderr);
        out.stdout
    }

    /// Asserts `verify --deep` exits 0.
    pub fn verify_deep_clean(&self) {
        let out = self.q(&["verify", "--deep"]);
        assert_eq!(out.code, 0, "verify --deep: {}{}", out.text(), out.stderr);
    }

    /// One number from the index, through the sqlite3 command-line shell (not through the code under test).
    pub fn sql_count(&self, sql: &str) -> u64 {
        // hold writes only the spool (DESIGN section 4): index what it acknowledged before counting rows.
        let ingest = self.q(&["ingest"]);
        assert_eq!(ingest.code, 0, "ingest before counting: {ingest:?}");
        let out = Command::new("sqlite3").arg(self.root.join("index.sqlite")).arg(sql).output().expect("run sqlite3");
        assert!(out.status.success(), "sqlite3 {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("a count")
    }

    pub fn messages(&self) -> u64 {
        self.sql_count("SELECT count(*) FROM messages")
    }

    /// Every regular file under `blobs/`.
    pub fn blob_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.root.join("blobs"), &mut |p, is_dir| {
            if !is_dir {
                out.push(p.to_path_buf())
            }
        });
        out.sort();
        out
    }

    pub fn blob_path(&self, hash: &str) -> PathBuf {
        blob_path(&self.root, hash)
    }
}

/// Where DESIGN section 2 says the blob of `hash` lives: `STORE/blobs/ab/cd/<hash>`.
pub fn blob_path(store: &Path, hash: &str) -> PathBuf {
    store.join("blobs").join(&hash[0..2]).join(&hash[2..4]).join(hash)
}

/// Calls `f(path, is_dir)` for everything below `dir` (not `dir` itself).
pub fn walk(dir: &Path, f: &mut dyn FnMut(&Path, bool)) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        let is_dir = std::fs::symlink_metadata(&p).unwrap().is_dir();
        f(&p, is_dir);
        if is_dir {
            walk(&p, f);
        }
    }
}

/// A command line split on whitespace, for readable test tables. `{sp}`, `{empty}` and `{crlf}` inside a word
/// stand for a space, an empty argument and CR LF.
pub fn argv(line: &str) -> Vec<&str> {
    line.split_whitespace()
        .map(|w| match w {
            "{empty}" => "",
            w if w.contains('{') => Box::leak(w.replace("{sp}", " ").replace("{crlf}", "\r\n").into_boxed_str()),
            w => w,
        })
        .collect()
}

/// 10 characters of Crockford base32, as `hold` prints them.
pub fn is_id(s: &str) -> bool {
    s.len() == 10 && s.bytes().all(|b| b.is_ascii_digit() || (b.is_ascii_uppercase() && !b"ILOU".contains(&b)))
}

/// Asserts the MTA contract for a failed hold: exit 75, nothing on stdout, exactly one line on stderr.
pub fn assert_tempfail(out: &Out, what: &str) {
    assert_eq!(out.code, 75, "{what}: expected exit 75, got {out:?}");
    assert!(out.stdout.is_empty(), "{what}: a failed hold printed {:?}", out.text());
    assert!(
        out.stderr.ends_with('\n') && out.stderr.matches('\n').count() == 1 && out.stderr.trim().len() > 10,
        "{what}: stderr must be exactly one line, got {:?}",
        out.stderr
    );
}

/// `strace -f -qq STRACE_ARGS -- quarantine ARGS...`, hermetic like [`cmd`]. Note that strace injects faults only
/// into traced syscalls: `-e trace=none -e inject=fsync:error=EIO` silently injects nothing, so callers trace the
/// syscalls they inject into and send the trace to `-o /dev/null`.
pub fn strace_cmd<S: AsRef<OsStr>, T: AsRef<OsStr>>(strace_args: &[S], args: &[T]) -> Command {
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

#[path = "xorshift.rs"]
mod xorshift;
pub use xorshift::XorShift;
