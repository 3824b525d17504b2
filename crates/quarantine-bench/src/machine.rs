//! What the figures were measured on: CPUs, kernel, and the filesystem under the scratch directory (fsync cost is
//! a property of the filesystem and the device, so a figure without it means little).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug)]
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub kernel: String,
    pub fs_type: String,
    pub mount_point: PathBuf,
    pub fs_source: String,
    /// The 1-minute load average when the run started: other work on the machine moves fsync-bound figures.
    pub load_at_start: String,
}

impl Machine {
    pub fn probe(scratch: &Path) -> Machine {
        let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let cpu = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name") || l.starts_with("Model") || l.starts_with("cpu model"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = rustix::system::uname().release().to_string_lossy().into_owned();
        let (mount_point, fs_type, fs_source) =
            filesystem_of(scratch).unwrap_or_else(|| (PathBuf::from("?"), "unknown".into(), "unknown".into()));
        let load_at_start = fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next().map(str::to_string))
            .unwrap_or_else(|| "unknown".into());
        Machine { nproc, cpu, kernel, fs_type, mount_point, fs_source, load_at_start }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "nproc": self.nproc,
            "cpu": self.cpu,
            "kernel": self.kernel,
            "fs_type": self.fs_type,
            "mount_point": self.mount_point,
            "fs_source": self.fs_source,
            "load_at_start": self.load_at_start,
        })
    }
}

/// The mount holding `path` (longest mount point that is a prefix of it), from /proc/self/mountinfo:
/// (mount point, filesystem type, source device).
fn filesystem_of(path: &Path) -> Option<(PathBuf, String, String)> {
    let path = fs::canonicalize(path).ok()?;
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(PathBuf, String, String)> = None;
    for line in info.lines() {
        // id parent major:minor root mount-point options [optional fields...] - fstype source super-options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mount_point = PathBuf::from(unescape(mount_point));
        let mut r = right.split(' ');
        let fs_type = r.next().unwrap_or("unknown").to_string();
        let source = unescape(r.next().unwrap_or(""));
        if path.starts_with(&mount_point)
            && best.as_ref().is_none_or(|(b, _, _)| mount_point.components().count() >= b.components().count())
        {
            best = Some((mount_point, fs_type, source));
        }
    }
    best
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Today's UTC date as YYYY-MM-DD (civil-from-days, H. Hinnant), without a date crate.
pub fn today_utc() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo() {
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape(r"/x\04"), r"/x\04");
    }

    #[test]
    fn root_has_a_filesystem() {
        let (mp, ty, _) = filesystem_of(Path::new("/")).unwrap();
        assert_eq!(mp, PathBuf::from("/"));
        assert!(!ty.is_empty());
    }

    #[test]
    fn date_looks_like_a_date() {
        let d = today_utc();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"));
    }
}
