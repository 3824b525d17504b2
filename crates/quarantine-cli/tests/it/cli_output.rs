//! What reaches a person: hostile headers never drive a terminal, a closed pipe never panics a command half way,
//! and a permission problem is named as one (not as "not a store").

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::BIN;
const HOSTILE: &[u8] =
    b"Subject: \x1b[2J\x1b]0;pwned\x07 evil \xe2\x80\xae txt.exe\r\nFrom: a@example.org\r\n\r\nbody\r\n";

fn store() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("s");
    assert!(crate::quarantine().arg("--store").arg(&s).arg("init").output().unwrap().status.success());
    (dir, s)
}

fn hold(s: &Path, body: &[u8]) -> String {
    let mut c = crate::quarantine()
        .arg("--store")
        .arg(s)
        .args(["hold", "--verdict", "V", "--from", "a@example.org", "--", "b@example.net"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(body).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn headers_and_raw_are_escaped_on_a_terminal_and_exact_in_a_pipe() {
    let (_d, s) = store();
    let id = hold(&s, HOSTILE);
    for flag in ["--headers", "--raw"] {
        // `script` gives the command a real terminal as stdout.
        let cmdline = format!("{BIN} --store {} show {id} {flag}", s.display());
        let out = crate::program(quarantine_testkit::require("script", "bsdutils"))
            .args(["-qc", &cmdline, "/dev/null"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains('\x1b') && !text.contains('\x07') && !text.contains('\u{202e}'), "{flag}: {text:?}");
        assert!(text.contains("\\x1b[2J"), "{flag}: {text:?}");
        let piped = crate::quarantine().arg("--store").arg(&s).args(["show", &id, flag]).output().unwrap();
        let want: &[u8] = if flag == "--raw" { HOSTILE } else { &HOSTILE[..HOSTILE.len() - 6] };
        assert_eq!(piped.stdout, want, "{flag} in a pipe must be the exact bytes");
    }
}

#[test]
fn a_closed_pipe_never_panics_a_command() {
    let (_d, s) = store();
    for i in 0..300 {
        hold(&s, format!("Subject: {i}\r\n\r\nx\r\n").as_bytes());
    }
    for args in [
        vec!["release", "--verdict", "V", "--dry-run", "--relay", "smtp://127.0.0.1:9"],
        vec!["verify"],
        vec!["freeze", "--reason", "x"],
    ] {
        let mut child = crate::quarantine()
            .arg("--store")
            .arg(&s)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader goes away at once, like `| head -0`
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_ne!(out.status.code(), Some(101), "{args:?}");
    }
}

#[test]
fn a_permission_problem_is_named_as_one() {
    quarantine_testkit::env::require_root("to act as another user");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let s = dir.path().join("s");
    assert!(crate::quarantine().arg("--store").arg(&s).arg("init").output().unwrap().status.success());
    // The store belongs to root; `nobody` (a wrong `user=` in master.cf) cannot use it.
    let out = crate::program(quarantine_testkit::require("setpriv", "util-linux"))
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN, "--store"])
        .arg(&s)
        .args(["hold", "--verdict", "V", "--from", "a@b", "--", "c@d"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(75));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Permission denied") && err.contains("owner"), "{err}");
    assert!(!err.contains("not a quarantine store"), "{err}");
}

#[test]
fn scanner_names_compare_case_insensitively_and_limit_zero_is_refused() {
    let (_d, s) = store();
    let mut c = crate::quarantine()
        .arg("--store")
        .arg(&s)
        .args(["hold", "--verdict", "V", "--scanner", "pmx", "--from", "a@example.org", "--", "b@example.net"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(b"Subject: s\r\n\r\nx\r\n").unwrap();
    assert!(c.wait_with_output().unwrap().status.success());
    for name in ["pmx", "PMX", "Pmx"] {
        let out =
            crate::quarantine().arg("--store").arg(&s).args(["search", "--scanner", name, "--json"]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1, "--scanner {name}");
    }
    let out = crate::quarantine().arg("--store").arg(&s).args(["search", "--limit", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--limit"));
}
