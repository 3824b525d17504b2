//! `--format eml`: one message per file, byte for byte; a directory is read recursively (dot files left out).

use std::path::Path;
use std::sync::Arc;

use super::Skipped;
use super::{files_under, Unit, UnitKind};

pub(crate) fn units(path: &Path, skipped: &mut Vec<Skipped>) -> Vec<Unit> {
    files_under(path, skipped).into_iter().map(|(p, m)| Unit::file(Arc::from(p), UnitKind::File, &m)).collect()
}
