//! Postfix's `smtp-sink` on a free loopback port, recording every message it accepts to its own file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::env::{is_root, require};
use crate::smtp::{free_port, wait_listening};

/// The smtp-sink binary (Debian package `postfix`, in /usr/sbin).
#[track_caller]
pub fn smtp_sink() -> PathBuf {
    require("smtp-sink", "postfix")
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
        // `<"odd quoted"@d> NOTIFY=...`: the path is what the brackets enclose, spaces and all.
        self.rcpts
            .iter()
            .map(|r| match r.strip_prefix('<') {
                Some(rest) => rest.split_once('>').map_or(rest, |(path, _)| path).to_string(),
                None => r.split_whitespace().next().unwrap_or("").to_string(),
            })
            .collect()
    }
}

/// smtp-sink, killed on drop.
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
        let mut c = Command::new(smtp_sink());
        if is_root() {
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
        wait_listening(port, Duration::from_secs(10));
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

    /// How many times each (Subject, recipient) arrived: the exactly-once check of the concurrent-release tests.
    pub fn deliveries(&self) -> std::collections::HashMap<(String, String), usize> {
        let mut seen = std::collections::HashMap::new();
        for m in self.messages() {
            let subject = String::from_utf8_lossy(&m.body)
                .lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
                .expect("a delivered message has a Subject");
            for r in m.rcpt_addrs() {
                *seen.entry((subject.clone(), r)).or_default() += 1;
            }
        }
        seen
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
