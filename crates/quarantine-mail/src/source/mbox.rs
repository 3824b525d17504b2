//! `--format mbox`: Unix mailbox files, one or many messages each, and directories of them.
//!
//! A message starts at a `From ` line at the start of the file or after an empty line, and ends before the empty
//! line that precedes the next one (or at the end of the file, minus a final empty line): the separator that mbox
//! writers add is not part of the message. The `From ` line itself is not part of the message either; it gives
//! the envelope sender (`MAILER-DAEMON` is the null sender) and the delivery time.
//!
//! Quoting: writers put `>` before body lines that would look like a separator. **mboxrd** (the default) quotes
//! `From `, `>From `, `>>From `… alike, so one `>` comes off every such line and the original bytes come back
//! exactly. **mboxo** (`--mbox-variant mboxo`) quotes only `From `, which is ambiguous (a `>From ` in the original
//! cannot be told from a quoted `From `), so its lines are kept as found. Content-Length based variants (mboxcl,
//! mboxcl2) are read as mboxrd; that is right for all but messages with unquoted `From ` lines in their bodies.

use std::collections::HashSet;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::envelope::mbox_line_sender;
use super::Skipped;
use super::{files_under, open_nofollow, refusal, ExportRecord, Unit, UnitKind};

pub(crate) fn units(path: &Path, skipped: &mut Vec<Skipped>) -> Vec<Unit> {
    let mut out = Vec::new();
    let files = files_under(path, skipped);
    let listed: HashSet<&Path> = files.iter().map(|(p, _)| p.as_path()).collect();
    for (p, _) in &files {
        // An export's records beside its mbox are read with it, not as an mbox of their own.
        if sidecar_names(p).is_empty() && mbox_of_sidecar(p).iter().any(|m| listed.contains(m.as_path())) {
            continue;
        }
        let p: Arc<Path> = Arc::from(p.as_path());
        match scan(&p) {
            Ok(Ok(mut units)) => {
                if let Some(records) = sidecar(&p, skipped) {
                    attach(&mut units, records);
                }
                out.extend(units)
            }
            Ok(Err(why)) => skipped.push(Skipped::new(p.display(), why)),
            Err(e) => skipped.push(Skipped::new(p.display(), format!("cannot read: {e}"))),
        }
    }
    out
}

/// Where an export's records for the mbox `p` may be: `quarantine-T.jsonl` beside `quarantine-T.mbox` (what
/// `export --format mbox` writes), or `p.jsonl` (an mbox renamed without its extension kept). Empty for a file
/// that is itself a `.jsonl`.
fn sidecar_names(p: &Path) -> Vec<PathBuf> {
    let Some(name) = p.file_name().and_then(|n| n.to_str()) else { return Vec::new() };
    if name.ends_with(".jsonl") {
        return Vec::new();
    }
    let mut v = Vec::new();
    if let Some(stem) = name.strip_suffix(".mbox") {
        v.push(p.with_file_name(format!("{stem}.jsonl")));
    }
    v.push(p.with_file_name(format!("{name}.jsonl")));
    v
}

/// The mbox files whose records `p` could be (the inverse of [`sidecar_names`]).
fn mbox_of_sidecar(p: &Path) -> Vec<PathBuf> {
    let Some(stem) = p.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".jsonl")) else {
        return Vec::new();
    };
    vec![p.with_file_name(format!("{stem}.mbox")), p.with_file_name(stem)]
}

/// The records of an export beside the mbox `p`, one per line (`None` for a line that is not one), read with the
/// same care as the mbox (never through a symbolic link; as root, only a file its directory's owner owns). A
/// record file that is there but cannot be read is reported; the messages are still imported, without it.
fn sidecar(p: &Path, skipped: &mut Vec<Skipped>) -> Option<Vec<Option<ExportRecord>>> {
    let path = sidecar_names(p).into_iter().find(|s| fs::symlink_metadata(s).is_ok())?;
    let m = fs::symlink_metadata(&path).ok()?;
    if let Some(why) = refusal(&path, &m) {
        skipped.push(Skipped::new(path.display(), format!("export records not read: {why}")));
        return None;
    }
    let read = open_nofollow(&path).and_then(|f| {
        let mut out = Vec::new();
        for line in BufReader::new(f).lines() {
            out.push(ExportRecord::parse(&line?));
        }
        Ok(out)
    });
    match read {
        Ok(records) => Some(records),
        Err(e) => {
            skipped.push(Skipped::new(path.display(), format!("export records not read: {e}")));
            None
        }
    }
}

/// Gives message `n` of `units` the `n`th record (the export wrote them in the same order).
fn attach(units: &mut [Unit], records: Vec<Option<ExportRecord>>) {
    let mut records: Vec<Option<Arc<ExportRecord>>> = records.into_iter().map(|r| r.map(Arc::new)).collect();
    for u in units {
        if let UnitKind::Mbox { n, record, .. } = &mut u.kind {
            *record = records.get_mut(*n as usize - 1).and_then(Option::take);
        }
    }
}

