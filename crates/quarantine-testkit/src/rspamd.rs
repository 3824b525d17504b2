//! A private rspamd (Debian package `rspamd`, 3.4; it ships `rspamc`) for the metadata_exporter test: its own
//! `LOCAL_CONFDIR`, `DBDIR`, `RUNDIR` and `LOGDIR` under a temp dir owned by `_rspamd`, the normal, controller
//! and proxy workers on free loopback ports, logging to the console (a file the test prints on failure), and a
//! dead nameserver with a short timeout (no DNS, no Redis, no systemd). Started in the foreground (`-f`), ready
//! when `GET /ping` on the normal worker answers `pong`, stopped (SIGTERM, then SIGKILL) when dropped. Needs root
//! (rspamd drops to `_rspamd` itself).

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::env::require;
use crate::run::{run, run_ok, Input, Out};
use crate::smtp::free_port;

/// How long rspamd may take to answer `pong` (measured here: 9-25 s, most of it compiling its regexps).
pub const READY: Duration = Duration::from_secs(90);

/// The account rspamd runs as (created by the Debian package).
pub const USER: &str = "_rspamd";

/// `rspamd` (Debian package `rspamd`).
#[track_caller]
pub fn rspamd_bin() -> PathBuf {
    require("rspamd", "rspamd")
}

/// `rspamc` (Debian package `rspamd`).
#[track_caller]
pub fn rspamc_bin() -> PathBuf {
    require("rspamc", "rspamd")
}

pub struct Rspamd {
    pub dir: tempfile::TempDir,
    /// The normal worker (`rspamc -h 127.0.0.1:PORT`, `GET /ping`).
    pub normal: u16,
    pub controller: u16,
    pub proxy: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl Rspamd {
    /// Writes the base `local.d` (workers, logging, options) plus `local_d` (file name, contents; `@DIR@` in the
    /// contents becomes the instance's directory, for maps), starts rspamd and waits until it answers `pong`.
    #[track_caller]
    pub fn start(local_d: &[(&str, &str)]) -> Rspamd {
        let bin = rspamd_bin();
        let dir = tempfile::Builder::new().prefix("qrspamd").tempdir().unwrap();
        let root = dir.path().to_path_buf();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        let local = root.join("local");
        for d in ["local", "local/local.d", "db", "run", "log"] {
            fs::create_dir(root.join(d)).unwrap();
        }
        let (normal, controller, proxy) = (free_port(), free_port(), free_port());
        let base = [
            ("worker-normal.inc", format!("bind_socket = \"127.0.0.1:{normal}\";\n")),
            ("worker-controller.inc", format!("bind_socket = \"127.0.0.1:{controller}\";\n")),
            ("worker-proxy.inc", format!("bind_socket = \"127.0.0.1:{proxy}\";\n")),
            ("logging.inc", "type = \"console\";\nlevel = \"info\";\ncolor = false;\n".to_string()),
            // A nameserver nobody answers on: every DNS lookup times out quickly, nothing leaves the machine.
            (
                "options.inc",
                "dns {\n  nameserver = [\"127.0.0.1:1\"];\n  timeout = 0.2s;\n  retransmits = 1;\n}\n".into(),
            ),
        ];
        let fill = |text: &str| text.replace("@DIR@", root.to_str().unwrap());
        for (name, text) in base.iter().map(|(n, t)| (*n, t.as_str())).chain(local_d.iter().copied()) {
            fs::write(local.join("local.d").join(name), fill(text)).unwrap();
        }
        run_ok({
            let mut c = Command::new("chown");
            c.arg("-R").arg(format!("{USER}:{USER}")).arg(&root);
            c
        });
        let log = root.join("log/console.log");
        let out = fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .args(["-f", "-u", USER, "-g", USER])
            .arg("--var")
            .arg(format!("LOCAL_CONFDIR={}", local.display()))
            .arg("--var")
            .arg(format!("DBDIR={}", root.join("db").display()))
            .arg("--var")
            .arg(format!("RUNDIR={}", root.join("run").display()))
            .arg("--var")
            .arg(format!("LOGDIR={}", root.join("log").display()))
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start rspamd");
        let mut r = Rspamd { dir, normal, controller, proxy, log, child: Some(child) };
        let started = Instant::now();
        loop {
            if r.ping() {
                break;
            }
            if let Some(status) = r.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("rspamd exited ({status}) before answering pong\nlog:\n{}", r.log());
            }
            assert!(started.elapsed() < READY, "rspamd did not answer pong within {READY:?}\nlog:\n{}", r.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        r
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.normal)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        if s.write_all(b"GET /ping HTTP/1.0\r\nConnection: close\r\n\r\n").is_err() {
            return false;
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.starts_with("HTTP/1.") && out.contains(" 200") && out.trim_end().ends_with("pong")
    }

    /// rspamd's console log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `rspamc -h 127.0.0.1:NORMAL ARGS FILE` (exit status unchecked; rspamc exits 0 for any verdict).
    pub fn rspamc(&self, args: &[&str], file: &Path) -> Out {
        let mut c = Command::new(rspamc_bin());
        c.arg("-h").arg(format!("127.0.0.1:{}", self.normal)).args(args).arg(file);
        run(c, Input::Null, Duration::from_secs(60))
    }

    /// Scans `file` with rspamc, asserting rspamc succeeded; returns the action it reports (`Action: ...`) and
    /// its whole output.
    #[track_caller]
    pub fn scan(&self, args: &[&str], file: &Path) -> (String, String) {
        let out = self.rspamc(args, file);
        let text = out.text();
        assert_eq!(out.code, 0, "rspamc failed\n{}\nrspamd log:\n{}", out.all(), self.log());
        let action = text
            .lines()
            .find_map(|l| l.strip_prefix("Action: "))
            .unwrap_or_else(|| panic!("no `Action:` in rspamc's output\n{text}\nrspamd log:\n{}", self.log()))
            .trim()
            .to_string();
        (action, text)
    }
}

impl Drop for Rspamd {
    fn drop(&mut self) {
        let Some(mut c) = self.child.take() else { return };
        let pid = c.id().to_string();
        // The main process stops its workers on SIGTERM; SIGKILL if it does not exit in time.
        let _ = Command::new("kill").args(["-s", "TERM", &pid]).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}
