//! Peak resident set size of one child process.
//!
//! `getrusage(RUSAGE_CHILDREN).ru_maxrss` is the largest peak RSS among all children a process has waited for, so
//! it is read in a tiny helper process (`quarantine-bench rss-of`) whose only child is the measured command.
//! Measuring from the benchmark process itself would mix in earlier children and, since the child is spawned
//! with vfork semantics, the benchmark's own (large) footprint before exec.

use std::ffi::OsString;
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

/// The `rss-of` subcommand: runs `command` with stdin from `stdin`, prints its peak RSS in KiB on stdout.
pub fn rss_of_main(stdin: &Path, command: &[OsString]) -> Result<(), String> {
    let input = File::open(stdin).map_err(|e| format!("{}: {e}", stdin.display()))?;
    let (prog, args) = command.split_first().ok_or("rss-of: no command")?;
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::from(input))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{}: {e}", Path::new(prog).display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            Path::new(prog).display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let kib = children_maxrss_kib().ok_or("getrusage failed")?;
    println!("{kib}");
    Ok(())
}

/// `ru_maxrss` of all waited-for children, in KiB (Linux reports it in KiB).
fn children_maxrss_kib() -> Option<u64> {
    let ru = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).ok()?;
    Some(u64::try_from(ru.max_rss()).unwrap_or(0))
}

/// Runs `command` under the `rss-of` helper (`helper` is a copy of this executable) and returns the child's
/// peak RSS in KiB.
pub fn measure(helper: &Path, command: &[OsString], stdin: &Path) -> Result<u64, String> {
    let out = Command::new(helper)
        .arg("rss-of")
        .arg("--stdin")
        .arg(stdin)
        .arg("--")
        .args(command)
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("running rss-of: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|e| format!("rss-of printed garbage: {e}"))
}
