//! A few seconds' memory for facts `hold` asks a peer for (clamd's `VERSION`): every hold is a new process, so the
//! answer is cached in a small file under `spool/`, and a hold within the cache's age reads it instead of asking.
//! Written without fsync (see [`durable::replace_volatile`]); never part of what a hold acknowledges.

use std::path::Path;
use std::time::Duration;

use crate::durable::{self, Owner};
use crate::spool::SPOOL_DIR;

/// The cached value of `name`, if written less than `max_age` ago. `Some("")` is a cached "no answer".
pub fn cached(store: &Path, name: &str, max_age: Duration) -> Option<String> {
    let path = store.join(SPOOL_DIR).join(format!(".{name}.cache"));
    let meta = std::fs::metadata(&path).ok()?;
    let age = meta.modified().ok()?.elapsed().unwrap_or(Duration::MAX);
    if age > max_age {
        return None;
    }
    let v = std::fs::read_to_string(&path).ok()?;
    Some(v.trim_end_matches('\n').to_string())
}

/// Remembers `value` for `name` (best effort: a failure only means the next hold asks again).
pub fn remember(store: &Path, name: &str, value: &str) {
    let dir = store.join(SPOOL_DIR);
    if let Ok(owner) = Owner::of(store) {
        let _ = durable::replace_volatile(&dir, &format!(".{name}.cache"), value.as_bytes(), &owner);
    }
}
