//! `--format maildir`: a Maildir's `new/` and `cur/` (never `tmp/`, where deliveries are still being written),
//! and the Maildir++ subfolders (`.Junk/`, `.Quarantine/`) inside it. One file per message, byte for byte.
//! A file's arrival time is the seconds at the start of its Maildir name (`1700000000.M1P2.host:2,S`), else its
//! modification time.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use super::Skipped;
use super::{Unit, UnitKind};

pub(crate) fn units(path: &Path, skipped: &mut Vec<Skipped>) -> Vec<Unit> {
    let mut out = Vec::new();
    if !is_maildir(path) {
        let why = match fs::metadata(path) {
            Err(e) => format!("cannot read: {e}"),
            Ok(m) if !m.is_dir() => "not a Maildir (not a directory)".to_string(),
            Ok(_) => "not a Maildir (no cur/ or new/ directory)".to_string(),
        };
        skipped.push(Skipped::new(path.display(), why));
        return out;
    }
    folder(path, &mut out, skipped);
    // Maildir++: subfolders are dot-directories of the top Maildir, each a Maildir itself.
    if let Ok(rd) = fs::read_dir(path) {
        let mut subs: Vec<_> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.') && n != "." && n != "..")
                    && is_maildir(p)
            })
            .filter(|p| match fs::symlink_metadata(p) {
                Ok(m) if m.file_type().is_symlink() => {
                    skipped.push(Skipped::new(
                        p.display(),
                        "a symbolic link: import never follows links inside the tree it reads",
                    ));
                    false
                }
                Ok(m) => m.is_dir(),
                Err(_) => false,
            })
            .collect();
        subs.sort();
        for s in subs {
            folder(&s, &mut out, skipped);
        }
    }
    out
}

fn is_maildir(p: &Path) -> bool {
    p.join("cur").is_dir() || p.join("new").is_dir()
}

fn folder(dir: &Path, out: &mut Vec<Unit>, skipped: &mut Vec<Skipped>) {
    for sub in ["new", "cur"] {
        let d = dir.join(sub);
        match fs::symlink_metadata(&d) {
            Ok(m) if m.file_type().is_symlink() => {
                skipped.push(Skipped::new(
                    d.display(),
                    "a symbolic link: import never follows links inside the tree it reads",
                ));
                continue;
            }
            Ok(_) => {}
            Err(_) => continue,
        }
        let mut names: Vec<_> = match fs::read_dir(&d) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => {
                skipped.push(Skipped::new(d.display(), format!("cannot list the directory: {e}")));
                continue;
            }
        };
        names.sort();
        for p in names {
            let Some(name) = p.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
                // A non-UTF-8 name is still a message.
                push_file(p, None, out, skipped);
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            push_file(p, Some(&name), out, skipped);
        }
    }
}

fn push_file(p: std::path::PathBuf, name: Option<&str>, out: &mut Vec<Unit>, skipped: &mut Vec<Skipped>) {
    match fs::symlink_metadata(&p) {
        Ok(m) if m.file_type().is_symlink() || (m.is_file() && super::refusal(&p, &m).is_some()) => {
            skipped.push(Skipped::new(p.display(), super::refusal(&p, &m).unwrap_or_default()));
        }
        Ok(m) if m.is_file() => {
            let mut u = Unit::file(Arc::from(p), UnitKind::File, &m);
            if let Some(secs) = name.and_then(name_time) {
                u.source_time_us = Some(secs * 1_000_000);
            }
            out.push(u);
        }
        Ok(_) => {}
        Err(e) => skipped.push(Skipped::new(p.display(), format!("cannot read: {e}"))),
    }
}

/// The delivery time in a Maildir file name: the digits before the first dot.
fn name_time(name: &str) -> Option<i64> {
    let digits = name.split('.').next()?;
    if digits.len() < 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn name_time() {
        assert_eq!(super::name_time("1700000000.M1P2.host:2,S"), Some(1_700_000_000));
        assert_eq!(super::name_time("msg.eml"), None);
    }
}
