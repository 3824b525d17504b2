//! A private PostgreSQL 15 server for the shared-index tests: one per test binary, started on first use with
//! `initdb` + `pg_ctl` as the `postgres` user (initdb refuses root) in a directory under `/var/tmp/pg/`, listening on
//! a unix socket only, trusting local connections. Each test gets a fresh database ([`database`]).
//!
//! With `QUARANTINE_TEST_INDEX=postgres` in the environment every [`crate::store::Store`] is made with
//! `index = CONNINFO` in its config, so the same CLI tests run against PostgreSQL (scripts/test does this for the
//! search and release modules).
//!
//! The server outlives no test binary: a watcher process stops it (`pg_ctl stop -m immediate`) and removes its
//! directory once the test binary's process is gone, however it ended.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Where Debian's `postgresql-15` puts the server binaries (not on PATH).
pub const BIN: &str = "/usr/lib/postgresql/15/bin";

/// True when this test binary runs its store tests against PostgreSQL.
pub fn enabled() -> bool {
    std::env::var("QUARANTINE_TEST_INDEX").is_ok_and(|v| v == "postgres")
}

/// The running server of this test binary.
pub struct Server {
    pub dir: PathBuf,
    pub socket: PathBuf,
    lock: Mutex<()>,
}

/// The path of PostgreSQL's program `name` (psql, pg_ctl, ...), for a test that drives one itself.
pub fn tool_path(name: &str) -> PathBuf {
    tool(name)
}

fn tool(name: &str) -> PathBuf {
    let p = Path::new(BIN).join(name);
    assert!(
        p.is_file(),
        "this test needs PostgreSQL 15's `{name}` in {BIN}: install the Debian packages `postgresql-15` and \
         `postgresql-contrib-15` (scripts/install-test-deps does)"
    );
    p
}

fn as_postgres(program: &Path) -> Command {
    let mut c = Command::new(crate::env::require("runuser", "util-linux"));
    c.args(["-u", "postgres", "--"]).arg(program).stdin(Stdio::null());
    c
}

fn ok(c: &mut Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The server, started on the first call.
pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(Server::start)
}

impl Server {
    /// A server of its own, for a test that stops and starts it (an outage must not hit the other tests).
    pub fn private() -> Server {
        Server::start()
    }

    fn start() -> Server {
        crate::env::require_root("PostgreSQL runs as the `postgres` user, which needs root to switch to");
        let initdb = tool("initdb");
        let base = Path::new("/var/tmp/pg");
        fs::create_dir_all(base).unwrap();
        let dir = tempfile::Builder::new().prefix("test-").tempdir_in(base).unwrap().keep();
        let socket = dir.join("sock");
        fs::create_dir(&socket).unwrap();
        ok(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir), "chown the server directory");
        ok(
            as_postgres(&initdb).arg("-D").arg(dir.join("data")).args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]),
            "initdb",
        );
        let s = Server { dir, socket, lock: Mutex::new(()) };
        s.watch(std::process::id());
        s.start_server();
        s
    }

    /// Starts the (stopped) server and waits until it accepts connections (`pg_ctl -w`).
    pub fn start_server(&self) {
        let opts = format!(
            "-k {} -c listen_addresses='' -c fsync=off -c max_connections=200 -c shared_buffers=16MB",
            self.socket.display()
        );
        ok(
            as_postgres(&tool("pg_ctl"))
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-w", "-t", "120", "-l"])
                .arg(self.dir.join("log"))
                .args(["-o", &opts, "start"])
                .stdout(Stdio::null()),
            "pg_ctl start",
        );
    }

    /// Stops the server at once (an outage: `-m immediate`, as a crash would).
    pub fn stop_server(&self) {
        ok(
            as_postgres(&tool("pg_ctl"))
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-w", "-m", "immediate", "stop"])
                .stdout(Stdio::null()),
            "pg_ctl stop",
        );
    }

    /// The watcher: once `pid` is gone, stop the server and remove its directory.
    fn watch(&self, pid: u32) {
        // Detached (the outer shell exits at once), so it survives this process and is reaped by init.
        let script = format!(
            "(while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             runuser -u postgres -- {BIN}/pg_ctl -D '{d}/data' -m immediate stop >/dev/null 2>&1; rm -rf '{d}') >/dev/null 2>&1 &",
            d = self.dir.display()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("start the PostgreSQL watcher");
    }

    /// The conninfo of database `db` on this server.
    pub fn conninfo(&self, db: &str) -> String {
        format!("host={} user=postgres dbname={db}", self.socket.display())
    }

    /// A new, empty database; returns its conninfo.
    pub fn create_database(&self) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let name = format!("t{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        ok(Command::new(tool("createdb")).arg("-h").arg(&self.socket).args(["-U", "postgres", &name]), "createdb");
        self.conninfo(&name)
    }

    /// Runs `sql` with psql on database `conninfo`; returns its unaligned output.
    pub fn psql(&self, conninfo: &str, sql: &str) -> String {
        let out = Command::new(tool("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

/// A new database on the server of `conninfo` with the same contents as that database (`CREATE DATABASE ...
/// TEMPLATE`: no session may be connected to it meanwhile, so the store using it must be at rest); returns its
/// conninfo. For [`crate::store::Store::copy_of`]: every case of a sweep starts from the same index.
pub fn clone_database(conninfo: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let (prefix, template) = conninfo.rsplit_once("dbname=").expect("a conninfo ending with dbname=NAME");
    assert!(!template.contains(' '), "dbname= is the conninfo's last field: {conninfo}");
    let name = format!("{template}_c{}", N.fetch_add(1, Ordering::Relaxed));
    let out = Command::new(tool("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &format!("{prefix}dbname=postgres")])
        .args(["-c", &format!("CREATE DATABASE {name} TEMPLATE {template}")])
        .output()
        .expect("run psql");
    assert!(out.status.success(), "cloning database {template}: {}", String::from_utf8_lossy(&out.stderr));
    format!("{prefix}dbname={name}")
}

/// A fresh database on this test binary's server; returns its conninfo (for `index = "..."`).
pub fn database() -> String {
    server().create_database()
}
