//! strace: traced runs, trace parsing, and the one fault sweep (a fault at chosen system calls of a run).
//!
//! strace injects faults only into traced syscalls (`-e trace=none -e inject=fsync:error=EIO` silently injects
//! nothing), and `:when=N` counts per syscall name and per thread ("accounting of syscalls that are subject to
//! injection is done per syscall and per tracee"). So a sweep takes a baseline trace, lists its calls as
//! (name, n-th of that name in its thread) with [`points`], and runs one case per point with
//! [`Strace::fault`], which traces exactly that syscall and injects at that count.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::env::{require as require_program, Scratch};
use crate::gen::par_for_each;
use crate::run::{run, Input, Out, HANG};

/// The system calls a hold or an ingest writes or changes the store with, for the fault sweeps: those this binary
/// does not use (e.g. `renameat2` or `unlinkat` on this libc) are absent from a baseline trace and so skipped.
pub const WRITE_PATH_SYSCALLS: &[&str] = &[
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

/// The strace binary, after checking it can trace here. Fails the test (never skips) if strace is missing or
/// ptrace is forbidden (a container without `CAP_SYS_PTRACE`).
#[track_caller]
pub fn require() -> PathBuf {
    let strace = require_program("strace", "strace");
    let ok = Command::new(&strace)
        .args(["-f", "-qq", "-o", "/dev/null", "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "strace is installed but cannot trace here (ptrace forbidden? run the tests with CAP_SYS_PTRACE)");
    strace
}

/// What to do at a fault point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the process at that call.
    Kill,
    /// Fail that call with this errno (`"EIO"`, `"ENOSPC"`...), without running it.
    Errno(&'static str),
}

/// One fault at one call: the `nth` call named `name` in its thread.
#[derive(Clone, Debug)]
pub struct Point {
    pub name: String,
    pub nth: u32,
    pub fault: Fault,
}

impl Point {
    /// The `-e inject=` value.
    pub fn spec(&self) -> String {
        match self.fault {
            Fault::Kill => format!("{}:signal=KILL:when={}", self.name, self.nth),
            Fault::Errno(e) => format!("{}:error={e}:when={}", self.name, self.nth),
        }
    }
}

impl std::fmt::Display for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.fault {
            Fault::Kill => write!(f, "SIGKILL at {} #{}", self.name, self.nth),
            Fault::Errno(e) => write!(f, "{e} on {} #{}", self.name, self.nth),
        }
    }
}

/// A `strace -f -qq ... -- quarantine ARGS` command line under construction.
#[derive(Clone, Default)]
pub struct Strace {
    args: Vec<OsString>,
}

impl Strace {
    pub fn new() -> Strace {
        Strace::default()
    }

    /// Any strace option(s).
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Strace {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    /// `-y -o FILE`: the trace, with paths of file descriptors, goes to `file`.
    pub fn trace_to(self, file: &Path) -> Strace {
        self.arg("-y").arg("-o").arg(file)
    }

    /// `-o /dev/null`: no trace (injection only).
    pub fn quiet(self) -> Strace {
        self.arg("-o").arg("/dev/null")
    }

    /// `-e trace=A,B,...`.
    pub fn trace(self, syscalls: &[&str]) -> Strace {
        self.arg("-e").arg(format!("trace={}", syscalls.join(",")))
    }

    /// `-e inject=SPEC`.
    pub fn inject(self, spec: &str) -> Strace {
        self.arg("-e").arg(format!("inject={spec}"))
    }

    /// Exactly `point`'s fault: traces only its syscall, injects at its count, no trace output. Errors use
    /// `--seccomp-bpf` (fast); kills do not (strace 6.1 then injects errors but never delivers the signal).
    pub fn fault(self, point: &Point) -> Strace {
        let s = if matches!(point.fault, Fault::Errno(_)) { self.arg("--seccomp-bpf") } else { self };
        s.quiet().trace(&[&point.name]).inject(&point.spec())
    }

    /// `strace -f -qq OPTIONS -- BIN ARGS` with the scratch's hermetic environment.
    pub fn command<S: AsRef<OsStr>>(&self, scratch: &Scratch, args: &[S]) -> Command {
        let mut c = scratch.program(require());
        c.args(["-f", "-qq"]).args(&self.args).arg("--").arg(&scratch.bin).args(args);
        c
    }
}

/// One system call in a `strace -f` trace.
#[derive(Clone, Debug)]
pub struct Call {
    pub tid: u32,
    pub name: String,
    /// This call's number among the calls of the same name by the same thread, from 1: what `:when=` counts.
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

/// Runs `strace` (with `-y -o TRACE_FILE` added) on `quarantine ARGS` and returns the outcome, the raw trace and
/// its parsed calls.
pub fn traced<S: AsRef<OsStr>>(
    strace: Strace,
    scratch: &Scratch,
    args: &[S],
    input: Input,
    trace_file: &Path,
) -> (Out, String, Vec<Call>) {
    let out = run(strace.trace_to(trace_file).command(scratch, args), input, HANG);
    let text = fs::read_to_string(trace_file)
        .unwrap_or_else(|e| panic!("strace wrote no trace ({e}); is strace usable? {}", out.brief()));
    let calls = parse_trace(&text);
    (out, text, calls)
}

/// The fault points of a baseline trace: every distinct (name, n-th) of `calls` whose name is in `syscalls`
/// (every name if `syscalls` is empty) and that `keep` accepts, in trace order, once per fault in `faults`.
pub fn points(calls: &[Call], syscalls: &[&str], faults: &[Fault], keep: impl Fn(&Call) -> bool) -> Vec<Point> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for c in calls {
        if !(syscalls.is_empty() || syscalls.contains(&c.name.as_str())) || !keep(c) {
            continue;
        }
        if !seen.insert((c.name.clone(), c.nth)) {
            continue;
        }
        for f in faults {
            out.push(Point { name: c.name.clone(), nth: c.nth, fault: *f });
        }
    }
    out
}

/// The sweep: runs `case` once per point on `threads` threads; a case builds its command with
/// `Strace::new().fault(point)` and checks what the fault left behind.
pub fn sweep(points: &[Point], threads: usize, case: impl Fn(&Point) + Sync) {
    require();
    par_for_each(points, threads, |_, p| case(p));
}
