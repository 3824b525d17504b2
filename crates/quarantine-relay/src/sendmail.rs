//! Release through a sendmail-compatible command: `CMD -i -f SENDER -- RCPT...`, the message on stdin.
//!
//! `-i` makes a line with a single `.` ordinary text, so stdin is read to EOF and no dot handling is needed.
//! Line endings are normalised to LF, the local convention (Postfix's `sendmail_fix_line_endings`, Exim and
//! Sendmail all read LF). The null sender is passed as `<>`, which every implementation understands. No shell:
//! the command is run directly, and `--` keeps a recipient from being read as an option.
//!
//! Exit status: 0 → delivered; 75 (EX_TEMPFAIL) → deferred; any other → failed (with the first line of stderr);
//! killed by a signal → in doubt (it may have queued the message before dying).
//!
//! # Time limit
//! The whole run (writing the message, waiting for the exit) is bounded by the release timeout: a hung command
//! would otherwise keep the run, and the recipients it claimed, waiting forever. The command runs in its own
//! process group and the whole group is killed (SIGKILL) at the limit, so a script's children (`sleep`, a
//! backgrounded helper holding our stderr pipe) go too. The outcome of a killed command:
//! - it had not taken the whole message (our write of stdin had not finished): **deferred**. With `-i` the
//!   message ends only at EOF, which it never saw, so it cannot have queued it; the next run retries.
//! - it had (stdin written and closed): **in doubt**. It may well have queued the message and hung afterwards
//!   (a slow fsync, a lock, a stuck notification): retrying on our own could deliver twice, and calling it
//!   deferred would do exactly that on the next run. In doubt leaves the recipients `releasing`, shown as such;
//!   `--retry-in-doubt` re-sends them once someone has looked at the relay's queue.

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use quarantine_mail::encode;
use quarantine_store::{Down, Outcome, Transport};

pub struct Sendmail {
    argv: Vec<String>,
    /// Bounds each run of the command.
    timeout: Duration,
}

const EX_TEMPFAIL: i32 = 75;

/// How long to wait for the rest of stderr once the command has exited or been killed: a grandchild that
/// escaped the process group may hold the pipe open, and its complaints are not worth a hang.
const STDERR_GRACE: Duration = Duration::from_secs(2);

impl Sendmail {
    pub fn new(argv: Vec<String>, timeout: Duration) -> Sendmail {
        Sendmail { argv, timeout }
    }
}

/// How a run ended.
enum Run {
    Exited(ExitStatus),
    /// Killed at the time limit; `fed`: the whole message had been written and stdin closed.
    TimedOut {
        fed: bool,
    },
}

impl Transport for Sendmail {
    fn describe(&self) -> String {
        format!("sendmail command `{}`", self.argv.join(" "))
    }

