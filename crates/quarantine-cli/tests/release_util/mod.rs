//! Helpers for the release tests: a throw-away store, the real `quarantine` binary, Postfix's `smtp-sink` as the
//! relay (recording each message it accepts to a file), and a tiny scripted SMTP server for the one behaviour no
//! real server offers on demand: closing the connection after the final dot without answering.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_quarantine");

/// The result of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("exit {}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let env = Env { dir, store };
        let r = env.q(&["init"]);
        assert_eq!(r.code, 0, "init: {}", r.all());
        env
    }

    /// `quarantine --store S ARGS` with a hermetic environment: no config file, a fixed actor.
    pub fn cmd<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--store")
            .arg(&self.store)
            .args(args)
            .env("QUARANTINE_CONFIG", "/dev/null")
            .env_remove("QUARANTINE_STORE")
            .env_remove("SUDO_USER")
            .env("USER", "tester")
            .stdin(Stdio::null());
        c
    }

    pub fn q<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        run(self.cmd(args), None)
    }

    /// `quarantine hold --verdict V --from F -- RCPTS < msg`; returns the id.
    pub fn hold(&self, verdict: &str, from: &str, rcpts: &[&str], msg: &[u8]) -> String {
        let mut args = vec!["hold", "--verdict", verdict, "--from", from, "--"];
        args.extend_from_slice(rcpts);
        let mut c = self.cmd(&args);
        c.stdin(Stdio::piped());
        let r = run(c, Some(msg));
        assert_eq!(r.code, 0, "hold: {}", r.all());
        r.stdout.trim().to_string()
    }

    /// Holds many messages quickly through the library (the same code path `hold` runs).
    pub fn hold_many(&self, verdict: &str, from: &str, rcpts: &[&str], msgs: &[Vec<u8>]) -> Vec<String> {
        let mut store = quarantine_store::Store::open(&self.store, Duration::from_secs(30)).unwrap();
        msgs.iter()
            .map(|m| {
                let req = quarantine_store::HoldRequest {
                    from: from.into(),
                    recipients: rcpts.iter().map(|s| s.to_string()).collect(),
                    verdict: verdict.into(),
                    ..Default::default()
                };
                store.hold(&req, &mut &m[..]).unwrap().id
            })
            .collect()
    }

    /// `quarantine release ARGS`.
    pub fn release<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        let mut full: Vec<&OsStr> = vec![OsStr::new("release")];
        full.extend(args.iter().map(|a| a.as_ref()));
        self.q(&full)
    }

    /// `show ID --json`.
    pub fn show(&self, id: &str) -> serde_json::Value {
        let r = self.q(&["show", id, "--json"]);
        assert_eq!(r.code, 0, "show: {}", r.all());
        serde_json::from_str(&r.stdout).unwrap()
    }

    /// (address, state, attempts, reply or last_error) per recipient of `id`.
    pub fn states(&self, id: &str) -> Vec<(String, String, i64, String)> {
        let v = self.show(id);
        v["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["address"].as_str().unwrap().to_string(),
                    r["state"].as_str().unwrap().to_string(),
                    r["attempts"].as_i64().unwrap(),
                    r["reply"].as_str().or(r["last_error"].as_str()).unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    pub fn audit(&self) -> Vec<quarantine_store::AuditRow> {
        let store = quarantine_store::Store::open(&self.store, Duration::from_secs(30)).unwrap();
        store.audit_log(None).unwrap()
    }

    /// The blob file of message `id`.
    pub fn blob_path(&self, id: &str) -> PathBuf {
        let hash = self.show(id)["hash"].as_str().unwrap().to_string();
        self.store.join("blobs").join(&hash[0..2]).join(&hash[2..4]).join(&hash)
    }
}

/// Runs `c` to completion (two minutes at most), feeding `input` on stdin if given.
pub fn run(mut c: Command, input: Option<&[u8]>) -> Run {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn quarantine");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().unwrap();
        let data = input.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
    }
    finish(child)
}

