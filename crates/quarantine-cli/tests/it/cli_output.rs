//! What reaches a person: hostile headers never drive a terminal, a closed pipe never panics a command half way,
//! and a permission problem is named as one (not as "not a store").

use std::process::Stdio;

use quarantine_testkit::{Input, Store};

use crate::{store, BIN};

const HOSTILE: &[u8] =
    b"Subject: \x1b[2J\x1b]0;pwned\x07 evil \xe2\x80\xae txt.exe\r\nFrom: a@example.org\r\n\r\nbody\r\n";

/// `hold --verdict V --from a@example.org -- b@example.net` with `body`; asserted, returns the id.
fn hold(s: &Store, body: &[u8]) -> String {
    s.hold_ok(body, &["--verdict", "V", "--from", "a@example.org", "--", "b@example.net"])
}

#[test]
fn headers_and_raw_are_escaped_on_a_terminal_and_exact_in_a_pipe() {
    let s = store();
    let id = hold(&s, HOSTILE);
    for flag in ["--headers", "--raw"] {
        // `script` gives the command a real terminal as stdout.
        let cmdline = format!("{BIN} --store {} show {id} {flag}", s.root.display());
        let out = s
            .program(quarantine_testkit::require("script", "bsdutils"))
            .args(["-qc", &cmdline, "/dev/null"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains('\x1b') && !text.contains('\x07') && !text.contains('\u{202e}'), "{flag}: {text:?}");
        assert!(text.contains("\\x1b[2J"), "{flag}: {text:?}");
        let piped = s.cmd(&["show", &id, flag]).output().unwrap();
        let want: &[u8] = if flag == "--raw" { HOSTILE } else { &HOSTILE[..HOSTILE.len() - 6] };
        assert_eq!(piped.stdout, want, "{flag} in a pipe must be the exact bytes");
    }
}

#[test]
fn a_closed_pipe_never_panics_a_command() {
    let s = store();
    for i in 0..300 {
        hold(&s, format!("Subject: {i}\r\n\r\nx\r\n").as_bytes());
    }
    for args in [
        vec!["release", "--verdict", "V", "--dry-run", "--relay", "smtp://127.0.0.1:9"],
        vec!["verify"],
        vec!["freeze", "--reason", "x"],
    ] {
        let mut child = s.cmd(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
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
    let s = store();
    s.hold_ok(
        b"Subject: s\r\n\r\nx\r\n",
        &["--verdict", "V", "--scanner", "pmx", "--from", "a@example.org", "--", "b@example.net"],
    );
    for name in ["pmx", "PMX", "Pmx"] {
        let out = s.q(&["search", "--scanner", name, "--json"]);
        assert_eq!(out.ok().lines().count(), 1, "--scanner {name}");
    }
    let out = s.q(&["search", "--limit", "0"]);
    out.code_is(2, "--limit 0");
    assert!(out.stderr.contains("--limit"), "{}", out.brief());
}

#[test]
fn the_parsers_usage_errors_are_one_line_naming_the_problem() {
    // clap renders a paragraph, a usage and a tip; every other error of the tool is one `quarantine: ` line.
    let s = store();
    let cases: [(&[&str], &str); 8] = [
        (&["search", "--limit", "0"], "--limit"),
        (&["show"], "<ID>"),
        (&["release", "--rate", "abc"], "--rate"),
        (&["ho"], "'ho'; tip: some similar subcommands exist"),
        (&["stats", "--json", "--csv"], "--csv"),
        (&["search", "--bogus", "x"], "--bogus"),
        (&["freeze"], "--reason"),
        (&["search", "\x1b]52;c;x\x07"], "unexpected argument"),
    ];
    for (args, names) in cases {
        let out = s.q(args);
        out.code_is(2, &format!("{args:?}"));
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.brief());
        assert_eq!(out.stderr.matches('\n').count(), 1, "{args:?}: not one line: {}", out.brief());
        assert!(out.stderr.starts_with("quarantine: ") && out.stderr.contains(names), "{args:?}: {}", out.brief());
        assert!(!out.stderr.contains('\x1b'), "{args:?}: a control character printed raw: {}", out.brief());
    }
    // `quarantine` alone still shows the help (on stderr, exit 2), as clap does.
    let out = s.scratch.run::<&str>(&[], Input::Null);
    out.code_is(2, "no arguments");
    assert!(out.stderr.contains("Usage:") && out.stderr.lines().count() > 10, "{}", out.brief());
}
