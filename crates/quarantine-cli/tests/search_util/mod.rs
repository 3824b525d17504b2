//! Helpers for tests/search.rs: a throw-away store, holds through the real `quarantine hold`, and runs of the real
//! binary in a hermetic environment (config /dev/null, no $QUARANTINE_STORE, TZ=UTC unless a test sets it).
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_quarantine");

#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Out {
    pub fn text(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("stdout is UTF-8")
    }

    /// Asserts exit 0 and returns stdout as text.
    pub fn ok(&self) -> String {
        assert_eq!(self.code, 0, "exit {}; stderr: {}\nstdout: {}", self.code, self.stderr, self.text());
        self.text()
    }
}

pub struct TestStore {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub scratch: PathBuf,
}

/// One message to hold.
pub struct Msg<'a> {
    pub verdict: &'a str,
    pub from: &'a str,
    pub rcpts: &'a [&'a str],
    pub scanner: Option<&'a str>,
    pub bytes: &'a [u8],
}

impl TestStore {
    pub fn new() -> TestStore {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("store");
        let scratch = dir.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        let t = TestStore { root, scratch, _dir: dir };
        t.run(&["init"]).ok();
        t
    }

    pub fn index(&self) -> PathBuf {
        self.root.join("index.sqlite")
    }

    /// `quarantine --store ROOT ARGS...` with `env` added to the hermetic environment.
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--store").arg(&self.root).args(args);
        c.env("QUARANTINE_CONFIG", "/dev/null").env_remove("QUARANTINE_STORE").env_remove("COLUMNS");
        c.env("TZ", "UTC").env("USER", "tester").env_remove("SUDO_USER");
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.run_env(args, &[], b"")
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Out {
        run(self.command(args, env), stdin)
    }

    /// Holds one message through `quarantine hold`; returns its id.
    pub fn hold(&self, m: &Msg) -> String {
        let mut args = vec!["hold", "--verdict", m.verdict, "--from", m.from];
        if let Some(s) = m.scanner {
            args.extend(["--scanner", s]);
        }
        args.push("--");
        args.extend(m.rcpts);
        let out = self.run_env(&args, &[], m.bytes);
        let id = out.ok().trim().to_string();
        assert_eq!(id.len(), 10, "hold printed {id:?}");
        id
    }

    /// Ids printed by `search --json ARGS`, in output order.
    pub fn ids(&self, args: &[&str]) -> Vec<String> {
        self.ids_env(args, &[])
    }

    pub fn ids_env(&self, args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
        let mut full = vec!["search", "--json"];
        full.extend(args);
        let out = self.run_env(&full, env, b"");
        json_lines(&out.ok()).iter().map(|v| v["id"].as_str().expect("id").to_string()).collect()
    }

    /// Runs SQL through the sqlite3 shell (installed by scripts/install-test-deps).
    pub fn sqlite(&self, sql: &str) -> Out {
        run_sqlite(&self.index(), sql)
    }

    /// The blob file of a held message.
    pub fn blob_of(&self, id: &str) -> PathBuf {
        let out = self.run(&["show", id, "--json"]).ok();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let hash = v["hash"].as_str().unwrap();
        self.root.join("blobs").join(&hash[0..2]).join(&hash[2..4]).join(hash)
    }
}

pub fn run_sqlite(db: &Path, sql: &str) -> Out {
    let mut c = Command::new("sqlite3");
    c.arg(db).arg(sql);
    run(c, b"")
}

pub fn run(mut c: Command, stdin: &[u8]) -> Out {
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut input = child.stdin.take().unwrap();
    let bytes = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&bytes);
    });
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}"))).collect()
}

/// Sorted copy, for comparing sets of ids.
pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}