/// Waits for a spawned `quarantine` (stdout and stderr piped), killing it after two minutes.
pub fn finish(mut child: Child) -> Run {
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let so = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let se = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("quarantine ran for more than 2 minutes");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Run { code: status.code().unwrap_or(-1), stdout: so.join().unwrap(), stderr: se.join().unwrap() }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A port with nothing listening on it.
pub fn dead_port() -> u16 {
    free_port()
}

fn wait_listening(port: u16) {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listening on 127.0.0.1:{port} after 10s");
}

fn smtp_sink_path() -> PathBuf {
    for p in ["/usr/sbin/smtp-sink", "/usr/bin/smtp-sink"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("smtp-sink not found: install Postfix (scripts/install-test-deps)");
}

/// One message as smtp-sink recorded it.
#[derive(Debug, Clone)]
pub struct Sunk {
    pub file: PathBuf,
    /// `X-Mail-Args`: e.g. `<a@b> BODY=8BITMIME`.
    pub mail: String,
    /// `X-Rcpt-Args`, in order: e.g. `<a@b>`.
    pub rcpts: Vec<String>,
    /// The message as received (LF line endings: smtp-sink writes lines with LF, dot-unstuffed).
    pub body: Vec<u8>,
}

impl Sunk {
    /// The sender inside the brackets of `X-Mail-Args`.
    pub fn sender(&self) -> &str {
        let s = self.mail.split_whitespace().next().unwrap_or("");
        s.trim_start_matches('<').trim_end_matches('>')
    }

    pub fn rcpt_addrs(&self) -> Vec<String> {
        self.rcpts.iter().map(|r| r.split_whitespace().next().unwrap().trim_matches(['<', '>']).to_string()).collect()
    }
}

/// Postfix's smtp-sink on a free loopback port, recording every message to its own file. Killed on drop.
pub struct Sink {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Sink {
    /// `flags`: extra smtp-sink options, e.g. `["-r", "RCPT"]`.
    pub fn start(flags: &[&str]) -> Sink {
        let dir = tempfile::tempdir().unwrap();
        // smtp-sink drops to `nobody` when started as root; it must be able to write there.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let port = free_port();
        let mut c = Command::new(smtp_sink_path());
        if std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false) {
            c.args(["-u", "nobody"]);
        }
        c.arg("-d")
            .arg(format!("{}/m.", dir.path().display()))
            .args(flags)
            .arg(format!("127.0.0.1:{port}"))
            .arg("128")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = c.spawn().expect("start smtp-sink");
        wait_listening(port);
        Sink { port, dir, child }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message recorded so far, in no particular order.
    pub fn messages(&self) -> Vec<Sunk> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap() {
            let path = e.unwrap().path();
            let raw = std::fs::read(&path).unwrap();
            out.push(parse_dump(&path, &raw));
        }
        out
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_dump(path: &Path, raw: &[u8]) -> Sunk {
    let mut mail = String::new();
    let mut rcpts = Vec::new();
    let mut pos = 0;
    // smtp-sink's own header block ends with its three-line Received: header.
    let mut received_lines = 0;
    while pos < raw.len() {
        let end = raw[pos..].iter().position(|&b| b == b'\n').map(|p| pos + p + 1).unwrap_or(raw.len());
        let line = String::from_utf8_lossy(&raw[pos..end]).trim_end_matches('\n').to_string();
        pos = end;
        if let Some(v) = line.strip_prefix("X-Mail-Args: ") {
            mail = v.to_string();
        } else if let Some(v) = line.strip_prefix("X-Rcpt-Args: ") {
            rcpts.push(v.to_string());
        } else if line.starts_with("Received: ") {
            received_lines = 1;
        } else if received_lines > 0 {
            received_lines += 1;
            if received_lines == 3 {
                break;
            }
        }
    }
    // smtp-sink appends one empty line after the message.
    let mut body = raw[pos..].to_vec();
    if body.ends_with(b"\n") {
        body.pop();
    }
    Sunk { file: path.to_path_buf(), mail, rcpts, body }
}

/// A one-trick SMTP server: accepts everything up to the final dot, then closes the connection without a reply.
/// Counts the messages whose data it received completely.
pub struct DropAfterDot {
    pub port: u16,
    pub received: Arc<AtomicUsize>,
}

impl DropAfterDot {
    pub fn start() -> DropAfterDot {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let received = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&received);
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { return };
                let count = Arc::clone(&count);
                std::thread::spawn(move || serve_drop_after_dot(s, &count));
            }
        });
        DropAfterDot { port, received }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }
}

fn serve_drop_after_dot(s: TcpStream, count: &AtomicUsize) {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let _ = w.write_all(b"220 drop-after-dot ESMTP\r\n");
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let up = line.to_ascii_uppercase();
        let answer: &[u8] = if up.starts_with("EHLO") {
            b"250-drop-after-dot\r\n250 8BITMIME\r\n"
        } else if up.starts_with("DATA") {
            let _ = w.write_all(b"354 go ahead\r\n");
            let mut data = Vec::new();
            let mut b = [0u8; 1];
            while !data.ends_with(b"\r\n.\r\n") {
                if r.read_exact(&mut b).is_err() {
                    return;
                }
                data.push(b[0]);
            }
            count.fetch_add(1, Ordering::SeqCst);
            // The whole point: no reply, connection gone.
            let _ = w.shutdown(std::net::Shutdown::Both);
            return;
        } else if up.starts_with("QUIT") {
            let _ = w.write_all(b"221 bye\r\n");
            return;
        } else {
            b"250 2.0.0 Ok\r\n"
        };
        if w.write_all(answer).is_err() {
            return;
        }
    }
}

