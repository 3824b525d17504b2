//! `export`: hands held messages over as files, for a user, an analyst or another tool.
//!
//! - `eml`: `<id>.eml` holds the original bytes exactly, `<id>.json` what the index knows (envelope, verdict,
//!   times, recipients and their states; the `show --json` object).
//! - `mbox`: one mboxrd file (`quarantine-<time>.mbox`, or `quarantine-<time>-N.mbox` when that name is taken
//!   by an export in the same second): each message after a `From ` line carrying the envelope
//!   sender and the received time, every line matching `^>*From ` quoted with one more `>`, and a blank line after
//!   it; beside it `<same stem>.jsonl` with one index record per message, in the same order, which `import
//!   --format mbox` reads back (envelope, verdict, scanner).
//!
//! # Invariants
//! - An existing file is never overwritten: every file is created with `O_EXCL` (mode 0600: exports hold malware
//!   and private mail), and a collision is reported for that message.
//! - Only verified bytes are written: each original is read whole through [`Store::original`], which checks it
//!   against its hash, before its file is created. A corrupt or missing blob is reported and counted, and the
//!   export goes on with the rest.
//! - One audit row (`action = "export"`) records the selection and the counts, in its own write transaction after
//!   the files are written and fsynced.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rusqlite::TransactionBehavior;
use serde::Serialize;

use crate::audit::{self, AuditEntry};
use crate::durable;
use crate::error::{Error, Result};
use crate::message::MessageRecord;
use crate::progress::Progress;
use crate::select::Selector;
use crate::state::AuditAction;
use crate::store::Store;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Eml,
    Mbox,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Eml => "eml",
            Format::Mbox => "mbox",
        }
    }
}

/// What to export where, and who asks.
pub struct ExportRequest<'a> {
    pub dir: &'a Path,
    pub format: Format,
    pub actor: &'a str,
    pub reason: Option<&'a str>,
    /// The selection as the person gave it, for the audit row.
    pub selection: serde_json::Value,
}

#[derive(Clone, Debug, Serialize)]
pub struct ExportFailure {
    pub id: String,
    pub error: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ExportReport {
    pub matched: u64,
    pub exported: u64,
    /// Original bytes written.
    pub bytes: u64,
    /// Files created, in order.
    pub files: Vec<PathBuf>,
    pub failed: Vec<ExportFailure>,
}

impl Store {
    /// Exports every message matching `sel` (newest first) into `req.dir`, which is created (0700) if missing.
    pub fn export(&mut self, sel: &Selector, req: &ExportRequest, progress: &dyn Progress) -> Result<ExportReport> {
        let records = self.select(sel, None)?;
        let mut report = ExportReport { matched: records.len() as u64, ..Default::default() };
        if !records.is_empty() {
            make_dir(req.dir)?;
            progress.start("exporting", records.len() as u64);
            let written = match req.format {
                Format::Eml => self.export_eml(&records, req.dir, &mut report, progress),
                Format::Mbox => self.export_mbox(&records, req.dir, &mut report, progress),
            };
            progress.finish();
            written?;
            durable::fsync_dir(req.dir)?;
        }
        let e = crate::index::sql_err(&self.index_path);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
        let counts = serde_json::json!({
            "matched": report.matched,
            "exported": report.exported,
            "failed": report.failed.len(),
            "bytes": report.bytes,
            "format": req.format.name(),
            "to": req.dir.display().to_string(),
        });
        audit::record(
            &tx,
            &AuditEntry {
                actor: req.actor,
                action: AuditAction::Export,
                selection: req.selection.clone(),
                counts,
                reason: req.reason,
            },
        )
        .map_err(&e)?;
        tx.commit().map_err(&e)?;
        Ok(report)
    }

    fn export_eml(
        &self,
        records: &[MessageRecord],
        dir: &Path,
        report: &mut ExportReport,
        progress: &dyn Progress,
    ) -> Result<()> {
        for rec in records {
            let outcome = self.original(rec).and_then(|bytes| {
                let eml = dir.join(format!("{}.eml", rec.id));
                let json = dir.join(format!("{}.json", rec.id));
                let mut meta = serde_json::to_vec_pretty(rec).map_err(|e| Error::Invalid(e.to_string()))?;
                meta.push(b'\n');
                write_new(&[(&eml, &bytes), (&json, &meta)])?;
                report.files.extend([eml, json]);
                Ok(bytes.len() as u64)
            });
            match outcome {
                Ok(n) => {
                    report.exported += 1;
                    report.bytes += n;
                }
                Err(e) => report.failed.push(ExportFailure { id: rec.id.clone(), error: e.to_string() }),
            }
            progress.advance(1);
        }
        Ok(())
    }

