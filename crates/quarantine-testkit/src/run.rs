//! Running a process with a time limit and reading what it did.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// No single run of a process in the tests should come near this; a hang fails the test instead of stalling CI.
pub const HANG: Duration = Duration::from_secs(120);

/// Exit code of a process killed by SIGKILL, as [`Out::code`] reports it.
pub const KILLED: i32 = 128 + 9;

/// The outcome of one run. `code` is the exit status, or 128 + the signal number for a killed process.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Out {
    /// stdout as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stdout trimmed: the id a successful hold printed.
    pub fn id(&self) -> String {
        self.text().trim().to_string()
    }

    /// One line for an assertion message.
    pub fn brief(&self) -> String {
        format!("exit {} stdout {:?} stderr {:?}", self.code, self.text(), self.stderr)
    }

    /// Everything, for a failing assertion.
    pub fn all(&self) -> String {
        format!("exit {}\n--- stdout\n{}--- stderr\n{}", self.code, self.text(), self.stderr)
    }

    /// True on exit 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Asserts exit 0 (printing stdout and stderr otherwise) and returns stdout as text.
    #[track_caller]
    pub fn ok(&self) -> String {
        self.code_is(0, "");
        String::from_utf8(self.stdout.clone()).expect("stdout is UTF-8")
    }

    /// Asserts the exit code, printing `what`, stdout and stderr otherwise. Returns `self` for chaining.
    #[track_caller]
    pub fn code_is(&self, want: i32, what: &str) -> &Out {
        assert_eq!(self.code, want, "{what}: expected exit {want}\n{}", self.all());
        self
    }
}

/// The exit code of `status`, or 128 + the signal that ended it.
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

/// The command line of `c`, for messages.
pub fn describe(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Spawns `c` with `input`, stdout and stderr piped; the returned thread writes the input (write errors, from a
/// child that died or stopped reading, are the exit status's story).
pub fn spawn(c: &mut Command, input: &Input) -> (Child, Option<JoinHandle<()>>) {
    match input {
        Input::Null => c.stdin(Stdio::null()),
        Input::Bytes(_) => c.stdin(Stdio::piped()),
        Input::File(p) => c.stdin(fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()))),
    };
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", describe(c)));
    let writer = match input {
        Input::Bytes(b) => {
            let stdin = child.stdin.take().expect("piped stdin");
            Some(feed(stdin, b))
        }
        _ => None,
    };
    (child, writer)
}

/// Writes `bytes` to `w` on a thread and closes it.
pub fn feed(mut w: impl Write + Send + 'static, bytes: &[u8]) -> JoinHandle<()> {
    let b = bytes.to_vec();
    std::thread::spawn(move || {
        let _ = w.write_all(&b);
    })
}

/// Runs `c` to completion, killing it and failing the test (naming the command) after `limit`.
pub fn run(mut c: Command, input: Input, limit: Duration) -> Out {
    let what = describe(&c);
    let started = Instant::now();
    let (child, writer) = spawn(&mut c, &input);
    let out = wait(child, &what, Some(limit), None, started);
    if let Some(w) = writer {
        let _ = w.join();
    }
    out
}

/// Runs `c` and sends it SIGKILL after `after` unless it finished first ([`HANG`] still applies).
pub fn run_killed_after(mut c: Command, input: Input, after: Duration) -> Out {
    let what = describe(&c);
    let started = Instant::now();
    let (child, writer) = spawn(&mut c, &input);
    let out = wait(child, &what, Some(HANG), Some(after).filter(|a| *a < HANG), started);
    if let Some(w) = writer {
        let _ = w.join();
    }
    out
}

/// Waits for a spawned child (stdout and stderr piped, or taken by the caller on purpose: a missing pipe reads as
/// empty), draining its pipes on threads. Kills it at `kill_at` (a test's SIGKILL) and at `limit` (a hang: fails
/// the test, naming `what`).
pub fn wait(mut child: Child, what: &str, limit: Option<Duration>, kill_at: Option<Duration>, started: Instant) -> Out {
    let so = drain(child.stdout.take());
    let se = drain(child.stderr.take());
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
                panic!("`{what}` still running after {l:?}; killed it");
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

/// [`wait`] with [`HANG`] as the limit, for a child the caller spawned itself.
pub fn finish(child: Child, what: &str, started: Instant) -> Out {
    wait(child, what, Some(HANG), None, started)
}

fn drain(p: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(mut p) = p {
            let _ = p.read_to_end(&mut v);
        }
        v
    })
}

/// Runs a helper program (not the binary under test) to completion with [`HANG`] as the limit, asserting exit 0;
/// returns stdout.
#[track_caller]
pub fn run_ok(c: Command) -> String {
    let what = describe(&c);
    let out = run(c, Input::Null, HANG);
    assert_eq!(out.code, 0, "`{what}` failed\n{}", out.all());
    out.text()
}

/// Polls `ok` until it holds, failing the test after `limit`.
#[track_caller]
pub fn wait_for(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