    fn send(&mut self, from: &str, rcpts: &[&str], parts: &[&[u8]]) -> Result<Vec<Outcome>, Down> {
        use std::os::unix::process::CommandExt;
        let body = encode::normalize(&parts.concat(), b"\n");
        let sender = if from.is_empty() { "<>" } else { from };
        let started = Instant::now();
        let mut child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .args(["-i", "-f", sender, "--"])
            .args(rcpts)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group, so the time limit can kill everything it started.
            .process_group(0)
            .spawn()
            .map_err(|e| Down(format!("cannot run {}: {e}", self.argv[0])))?;
        let group = rustix::process::Pid::from_child(&child);
        let mut stdin = child.stdin.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        // stdin, stderr and the exit each on their own thread, so a command that never reads, complains a lot
        // before reading, or never exits cannot block us past the deadline.
        let fed = Arc::new(AtomicBool::new(false));
        let fed_w = Arc::clone(&fed);
        std::thread::spawn(move || {
            // A write error (the command exited without reading) is judged by the exit status.
            if stdin.write_all(&body).is_ok() {
                drop(stdin);
                fed_w.store(true, Ordering::SeqCst);
            }
        });
        let (err_tx, err_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.by_ref().take(64 * 1024).read_to_end(&mut buf);
            let _ = std::io::copy(&mut stderr, &mut std::io::sink());
            let _ = err_tx.send(buf);
        });
        let (exit_tx, exit_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = exit_tx.send(child.wait());
        });
        let name = &self.argv[0];
        let waited = |r: std::io::Result<ExitStatus>| r.map_err(|e| Down(format!("waiting for {name}: {e}")));
        let run = match exit_rx.recv_timeout(self.timeout) {
            Ok(status) => Run::Exited(waited(status)?),
            Err(_) => {
                // Read `fed` before the kill: what the command had been given when its time was up.
                let fed = fed.load(Ordering::SeqCst);
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
                match exit_rx.recv() {
                    Ok(status) => {
                        let status = waited(status)?;
                        // It may have exited on its own just before the kill: then its status says what happened.
                        if status.code().is_some() {
                            Run::Exited(status)
                        } else {
                            Run::TimedOut { fed }
                        }
                    }
                    Err(_) => Run::TimedOut { fed },
                }
            }
        };
        let err = err_rx.recv_timeout(STDERR_GRACE).unwrap_or_default();
        let err_line = String::from_utf8_lossy(&err)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(|l| l.chars().map(|c| if c.is_control() { '?' } else { c }).take(300).collect::<String>())
            .map(|l| format!(": {l}"))
            .unwrap_or_default();
        let secs = started.elapsed().as_secs_f64();
        let outcome = match run {
            Run::TimedOut { fed: false } => Outcome::Deferred(format!(
                "{name} did not finish within {secs:.0}s and was killed before it read the whole message{err_line}"
            )),
            Run::TimedOut { fed: true } => Outcome::InDoubt(format!(
                "in doubt: {name} did not finish within {secs:.0}s and was killed after reading the message (it \
                 may have queued it){err_line}"
            )),
            Run::Exited(status) => match status.code() {
                Some(0) => Outcome::Delivered(format!("{name} exited 0")),
                Some(EX_TEMPFAIL) => Outcome::Deferred(format!("{name} exited 75 (EX_TEMPFAIL){err_line}")),
                Some(c) => Outcome::Failed(format!("{name} exited {c}{err_line}")),
                None => {
                    use std::os::unix::process::ExitStatusExt;
                    let sig = status.signal().unwrap_or(0);
                    Outcome::InDoubt(format!("in doubt: {name} was killed by signal {sig}{err_line}"))
                }
            },
        };
        Ok(vec![outcome; rcpts.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A sendmail stand-in: `body` as a shell script in a scratch directory.
    fn script(dir: &std::path::Path, name: &str, body: &str) -> Vec<String> {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        vec![path.to_str().unwrap().to_string()]
    }

    /// Whether a process is still running (a zombie waiting for a reaper is not).
    fn running(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
    }

    #[test]
    fn exit_codes_are_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let ok = script(dir.path(), "ok", &format!("cat > {}", out.display()));
        let o = Sendmail::new(ok, Duration::from_secs(10)).send("a@b.c", &["d@e.f", "g@h.i"], &[b"x\r\n"]).unwrap();
        assert_eq!(o, vec![Outcome::Delivered(format!("{}/ok exited 0", dir.path().display())); 2]);
        assert_eq!(std::fs::read(&out).unwrap(), b"x\n");
        let tmp = script(dir.path(), "tmp", "cat >/dev/null; echo 'queue full' >&2; exit 75");
        let o = Sendmail::new(tmp, Duration::from_secs(10)).send("", &["d@e.f"], &[b"x\n"]).unwrap();
        assert!(matches!(&o[0], Outcome::Deferred(t) if t.ends_with("exited 75 (EX_TEMPFAIL): queue full")), "{o:?}");
        let bad = script(dir.path(), "bad", "echo 'bad address' >&2; exit 67");
        let o = Sendmail::new(bad, Duration::from_secs(10)).send("", &["d@e.f"], &[b"x\n"]).unwrap();
        assert!(matches!(&o[0], Outcome::Failed(t) if t.ends_with("exited 67: bad address")), "{o:?}");
    }

    /// A command that read the message and hangs (here in a child of the script, which holds our stderr pipe
    /// open) is killed at the limit, with its children, and the recipients are in doubt.
    #[test]
    fn a_hung_command_after_reading_is_killed_and_in_doubt() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let argv =
            script(dir.path(), "hang", &format!("cat > /dev/null\nsleep 600 &\necho $! > {}\nwait", pidfile.display()));
        let t0 = Instant::now();
        let o = Sendmail::new(argv, Duration::from_secs(1)).send("a@b.c", &["d@e.f"], &[b"x\r\n"]).unwrap();
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(5), "took {took:?}");
        assert!(matches!(&o[0], Outcome::InDoubt(t) if t.contains("was killed after reading")), "{o:?}");
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let pid = pid.trim();
        // The group was killed: the script's `sleep` is gone too.
        let t0 = Instant::now();
        while running(pid) && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!running(pid), "sleep {pid} survived the kill");
    }

    /// A command that never reads its input cannot have queued the message: killed at the limit, deferred.
    #[test]
    fn a_hung_command_that_never_read_is_killed_and_deferred() {
        let dir = tempfile::tempdir().unwrap();
        let argv = script(dir.path(), "deaf", "exec sleep 600");
        // Bigger than any pipe buffer, so our write cannot finish unread.
        let big = vec![b'x'; 4 << 20];
        let t0 = Instant::now();
        let o = Sendmail::new(argv, Duration::from_secs(1)).send("a@b.c", &["d@e.f"], &[&big]).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5), "took {:?}", t0.elapsed());
        assert!(matches!(&o[0], Outcome::Deferred(t) if t.contains("before it read the whole message")), "{o:?}");
    }
}