    fn export_mbox(
        &self,
        records: &[MessageRecord],
        dir: &Path,
        report: &mut ExportReport,
        progress: &dyn Progress,
    ) -> Result<()> {
        let (mbox_path, mbox_file, meta_path, meta_file) = create_mbox_pair(dir)?;
        report.files.extend([mbox_path.clone(), meta_path.clone()]);
        let mut mbox = BufWriter::new(mbox_file);
        let mut meta = BufWriter::new(meta_file);
        let mut buf = Vec::new();
        for rec in records {
            match self.original(rec) {
                Ok(bytes) => {
                    buf.clear();
                    quarantine_mail::mboxrd::entry(&rec.from, rec.received_us, &bytes, &mut buf);
                    mbox.write_all(&buf).map_err(Error::io("write", &mbox_path))?;
                    serde_json::to_writer(&mut meta, rec).map_err(|e| Error::io("write", &meta_path)(e.into()))?;
                    meta.write_all(b"\n").map_err(Error::io("write", &meta_path))?;
                    report.exported += 1;
                    report.bytes += bytes.len() as u64;
                }
                Err(e) => report.failed.push(ExportFailure { id: rec.id.clone(), error: e.to_string() }),
            }
            progress.advance(1);
        }
        finish(mbox, &mbox_path)?;
        finish(meta, &meta_path)?;
        Ok(())
    }
}

/// Creates the export directory (0700, parents too) if it does not exist.
fn make_dir(dir: &Path) -> Result<()> {
    durable::create_private_dir(dir)
}

/// How many names [`create_mbox_pair`] tries before giving up (a directory with that many exports in one second
/// is not a race any more).
const MBOX_NAME_TRIES: u32 = 1000;

/// Creates `quarantine-<time>.mbox` and its `quarantine-<time>.jsonl` beside it, both new. When either name is
/// taken (another export in the same second, or a file someone left), tries `quarantine-<time>-2`, `-3`, ...:
/// a second export never fails or overwrites because of the first.
fn create_mbox_pair(dir: &Path) -> Result<(PathBuf, File, PathBuf, File)> {
    let base = format!("quarantine-{}", chrono::Local::now().format("%Y%m%d-%H%M%S"));
    for n in 1..=MBOX_NAME_TRIES {
        let stem = if n == 1 { base.clone() } else { format!("{base}-{n}") };
        let mbox_path = dir.join(format!("{stem}.mbox"));
        let meta_path = dir.join(format!("{stem}.jsonl"));
        let mbox_file = match try_create_new(&mbox_path)? {
            Some(f) => f,
            None => continue,
        };
        match try_create_new(&meta_path) {
            Ok(Some(meta_file)) => return Ok((mbox_path, mbox_file, meta_path, meta_file)),
            Ok(None) => durable::remove_quietly(&mbox_path),
            Err(e) => {
                durable::remove_quietly(&mbox_path);
                return Err(e);
            }
        }
    }
    Err(Error::Invalid(format!("{}: no free name for an mbox export after {MBOX_NAME_TRIES} tries", dir.display())))
}

/// [`create_new`], with `None` when the name is taken.
fn try_create_new(path: &Path) -> Result<Option<File>> {
    match durable::create_private_file(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(Error::io("create", path)(e)),
    }
}

fn create_new(path: &Path) -> Result<File> {
    durable::create_private_file(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::Invalid(format!("{} already exists; not overwritten", path.display()))
        } else {
            Error::io("create", path)(e)
        }
    })
}

/// Creates all of `files` (none may exist), writes and fsyncs them; on any failure removes what it created, so a
/// message is exported whole or not at all.
fn write_new(files: &[(&Path, &[u8])]) -> Result<()> {
    let mut created: Vec<(&Path, File)> = Vec::new();
    let result = (|| {
        for (path, _) in files {
            created.push((path, create_new(path)?));
        }
        for ((path, bytes), (_, f)) in files.iter().zip(created.iter_mut()) {
            f.write_all(bytes).map_err(Error::io("write", path))?;
            durable::fsync_file(f, path)?;
        }
        Ok(())
    })();
    if result.is_err() {
        for (path, _) in &created {
            durable::remove_quietly(path);
        }
    }
    result
}

fn finish(mut w: BufWriter<File>, path: &Path) -> Result<()> {
    w.flush().map_err(Error::io("write", path))?;
    let f = w.into_inner().map_err(|e| Error::io("write", path)(e.into_error()))?;
    durable::fsync_file(&f, path)
}
