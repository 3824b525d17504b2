//! A private Postfix instance for the end-to-end tests: its own config directory, queue, data directory and log
//! under a temp dir, listening on loopback ports of its own, with the pipe transport running the `quarantine`
//! binary as `nobody`, and an smtp-sink as the "inside" mail server. The instance is stopped (and the sink
//! killed) when the [`Postfix`] value is dropped, panics included. Needs root (it runs as its own daemons).
//!
//! The config templates live in `tests/postfix/` at the top of the repository; docs/integration/postfix.md
//! explains them. Mail marked `X-Test-Verdict: lmtp` goes to Postfix's `lmtp` transport instead, to the unix socket
//! [`Postfix::lmtp_sock`] (docs/integration/postfix-lmtp.md), where a test runs `quarantine serve` as [`USER`]:
//! its directory belongs to [`USER`] and is reachable by the `postfix` user, and serve makes the socket 0666.
//! `X-Test-Verdict: lmtp-reuse` goes there too, through an `lmtp` transport that caches its connections.
//!
//! [`Postfix::border_port`] is the MX as the outside reaches it: its cleanup runs the "Strip at the border"
//! header_checks of docs/integration/postfix-lmtp.md, read out of the doc itself (`border_header_checks`), then a
//! content filter stand-in hands the message to [`Postfix::smtp_port`], whose header_checks route it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::env::{require, Scratch};
use crate::run::run_ok as run_command_ok;
use crate::sink::smtp_sink;
use crate::smtp::{free_port, wait_listening};

/// `postfix` (Debian package `postfix`).
#[track_caller]
pub fn postfix_bin() -> PathBuf {
    require("postfix", "postfix")
}

/// `postqueue` (Debian package `postfix`).
#[track_caller]
pub fn postqueue_bin() -> PathBuf {
    require("postqueue", "postfix")
}

/// The account the pipe transport runs `hold` as, and that owns the store.
pub const USER: &str = "nobody";
pub const GROUP: &str = "nogroup";

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn run_ok(c: &mut Command) -> String {
    run_command_ok(std::mem::replace(c, Command::new("true")))
}

pub struct Postfix {
    pub dir: tempfile::TempDir,
    /// The hermetic environment of the admin commands ([`Postfix::q`]); readable by `nobody`.
    pub scratch: Scratch,
    pub conf: PathBuf,
    pub store: PathBuf,
    /// The copy of the `quarantine` binary the pipe runs (readable and executable by `nobody`).
    pub bin: PathBuf,
    pub smtp_port: u16,
    pub release_port: u16,
    /// The border smtpd: headers that pick a verdict are stripped, then the message goes on to `smtp_port`.
    pub border_port: u16,
    pub sink_port: u16,
    pub sink_dir: PathBuf,
    /// Where the `lmtp` transport delivers (`FILTER lmtp:unix:PATH` in header_checks); nobody listens until a
    /// test starts `serve` there.
    pub lmtp_sock: PathBuf,
    sink: Option<Child>,
    started: bool,
}