/// Finds the messages of one mbox file. The inner `Err` says why the file is not an mbox.
fn scan(path: &Arc<Path>) -> io::Result<Result<Vec<Unit>, String>> {
    let mut r = BufReader::with_capacity(256 * 1024, super::open_nofollow(path)?);
    let mut out = Vec::new();
    let mut line = Vec::new();
    let mut pos = 0u64;
    let mut prev_empty: Option<u64> = None; // the length of the previous line, if it was an empty line
    let mut current: Option<(u64, String)> = None; // content start, From line
    let finish = |current: Option<(u64, String)>, end: u64, out: &mut Vec<Unit>| {
        if let Some((start, from_line)) = current {
            let n = out.len() as u64 + 1;
            out.push(Unit {
                path: path.clone(),
                source_time_us: from_line_time(&from_line),
                kind: UnitKind::Mbox {
                    n,
                    offset: start,
                    len: end - start,
                    sender: mbox_line_sender(&from_line),
                    record: None,
                },
            });
        }
    };
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line)? as u64;
        if n == 0 {
            break;
        }
        let from = line.starts_with(b"From ");
        if pos == 0 && !from {
            return Ok(Err("not an mbox: the file does not start with a \"From \" line".into()));
        }
        if from && (pos == 0 || prev_empty.is_some()) {
            let end = pos - prev_empty.unwrap_or(0);
            finish(current.take(), end, &mut out);
            let text = String::from_utf8_lossy(&line);
            current = Some((pos + n, text.trim_end().to_string()));
        }
        prev_empty = (line == b"\n" || line == b"\r\n").then_some(n);
        pos += n;
    }
    if current.is_none() {
        return Ok(Err("empty file".into()));
    }
    finish(current, pos - prev_empty.unwrap_or(0), &mut out);
    Ok(Ok(out))
}

/// The date of a `From sender Thu Jan  1 00:00:00 2025` line, read as local time (asctime has no zone).
fn from_line_time(line: &str) -> Option<i64> {
    let words: Vec<&str> = line.split_whitespace().skip(2).take(5).collect();
    let t = chrono::NaiveDateTime::parse_from_str(&words.join(" "), "%a %b %d %H:%M:%S %Y").ok()?;
    let local = t.and_local_timezone(chrono::Local).earliest()?;
    Some(local.timestamp_micros())
}

/// mboxrd unquoting: one `>` comes off every line that is `>`+ followed by `From `. Streams line by line.
pub(crate) struct Unquote<R> {
    inner: R,
    line: Vec<u8>,
    pos: usize,
}

impl<R: BufRead> Unquote<R> {
    pub(crate) fn new(inner: R) -> Unquote<R> {
        Unquote { inner, line: Vec::new(), pos: 0 }
    }
}

fn is_quoted_from(line: &[u8]) -> bool {
    let k = line.iter().take_while(|&&b| b == b'>').count();
    k >= 1 && line[k..].starts_with(b"From ")
}

impl<R: BufRead> Read for Unquote<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.line.len() {
            self.line.clear();
            self.pos = 0;
            if self.inner.read_until(b'\n', &mut self.line)? == 0 {
                return Ok(0);
            }
            if is_quoted_from(&self.line) {
                self.pos = 1;
            }
        }
        let n = buf.len().min(self.line.len() - self.pos);
        buf[..n].copy_from_slice(&self.line[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(u: &Unit, variant: super::super::MboxVariant) -> Vec<u8> {
        let mut v = Vec::new();
        u.open(variant).unwrap().read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn splits_and_unquotes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mbox");
        std::fs::write(
            &p,
            b"From a@b.org Thu Jan  2 03:04:05 2025\nSubject: one\n\n>From here\n>>From there\nFrom inside a line is fine\n\n\
              From MAILER-DAEMON Fri Jan  3 00:00:00 2025\nSubject: two\n\nbody\n\n\nFrom c@d.org Sat Jan  4 00:00:00 2025\nSubject: three\n\nlast",
        )
        .unwrap();
        let units = scan(&Arc::from(p.as_path())).unwrap().unwrap();
        assert_eq!(units.len(), 3);
        use super::super::MboxVariant::*;
        assert_eq!(
            read_all(&units[0], Mboxrd),
            b"Subject: one\n\nFrom here\n>From there\nFrom inside a line is fine\n"
        );
        assert_eq!(
            read_all(&units[0], Mboxo),
            b"Subject: one\n\n>From here\n>>From there\nFrom inside a line is fine\n"
        );
        assert_eq!(read_all(&units[1], Mboxrd), b"Subject: two\n\nbody\n\n");
        assert_eq!(read_all(&units[2], Mboxrd), b"Subject: three\n\nlast");
        let UnitKind::Mbox { sender, n, .. } = &units[1].kind else { panic!() };
        assert_eq!((sender.as_deref(), *n), (Some(""), 2));
        assert!(units[0].source_time_us.is_some());
    }

    #[test]
    fn not_an_mbox() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"Subject: eml\n\nFrom x\n").unwrap();
        assert!(scan(&Arc::from(p.as_path())).unwrap().unwrap_err().contains("not an mbox"));
    }
}
