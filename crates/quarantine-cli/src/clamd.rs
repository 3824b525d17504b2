//! clamd's `VERSION` (engine and signature-database version, e.g. `ClamAV 1.4.1/27475/Mon Dec  1 09:31:28 2026`)
//! for a hold's provenance: which signature update called this message a virus. Asked over clamd's socket with a
//! time limit of a few milliseconds and cached for a few seconds under the store, so a hold never waits on clamd
//! and never fails because of it: when clamd is away the field is simply empty.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::config::{defaults, Clamd};

/// The cache's name under `spool/` (a dot file: ingest skips it).
const CACHE: &str = "clamd-version";

/// clamd's version, from the cache or from clamd; `None` when clamd does not answer in time.
pub fn version(store: &Path, clamd: &Clamd) -> Option<String> {
    if let Some(v) = quarantine_store::probe_cached(store, CACHE, defaults::CLAMD_VERSION_CACHE) {
        return (!v.is_empty()).then_some(v);
    }
    let v = ask(clamd, defaults::CLAMD_TIMEOUT).unwrap_or_default();
    // Silence is cached too: a stopped clamd costs one short wait per cache period, not one per hold.
    quarantine_store::probe_remember(store, CACHE, &v);
    (!v.is_empty()).then_some(v)
}

/// `zVERSION\0` → `ClamAV ...\0`, within `limit` for connecting and for the answer.
fn ask(clamd: &Clamd, limit: Duration) -> std::io::Result<String> {
    let mut reply = Vec::new();
    match clamd {
        Clamd::Unix(path) => {
            let mut s = std::os::unix::net::UnixStream::connect(path)?;
            s.set_read_timeout(Some(limit))?;
            s.set_write_timeout(Some(limit))?;
            s.write_all(b"zVERSION\0")?;
            s.take(512).read_to_end(&mut reply)?;
        }
        Clamd::Tcp(addr) => {
            use std::net::ToSocketAddrs;
            let sa = addr.to_socket_addrs()?.next().ok_or(std::io::ErrorKind::NotFound)?;
            let mut s = std::net::TcpStream::connect_timeout(&sa, limit)?;
            s.set_read_timeout(Some(limit))?;
            s.set_write_timeout(Some(limit))?;
            s.write_all(b"zVERSION\0")?;
            s.take(512).read_to_end(&mut reply)?;
        }
    }
    let text = String::from_utf8_lossy(&reply);
    // One line of printable text: it goes into the index and every listing.
    let v: String = text.trim_end_matches('\0').trim().chars().filter(|c| !c.is_control()).take(200).collect();
    if v.starts_with("ClamAV") {
        Ok(v)
    } else {
        Err(std::io::Error::other("not a clamd VERSION reply"))
    }
}
