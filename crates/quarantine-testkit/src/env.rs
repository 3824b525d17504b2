//! The hermetic environment every spawned `quarantine` gets, and the check for peer programs.
//!
//! A run never sees the caller's variables or `/etc/quarantine/config.toml`: [`Scratch::hermetic`] clears the
//! environment and sets only a minimal `PATH` (with `/usr/sbin`, where Postfix's tools live), `HOME` and `TMPDIR`
//! inside the scratch directory, `QUARANTINE_CONFIG` to an empty scratch file, `USER=tester` (the actor tests
//! expect), `TZ=UTC` and `LC_ALL=C.UTF-8`. A test adds what it needs on top (`c.env(...)`).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::run::{run, Input, Out, HANG};

/// The PATH of every hermetic run.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The actor (`$USER`) of every hermetic run.
pub const USER: &str = "tester";

/// Finds `program` on [`PATH`] and returns its path, or fails the test naming the Debian `package` that provides
/// it (`scripts/install-test-deps` installs them all). Tests never skip for a missing peer.
#[track_caller]
pub fn require(program: &str, package: &str) -> PathBuf {
    for dir in PATH.split(':') {
        let p = Path::new(dir).join(program);
        if fs::metadata(&p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false) {
            return p;
        }
    }
    panic!("this test needs `{program}`: install the Debian package `{package}` (scripts/install-test-deps does)");
}

/// True when the tests run as root.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// A temporary directory for one test: `home/`, `tmp/`, `work/` (the test's own files) and an empty
/// `config.toml`, plus the path of the `quarantine` binary under test. Removed on drop.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
}

impl Scratch {
    /// A scratch directory under the system temp dir.
    pub fn new(bin: impl AsRef<Path>) -> Scratch {
        Scratch::new_in(bin, None)
    }

    /// A scratch directory under `parent` (e.g. a small mounted filesystem), or the system temp dir.
    pub fn new_in(bin: impl AsRef<Path>, parent: Option<&Path>) -> Scratch {
        let dir = match parent {
            Some(p) => tempfile::tempdir_in(p),
            None => tempfile::tempdir(),
        }
        .expect("create a scratch directory");
        for d in ["home", "tmp", "work"] {
            fs::create_dir(dir.path().join(d)).unwrap();
        }
        // QUARANTINE_TEST_INDEX=postgres: every store this scratch makes uses a fresh shared database.
        let config = if crate::postgres::enabled() {
            format!("index = \"{}\"\n", crate::postgres::database())
        } else {
            String::new()
        };
        fs::write(dir.path().join("config.toml"), config).unwrap();
        Scratch { dir, bin: bin.as_ref().to_path_buf() }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `work/`, for the test's own files (messages, traces, config files).
    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// The empty config file every run points `QUARANTINE_CONFIG` at.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// Writes `bytes` to `work/NAME` and returns its path.
    pub fn file(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.work().join(name);
        fs::write(&p, bytes).unwrap();
        p
    }

    /// Clears `c`'s environment and sets the hermetic one (see the module docs).
    pub fn hermetic<'c>(&self, c: &'c mut Command) -> &'c mut Command {
        c.env_clear()
            .env("PATH", PATH)
            .env("HOME", self.dir.path().join("home"))
            .env("TMPDIR", self.dir.path().join("tmp"))
            .env("QUARANTINE_CONFIG", self.config())
            .env("USER", USER)
            .env("TZ", "UTC")
            .env("LC_ALL", "C.UTF-8")
    }

    /// Any program with the hermetic environment (a wrapper such as `faketime`, `setpriv` or `strace`).
    pub fn program(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new(program);
        self.hermetic(&mut c);
        c
    }

    /// `quarantine ARGS` with the hermetic environment.
    pub fn cmd<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = self.program(&self.bin);
        c.args(args);
        c
    }

    /// Runs `quarantine ARGS` with `input`, failing the test if it runs past [`HANG`].
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S], input: Input) -> Out {
        run(self.cmd(args), input, HANG)
    }

    /// Runs `quarantine ARGS` with an empty stdin.
    pub fn q<S: AsRef<OsStr>>(&self, args: &[S]) -> Out {
        self.run(args, Input::Null)
    }

    /// Runs `quarantine ARGS` with `input` and a time limit of `limit`.
    pub fn run_limited<S: AsRef<OsStr>>(&self, args: &[S], input: Input, limit: Duration) -> Out {
        run(self.cmd(args), input, limit)
    }
}

/// Fails the test unless it runs as root (a private Postfix instance, or switching to another account, needs
/// it); CI's `scripts/test` runs as root. Tests never skip.
#[track_caller]
pub fn require_root(why: &str) {
    assert!(is_root(), "this test needs root ({why}): run it as root, as CI's scripts/test does");
}
