//! What an import reads: a list of [`Unit`]s, one per message, built up front (so the progress bar knows its
//! total) by the format modules, and opened one by one by the staging threads.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

pub mod amavis;
mod eml;
pub mod envelope;
mod maildir;
pub(crate) mod mbox;

/// The source formats `import` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Maildir,
    Mbox,
    Eml,
    Amavis,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Maildir => "maildir",
            Format::Mbox => "mbox",
            Format::Eml => "eml",
            Format::Amavis => "amavis",
        }
    }
}

/// How `>From ` lines of an mbox are read (see the `mbox` module).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MboxVariant {
    /// `>`+`From ` lines lose one `>`.
    #[default]
    Mboxrd,
    /// Lines are kept as found.
    Mboxo,
}

/// One message (or file, or directory) that was not imported, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub source: String,
    pub reason: String,
}

impl Skipped {
    pub fn new(source: impl std::fmt::Display, reason: impl Into<String>) -> Skipped {
        Skipped { source: source.to_string(), reason: reason.into() }
    }
}

/// Every message of `path` in `format`, in order; what cannot be read is reported in `skipped`.
pub fn units(format: Format, path: &Path, skipped: &mut Vec<Skipped>) -> Vec<Unit> {
    match format {
        Format::Maildir => maildir::units(path, skipped),
        Format::Mbox => mbox::units(path, skipped),
        Format::Eml => eml::units(path, skipped),
        Format::Amavis => amavis::units(path, skipped),
    }
}

/// One message to import.
#[derive(Clone, Debug)]
pub struct Unit {
    pub path: Arc<Path>,
    pub kind: UnitKind,
    /// When the source says the message arrived (Maildir name, mbox `From ` line date, file mtime), microseconds.
    pub source_time_us: Option<i64>,
}

#[derive(Clone, Debug)]
pub enum UnitKind {
    /// The whole file is the message (eml, Maildir).
    File,
    /// An amavisd-new quarantine file: the whole file, gunzipped if it is gzip.
    Amavis,
    /// The `n`th message (from 1) of an mbox: `len` bytes at `offset`, after its `From ` line.
    Mbox { n: u64, offset: u64, len: u64, sender: Option<String> },
}

impl Unit {
    pub(crate) fn file(path: Arc<Path>, kind: UnitKind, meta: &fs::Metadata) -> Unit {
        Unit { path, kind, source_time_us: Some(meta.mtime() * 1_000_000 + meta.mtime_nsec() / 1000) }
    }

    /// How the summary names this message: the path, and for an mbox the message number and byte offset.
    pub fn label(&self) -> String {
        match &self.kind {
            UnitKind::Mbox { n, offset, .. } => {
                format!("{} (message {n} at byte {offset})", self.path.display())
            }
            _ => self.path.display().to_string(),
        }
    }

    /// The message's bytes, as they go into the blob.
    pub fn open(&self, variant: MboxVariant) -> io::Result<Box<dyn Read + Send>> {
        let mut f = File::open(&self.path)?;
        match &self.kind {
            UnitKind::File => Ok(Box::new(f)),
            UnitKind::Amavis => amavis::open(f),
            UnitKind::Mbox { offset, len, .. } => {
                f.seek(SeekFrom::Start(*offset))?;
                let body = BufReader::with_capacity(64 * 1024, f.take(*len));
                Ok(match variant {
                    MboxVariant::Mboxrd => Box::new(mbox::Unquote::new(body)),
                    MboxVariant::Mboxo => Box::new(body),
                })
            }
        }
    }
}

/// Every regular file under `path` (or `path` itself), in sorted order, dot files left out. Directories are
/// entered, symbolic links to directories are not (no loops); a symbolic link to a file is read. What cannot be
/// listed is reported in `skipped`.
pub(crate) fn files_under(path: &Path, skipped: &mut Vec<Skipped>) -> Vec<(PathBuf, fs::Metadata)> {
    let mut out = Vec::new();
    match fs::metadata(path) {
        Ok(m) if m.is_file() => out.push((path.to_path_buf(), m)),
        Ok(m) if m.is_dir() => walk(path, &mut out, skipped),
        Ok(_) => skipped.push(Skipped::new(path.display(), "not a regular file or directory")),
        Err(e) => skipped.push(Skipped::new(path.display(), format!("cannot read: {e}"))),
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, fs::Metadata)>, skipped: &mut Vec<Skipped>) {
    let mut entries: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) => {
            skipped.push(Skipped::new(dir.display(), format!("cannot list the directory: {e}")));
            return;
        }
    };
    entries.sort();
    for p in entries {
        if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')) {
            continue;
        }
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => walk(&p, out, skipped),
            Ok(m) if m.file_type().is_symlink() => match fs::metadata(&p) {
                Ok(t) if t.is_file() => out.push((p, t)),
                Ok(_) => {} // a link to a directory or special file: not followed
                Err(e) => skipped.push(Skipped::new(p.display(), format!("cannot read: {e}"))),
            },
            Ok(m) if m.is_file() => out.push((p, m)),
            Ok(_) => {}
            Err(e) => skipped.push(Skipped::new(p.display(), format!("cannot read: {e}"))),
        }
    }
}
