//! What an import reads: a list of [`Unit`]s, one per message, built up front (so the progress bar knows its
//! total) by the format modules, and opened one by one by the staging threads.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
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
    /// `record` is what an mbox export wrote for it beside the mbox (see [`ExportRecord`]), if there is one.
    Mbox { n: u64, offset: u64, len: u64, sender: Option<String>, record: Option<Arc<ExportRecord>> },
}

/// One line of the `.jsonl` file `quarantine export --format mbox` writes beside its mbox: the index record of
/// the message at the same position (the `show --json` object), read back so that re-importing an export restores
/// what the bytes alone do not carry. It applies only to a message whose bytes hash to `hash` (BLAKE3), so an
/// edited mbox or records out of step never mislabel a message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportRecord {
    pub hash: String,
    /// Envelope sender; empty for the null sender.
    pub from: String,
    /// Envelope recipients in order (Bcc recipients included).
    pub recipients: Vec<String>,
    pub verdict: Option<String>,
    pub scanner: Option<String>,
    pub reason: Option<String>,
}

impl ExportRecord {
    /// Reads one record line; `None` when it is not one (no hash, sender or recipients).
    pub fn parse(line: &str) -> Option<ExportRecord> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let recipients: Vec<String> = v
            .get("recipients")?
            .as_array()?
            .iter()
            .filter_map(|r| r.get("address").and_then(|a| a.as_str()).map(str::to_string))
            .collect();
        if recipients.is_empty() {
            return None;
        }
        Some(ExportRecord {
            hash: text("hash")?,
            from: text("from")?,
            recipients,
            verdict: text("verdict").filter(|s| !s.trim().is_empty()),
            scanner: text("scanner"),
            reason: text("reason"),
        })
    }
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
        let mut f = open_nofollow(&self.path)?;
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

/// Opens a file found in an import tree for reading without following a symbolic link in its last component
/// (`O_NOFOLLOW`: a file swapped for a link after the walk fails instead of being read) and without blocking on a
/// FIFO (`O_NONBLOCK`); anything but a regular file is refused.
pub(crate) fn open_nofollow(path: &Path) -> io::Result<File> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(f)
}

/// Why an entry found inside an import tree (not the PATH the invoker named) must not be read, if it must not
/// (docs/import.md, "What import reads"): a symbolic link is never followed; and when running as root, a file is
/// read only if it is owned by the owner of the directory it is in and that directory is not writable by anyone
/// else, so a user cannot hand root a file they could not read themselves (a hard link to /etc/shadow, a file
/// dropped into a shared directory).
pub(crate) fn refusal(p: &Path, m: &fs::Metadata) -> Option<String> {
    if m.file_type().is_symlink() {
        return Some("a symbolic link: import never follows links inside the tree it reads".into());
    }
    if !rustix::process::geteuid().is_root() {
        return None; // the kernel already checks what this user may read
    }
    let dir = p.parent()?;
    let d = match fs::symlink_metadata(dir) {
        Ok(d) => d,
        Err(e) => return Some(format!("cannot check its directory: {e}")),
    };
    if m.uid() != d.uid() {
        return Some(format!(
            "owned by uid {}, not by the owner of its directory (uid {}): not read as root",
            m.uid(),
            d.uid()
        ));
    }
    if d.mode() & 0o022 != 0 {
        return Some("its directory is writable by other users: not read as root".into());
    }
    None
}

/// Every regular file under `path` (or `path` itself), in sorted order, dot files left out. Directories are
/// entered; symbolic links inside the tree (to files or directories) are never followed, and are reported in
/// `skipped` with everything that cannot be listed or must not be read (see [`refusal`]). `path` itself is taken
/// as named: a link there is the invoker's choice.
pub(crate) fn files_under(path: &Path, skipped: &mut Vec<Skipped>) -> Vec<(PathBuf, fs::Metadata)> {
    let mut out = Vec::new();
    // The named path may be a link: read what it names, under its real name, so that O_NOFOLLOW applies after.
    let named = match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    };
    match fs::metadata(&named) {
        Ok(m) if m.is_file() => out.push((named, m)),
        Ok(m) if m.is_dir() => walk(&named, &mut out, skipped),
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
            Ok(m) if m.file_type().is_symlink() => {
                skipped.push(Skipped::new(p.display(), refusal(&p, &m).unwrap_or_default()))
            }
            Ok(m) if m.is_dir() => walk(&p, out, skipped),
            Ok(m) if m.is_file() => match refusal(&p, &m) {
                Some(why) => skipped.push(Skipped::new(p.display(), why)),
                None => out.push((p, m)),
            },
            Ok(_) => {}
            Err(e) => skipped.push(Skipped::new(p.display(), format!("cannot read: {e}"))),
        }
    }
}
