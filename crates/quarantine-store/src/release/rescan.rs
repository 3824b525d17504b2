//! Rescan before release (issue 15 item 4): each original goes through a scanner command on stdin before it is
//! sent, e.g. `clamdscan --no-summary -` or `clamscan --no-summary -d SIGS -`. Exit 0: clean, send. The scanner's
//! "infected" exit (1 for clamscan and clamdscan): skip, the recipients stay `held` with the scanner's words in
//! `last_error`. Anything else (another exit, a signal, the time limit, a command that cannot start): deferred with
//! the error, attempt counted. Scans run at most `jobs` at a time, each under `timeout` (then killed).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

/// How to rescan.
#[derive(Clone, Debug)]
pub struct Rescan {
    /// The command and its arguments (no shell), the message on its stdin.
    pub argv: Vec<String>,
    /// The exit status that means "infected" (clamscan/clamdscan: 1).
    pub infected_exit: i32,
    /// Per scan; the scanner is killed past it.
    pub timeout: Duration,
    /// Scans at once.
    pub jobs: usize,
}

/// What a scanner said about one message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "detail", rename_all = "snake_case")]
pub enum ScanVerdict {
    Clean,
    /// The scanner's output (e.g. `stdin: Eicar-Signature FOUND`).
    Infected(String),
    /// Why the scan gave no answer.
    Error(String),
}

/// The first line of the scanner's output that says something, cut to 200 characters.
fn summary(out: &[u8]) -> String {
    let text = String::from_utf8_lossy(out);
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.contains("FOUND"))
        .or_else(|| text.lines().map(str::trim).find(|l| !l.is_empty()))
        .unwrap_or("");
    line.chars().map(|c| if c.is_control() { '?' } else { c }).take(200).collect()
}

impl Rescan {
    /// Splits `cmd` on whitespace (like `--sendmail`); an empty command is an error.
    pub fn parse(cmd: &str, infected_exit: i32, timeout: Duration, jobs: usize) -> Result<Rescan, String> {
        let argv: Vec<String> = cmd.split_whitespace().map(str::to_string).collect();
        if argv.is_empty() {
            return Err("--rescan: empty command".into());
        }
        Ok(Rescan { argv, infected_exit, timeout, jobs: jobs.max(1) })
    }

    pub fn describe(&self) -> String {
        self.argv.join(" ")
    }

    /// Runs the scanner on `bytes`.
    pub fn scan(&self, bytes: &[u8]) -> ScanVerdict {
        let mut child = match Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => return ScanVerdict::Error(format!("rescan `{}`: cannot run: {e}", self.argv[0])),
        };
        let mut stdin = child.stdin.take().expect("piped");
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let started = Instant::now();
        let (status, out, err) = std::thread::scope(|s| {
            // A scanner may stop reading early (it found something): a broken pipe is not an error.
            s.spawn(move || {
                let _ = stdin.write_all(bytes);
            });
            let o = s.spawn(move || {
                let mut v = Vec::new();
                let _ = stdout.read_to_end(&mut v);
                v
            });
            let e = s.spawn(move || {
                let mut v = Vec::new();
                let _ = stderr.read_to_end(&mut v);
                v
            });
            let status = loop {
                match child.try_wait() {
                    Ok(Some(st)) => break Ok(st),
                    Ok(None) if started.elapsed() >= self.timeout => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break Err(format!("timed out after {}s (killed)", self.timeout.as_secs()));
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                    Err(e) => break Err(format!("wait: {e}")),
                }
            };
            (status, o.join().unwrap_or_default(), e.join().unwrap_or_default())
        });
        let name = &self.argv[0];
        match status {
            Err(why) => ScanVerdict::Error(format!("rescan `{name}`: {why}")),
            Ok(st) => match st.code() {
                Some(0) => ScanVerdict::Clean,
                Some(c) if c == self.infected_exit => {
                    let what = summary(&out);
                    ScanVerdict::Infected(if what.is_empty() { format!("exit {c}") } else { what })
                }
                Some(c) => {
                    let what = summary(if err.is_empty() { &out } else { &err });
                    ScanVerdict::Error(format!("rescan `{name}` exited {c}: {what}"))
                }
                None => ScanVerdict::Error(format!("rescan `{name}` was killed by a signal")),
            },
        }
    }

    /// Scans every item (`read` gives its bytes, or why it cannot), at most `jobs` at a time; results in order.
    pub fn scan_all<T: Sync>(
        &self,
        items: &[T],
        read: &(dyn Fn(&T) -> Result<Vec<u8>, String> + Sync),
    ) -> Vec<ScanVerdict> {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<std::sync::Mutex<Option<ScanVerdict>>> =
            items.iter().map(|_| std::sync::Mutex::new(None)).collect();
        std::thread::scope(|s| {
            for _ in 0..self.jobs.min(items.len()).max(1) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let v = match read(item) {
                        Ok(bytes) => self.scan(&bytes),
                        Err(e) => ScanVerdict::Error(e),
                    };
                    *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
                });
            }
        });
        results
            .into_iter()
            .map(|m| {
                m.into_inner().unwrap_or_else(|p| p.into_inner()).unwrap_or(ScanVerdict::Error("not scanned".into()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Rescan {
        Rescan {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            infected_exit: 1,
            timeout: Duration::from_secs(5),
            jobs: 2,
        }
    }

    #[test]
    fn exits_map_to_verdicts() {
        assert_eq!(sh("cat >/dev/null").scan(b"x"), ScanVerdict::Clean);
        assert_eq!(
            sh("cat >/dev/null; echo 'stdin: Test.Sig FOUND'; exit 1").scan(b"x"),
            ScanVerdict::Infected("stdin: Test.Sig FOUND".into())
        );
        assert!(
            matches!(sh("echo broken >&2; exit 2").scan(b"x"), ScanVerdict::Error(e) if e.contains("exited 2: broken"))
        );
        let mut slow = sh("sleep 5");
        slow.timeout = Duration::from_millis(200);
        assert!(matches!(slow.scan(b"x"), ScanVerdict::Error(e) if e.contains("timed out")));
        let missing = Rescan { argv: vec!["/nonexistent/scanner".into()], ..sh("") };
        assert!(matches!(missing.scan(b"x"), ScanVerdict::Error(e) if e.contains("cannot run")));
        // A scanner that reads nothing still answers (no broken-pipe panic, no hang on a large message).
        assert_eq!(sh("exit 0").scan(&vec![b'a'; 4 << 20]), ScanVerdict::Clean);
    }

    #[test]
    fn scan_all_keeps_order() {
        let r = sh("grep -q bad && exit 1; exit 0");
        let items = vec!["ok", "bad", "ok", "bad", "ok"];
        let v = r.scan_all(&items, &|s: &&str| Ok(s.as_bytes().to_vec()));
        let infected: Vec<bool> = v.iter().map(|x| matches!(x, ScanVerdict::Infected(_))).collect();
        assert_eq!(infected, [false, true, false, true, false]);
    }
}