/// `bytes` with every line ending made LF: what smtp-sink records for a message we sent with CRLF.
pub fn lf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                out.push(b'\n');
                i += 2;
            }
            b'\r' | b'\n' => {
                out.push(b'\n');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// A small sendmail stand-in: records its argv (one per line) and stdin in DIR/N.args and DIR/N.stdin, then exits
/// with the number in DIR/exit (0 if missing).
pub fn fake_sendmail(dir: &Path) -> PathBuf {
    let script = dir.join("fake-sendmail");
    let body = format!(
        "#!/bin/sh\nd='{d}'\nn=$(ls \"$d\" | grep -c '\\.args$')\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > \"$d/$n.args\"\ncat > \"$d/$n.stdin\"\nif [ -f \"$d/exit\" ]; then code=$(cat \"$d/exit\"); else code=0; fi\n[ \"$code\" = 0 ] || echo \"fake-sendmail: exiting $code\" >&2\nexit $code\n",
        d = dir.display()
    );
    std::fs::write(&script, body).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// One transaction as [`NaiveRelay`] understood it.
#[derive(Debug, Clone)]
pub struct NaiveTx {
    pub mail: String,
    pub rcpts: Vec<String>,
    pub data: Vec<u8>,
}

/// The receiver SMTP smuggling exploits: it takes a bare LF or a bare CR as a line end, so `LF . LF`,
/// `LF . CRLF`, `CR . CRLF` and friends all end its DATA, and whatever follows is read as new commands. A client
/// that normalises line endings and stuffs dots still gets exactly one transaction per message through it.
pub struct NaiveRelay {
    pub port: u16,
    pub txs: Arc<std::sync::Mutex<Vec<NaiveTx>>>,
}

impl NaiveRelay {
    pub fn start() -> NaiveRelay {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let txs = Arc::new(std::sync::Mutex::new(Vec::new()));
        let shared = Arc::clone(&txs);
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { return };
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || serve_naive(s, &shared));
            }
        });
        NaiveRelay { port, txs }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn transactions(&self) -> Vec<NaiveTx> {
        self.txs.lock().unwrap().clone()
    }
}

/// Reads one line ending in CRLF, LF or CR (the ending not included); None at EOF.
fn naive_line(r: &mut impl Read, pending_cr: &mut bool) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        if r.read(&mut b).ok()? == 0 {
            return if line.is_empty() { None } else { Some(line) };
        }
        if *pending_cr {
            *pending_cr = false;
            if b[0] == b'\n' {
                continue; // the LF of a CRLF whose CR already ended the previous line
            }
        }
        match b[0] {
            b'\n' => return Some(line),
            b'\r' => {
                *pending_cr = true;
                return Some(line);
            }
            c => line.push(c),
        }
    }
}

fn serve_naive(s: TcpStream, txs: &std::sync::Mutex<Vec<NaiveTx>>) {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut cr = false;
    let _ = w.write_all(b"220 naive ESMTP\r\n");
    let mut cur = NaiveTx { mail: String::new(), rcpts: Vec::new(), data: Vec::new() };
    while let Some(line) = naive_line(&mut r, &mut cr) {
        let text = String::from_utf8_lossy(&line).to_string();
        let up = text.to_ascii_uppercase();
        let answer: &[u8] = if up.starts_with("EHLO") {
            b"250-naive\r\n250 8BITMIME\r\n"
        } else if up.starts_with("MAIL FROM:") {
            cur = NaiveTx { mail: text[10..].to_string(), rcpts: Vec::new(), data: Vec::new() };
            b"250 2.1.0 Ok\r\n"
        } else if up.starts_with("RCPT TO:") {
            cur.rcpts.push(text[8..].to_string());
            b"250 2.1.5 Ok\r\n"
        } else if up.starts_with("DATA") {
            let _ = w.write_all(b"354 go ahead\r\n");
            loop {
                let Some(l) = naive_line(&mut r, &mut cr) else {
                    return;
                };
                if l == b"." {
                    break;
                }
                let l = l.strip_prefix(b".").unwrap_or(&l);
                cur.data.extend_from_slice(l);
                cur.data.push(b'\n');
            }
            txs.lock().unwrap().push(cur.clone());
            b"250 2.0.0 Ok: queued\r\n"
        } else if up.starts_with("QUIT") {
            let _ = w.write_all(b"221 bye\r\n");
            return;
        } else {
            b"250 2.0.0 Ok\r\n"
        };
        if w.write_all(answer).is_err() {
            return;
        }
    }
}
