//! `--format amavis`: amavisd-new's local quarantine files (`$QUARANTINEDIR/spam-AbC123xyz.gz`,
//! `virus-AbC123xyz`, `banned-…`, `badh-…`, also below `$quarantine_subdir_levels` subdirectories).
//!
//! Each file is the original message with amavis's envelope headers prepended: `X-Envelope-From: <sender>` and
//! one folded, comma-separated `X-Envelope-To: <r1>,<r2>`, often with `X-Quarantine-ID` and `X-Amavis-Alert`.
//! The file's bytes are held exactly as found (those headers included: they are part of what amavis kept), after
//! gunzipping the files amavis wrote compressed. `X-Amavis-Alert` becomes the reason unless `--reason` is given.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use super::envelope::{first, Field};
use super::Skipped;
use super::{files_under, Unit, UnitKind};

pub(crate) fn units(path: &Path, skipped: &mut Vec<Skipped>) -> Vec<Unit> {
    files_under(path, skipped).into_iter().map(|(p, m)| Unit::file(Arc::from(p), UnitKind::Amavis, &m)).collect()
}

/// The file's message bytes: gunzipped when the file starts with the gzip magic, whatever its name.
pub(crate) fn open(f: File) -> io::Result<Box<dyn Read + Send>> {
    let mut r = BufReader::with_capacity(64 * 1024, f);
    let gzip = r.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    if !gzip {
        return Ok(Box::new(r));
    }
    #[cfg(feature = "gzip")]
    return Ok(Box::new(flate2::bufread::MultiGzDecoder::new(r)));
    #[cfg(not(feature = "gzip"))]
    Err(io::Error::other("a gzip-compressed amavis file, and this build has no gzip (quarantine-mail feature `gzip`)"))
}

/// What amavis said about the message, for the reason column.
pub fn reason(fields: &[Field]) -> Option<String> {
    first(fields, "x-amavis-alert").filter(|v| !v.is_empty()).map(|v| v.chars().take(512).collect())
}