impl Postfix {
    /// Sets up and starts the instance and the sink. `quarantine` is the built binary.
    pub fn start(quarantine: impl AsRef<Path>) -> Postfix {
        let quarantine = quarantine.as_ref();
        let scratch = Scratch::new(quarantine);
        chmod(scratch.path(), 0o755);
        chmod(&scratch.config(), 0o644);
        let dir = tempfile::Builder::new().prefix("qpostfix").tempdir().unwrap();
        let root = dir.path().to_path_buf();
        chmod(&root, 0o755); // postfix and nobody must reach what is inside
        let conf = root.join("conf");
        for d in ["conf", "queue", "data", "log", "sink", "bin", "lmtp"] {
            fs::create_dir(root.join(d)).unwrap();
            chmod(&root.join(d), 0o755);
        }
        let bin = root.join("bin/quarantine");
        fs::copy(quarantine, &bin).unwrap();
        chmod(&bin, 0o755);
        let (smtp_port, release_port, sink_port, border_port) = (free_port(), free_port(), free_port(), free_port());
        let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/postfix");
        let store = root.join("store");
        let lmtp_sock = root.join("lmtp/lmtp.sock");
        let fill = |name: &str| {
            let text = fs::read_to_string(templates.join(name)).unwrap();
            text.replace("@DIR@", root.to_str().unwrap())
                .replace("@CONF@", conf.to_str().unwrap())
                .replace("@SMTP_PORT@", &smtp_port.to_string())
                .replace("@RELEASE_PORT@", &release_port.to_string())
                .replace("@BORDER_PORT@", &border_port.to_string())
                .replace("@SINK_PORT@", &sink_port.to_string())
                .replace("@USER@", USER)
                .replace("@BIN@", bin.to_str().unwrap())
                .replace("@STORE@", store.to_str().unwrap())
                .replace("@LMTP_SOCK@", lmtp_sock.to_str().unwrap())
        };
        for (template, name) in [
            ("main.cf.in", "main.cf"),
            ("master.cf.in", "master.cf"),
            ("header_checks", "header_checks"),
            ("quarantine.toml.in", "quarantine.toml"),
        ] {
            fs::write(conf.join(name), fill(template)).unwrap();
            chmod(&conf.join(name), 0o644);
        }
        // The doc's snippet verbatim: the border strips exactly what the doc tells admins to strip.
        let strip = crate::doc::fenced_block("docs/integration/postfix-lmtp.md", "Strip at the border");
        fs::write(conf.join("border_header_checks"), strip).unwrap();
        chmod(&conf.join("border_header_checks"), 0o644);
        run_ok(Command::new("chown").arg(format!("postfix:{GROUP}")).arg(root.join("data")));

        // The store, owned by the account hold runs as.
        run_ok(scratch.program(&bin).arg("--store").arg(&store).arg("init"));
        run_ok(
            Command::new("chown")
                .arg("-R")
                .arg(format!("{USER}:{GROUP}"))
                .arg(&store)
                .arg(root.join("sink"))
                .arg(root.join("lmtp")),
        );

        let sink_dir = root.join("sink");
        let sink = Command::new(smtp_sink())
            .args(["-u", USER, "-d"])
            .arg(format!("{}/%Y%m%d%H/%M.", sink_dir.display()))
            .arg(format!("127.0.0.1:{sink_port}"))
            .arg("64")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start smtp-sink");
        let mut pf = Postfix {
            dir,
            scratch,
            conf,
            store,
            bin,
            smtp_port,
            release_port,
            border_port,
            sink_port,
            sink_dir,
            lmtp_sock,
            sink: Some(sink),
            started: false,
        };
        let out = Command::new(postfix_bin()).arg("-c").arg(&pf.conf).arg("start").output().unwrap();
        pf.started = true; // stop it in Drop even if start reported an error half way
        assert!(
            out.status.success(),
            "postfix start: {}{}\nmaillog:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            pf.maillog()
        );
        for port in [smtp_port, release_port, border_port, sink_port] {
            wait_listening(port, Duration::from_secs(20));
        }
        pf
    }

    pub fn maillog(&self) -> String {
        fs::read_to_string(self.dir.path().join("log/maillog")).unwrap_or_default()
    }

    /// The queue, as `postqueue -j` lists it: one JSON object per queued message.
    pub fn queue(&self) -> Vec<serde_json::Value> {
        run_ok(Command::new(postqueue_bin()).arg("-c").arg(&self.conf).arg("-j"))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// `postqueue -p`, for people.
    pub fn queue_text(&self) -> String {
        run_ok(Command::new(postqueue_bin()).arg("-c").arg(&self.conf).arg("-p"))
    }

    pub fn flush(&self) {
        run_ok(Command::new(postqueue_bin()).arg("-c").arg(&self.conf).arg("-f"));
    }

    /// `quarantine --store STORE ARGS` as root (an admin), hermetic config.
    pub fn q(&self, args: &[&str]) -> std::process::Output {
        self.scratch
            .program(&self.bin)
            .arg("--store")
            .arg(&self.store)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// The same as the account hold runs as.
    pub fn q_as_user(&self, args: &[&str]) -> std::process::Output {
        self.scratch
            .program(require("setpriv", "util-linux"))
            .args([format!("--reuid={USER}"), format!("--regid={GROUP}"), "--clear-groups".into(), "--".into()])
            .arg(&self.bin)
            .arg("--store")
            .arg(&self.store)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Every message file smtp-sink wrote.
    pub fn sink_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![self.sink_dir.clone()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(text) = fs::read(&p) {
                    out.push(String::from_utf8_lossy(&text).into_owned());
                }
            }
        }
        out
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.maillog();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- postfix maillog (last lines) ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        if self.started {
            let _ = Command::new(postfix_bin()).arg("-c").arg(&self.conf).arg("stop").output();
            // `stop` asks master to exit; wait until its pid file's process is gone so the temp dir can go.
            let pid_file = self.dir.path().join("queue/pid/master.pid");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                let alive =
                    fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse::<u32>().ok()).is_some_and(is_live);
                if !alive {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if let Some(mut sink) = self.sink.take() {
            let _ = sink.kill();
            let _ = sink.wait();
        }
    }
}

/// A process that exists and is not a zombie (stopped daemons may linger as zombies here: PID 1 does not reap).
fn is_live(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
