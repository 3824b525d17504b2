//! Release through a sendmail-compatible command: `CMD -i -f SENDER -- RCPT...`, the message on stdin.
//!
//! `-i` makes a line with a single `.` ordinary text, so stdin is read to EOF and no dot handling is needed.
//! Line endings are normalised to LF, the local convention (Postfix's `sendmail_fix_line_endings`, Exim and
//! Sendmail all read LF). The null sender is passed as `<>`, which every implementation understands. No shell:
//! the command is run directly, and `--` keeps a recipient from being read as an option.
//!
//! Exit status: 0 → delivered; 75 (EX_TEMPFAIL) → deferred; any other → failed (with the first line of stderr);
//! killed by a signal → in doubt (it may have queued the message before dying).

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use quarantine_mail::encode;
use quarantine_store::{Down, Outcome, Transport};

pub struct Sendmail {
    argv: Vec<String>,
}

const EX_TEMPFAIL: i32 = 75;

impl Sendmail {
    pub fn new(argv: Vec<String>) -> Sendmail {
        Sendmail { argv }
    }
}

impl Transport for Sendmail {
    fn describe(&self) -> String {
        format!("sendmail command `{}`", self.argv.join(" "))
    }

    fn send(&mut self, from: &str, rcpts: &[&str], parts: &[&[u8]]) -> Result<Vec<Outcome>, Down> {
        let body = encode::normalize(&parts.concat(), b"\n");
        let sender = if from.is_empty() { "<>" } else { from };
        let mut child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .args(["-i", "-f", sender, "--"])
            .args(rcpts)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Down(format!("cannot run {}: {e}", self.argv[0])))?;
        let mut stdin = child.stdin.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        // Read stderr beside the write, so a command that complains a lot before reading cannot deadlock us.
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.by_ref().take(64 * 1024).read_to_end(&mut buf);
            let _ = std::io::copy(&mut stderr, &mut std::io::sink());
            buf
        });
        // A write error (the command exited without reading) is judged by the exit status below.
        let _ = stdin.write_all(&body);
        drop(stdin);
        let status = child.wait().map_err(|e| Down(format!("waiting for {}: {e}", self.argv[0])))?;
        let err = err_reader.join().unwrap_or_default();
        let err_line = String::from_utf8_lossy(&err)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(|l| l.chars().map(|c| if c.is_control() { '?' } else { c }).take(300).collect::<String>())
            .map(|l| format!(": {l}"))
            .unwrap_or_default();
        let name = &self.argv[0];
        let outcome = match status.code() {
            Some(0) => Outcome::Delivered(format!("{name} exited 0")),
            Some(EX_TEMPFAIL) => Outcome::Deferred(format!("{name} exited 75 (EX_TEMPFAIL){err_line}")),
            Some(c) => Outcome::Failed(format!("{name} exited {c}{err_line}")),
            None => {
                use std::os::unix::process::ExitStatusExt;
                let sig = status.signal().unwrap_or(0);
                Outcome::InDoubt(format!("in doubt: {name} was killed by signal {sig}{err_line}"))
            }
        };
        Ok(vec![outcome; rcpts.len()])
    }
}
