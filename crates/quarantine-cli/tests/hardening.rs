//! Issue 13: the hardening items (hold's exit codes, ownership, corrupt blobs, selectors, escaping, limits, panics).
//! Self-contained: its own small runner for the real binary, a hermetic environment, a throw-away store per test.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_quarantine");

#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `quarantine` with nothing from the host: no config, no store variable, only PATH (and TZ=UTC).
fn cmd<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()))
        .env("TZ", "UTC")
        .env("QUARANTINE_CONFIG", "/dev/null")
        .env("USER", "tester")
        .args(args);
    c
}

/// Runs `c` with `input` on stdin; kills it (and fails) after 60 s.
fn run_cmd(mut c: Command, input: &[u8]) -> Out {
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let w = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let so = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut so, &mut v);
        v
    });
    let se = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut se, &mut v);
        v
    });
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the command hung");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = w.join();
    use std::os::unix::process::ExitStatusExt;
    Out {
        code: status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        stdout: String::from_utf8_lossy(&so.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&se.join().unwrap()).into_owned(),
    }
}

fn q<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Out {
    run_cmd(cmd(args), b"")
}

struct Store {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Store {
    fn new() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let o = q(&["--store".as_ref(), path.as_os_str(), "init".as_ref()]);
        assert_eq!(o.code, 0, "{o:?}");
        Store { _dir: dir, path }
    }

    fn run(&self, args: &[&str]) -> Out {
        self.run_in(args, b"")
    }

    fn run_in(&self, args: &[&str], input: &[u8]) -> Out {
        let mut c = cmd(&["--store".as_ref(), self.path.as_os_str()]);
        c.args(args);
        run_cmd(c, input)
    }

    fn hold(&self, extra: &[&str], body: &[u8]) -> String {
        let mut args = vec!["hold", "--verdict", "SPAM", "--from", "s@example.org"];
        args.extend_from_slice(extra);
        if !extra.contains(&"--") {
            args.extend_from_slice(&["--", "r@example.org"]);
        }
        let o = self.run_in(&args, body);
        assert_eq!(o.code, 0, "{o:?}");
        o.stdout.trim().to_string()
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn mail(subject: &str) -> Vec<u8> {
    format!("From: a@example.org\r\nTo: r@example.org\r\nSubject: {subject}\r\n\r\nbody {subject}\r\n").into_bytes()
}

// ---- 1. every argv with `hold` in it exits 75 unless the message was held ----

#[test]
fn hold_help_version_and_global_option_errors_exit_75() {
    let s = Store::new();
    let st = s.path.to_str().unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["hold", "-h"],
        vec!["hold", "--help"],
        vec!["hold", "--verdict", "X", "--from", "a@b", "-h", "--", "c@d"],
        vec!["-h", "hold", "--verdict", "X", "--from", "a@b", "--", "c@d"],
        vec!["--help", "hold"],
        vec!["--version", "hold", "--verdict", "X", "--from", "a@b", "--", "c@d"],
        vec!["-V", "hold"],
        vec!["hold", "--version"],
        vec!["--stor", st, "hold", "--verdict", "X", "--from", "a@b", "--", "c@d"],
        vec!["--store", "hold", "--verdict", "X", "--from", "a@b", "--", "c@d"],
        vec!["--store"],
        vec!["--bogus", "hold"],
        vec!["--config", "/dev/null", "--stor=x", "hold"],
        vec!["help", "hold"],
        vec!["hold"],
        vec!["hold", "--verdict", "X", "--from", "a@b", "--nope", "--", "c@d"],
    ];
    for args in cases {
        let o = run_cmd(cmd(&args), b"Subject: x\r\n\r\nx\r\n");
        // `--store` with no value has no `hold` word: plain usage error.
        if args == ["--store"] {
            assert_eq!(o.code, 2, "{args:?}: {o:?}");
            continue;
        }
        assert_eq!(o.code, 75, "{args:?}: {o:?}");
        assert!(o.stdout.is_empty(), "{args:?} printed on stdout: {o:?}");
        assert_eq!(o.stderr.trim_end().lines().count(), 1, "{args:?}: one line: {o:?}");
        assert!(o.stderr.starts_with("quarantine hold: "), "{args:?}: {o:?}");
    }
    // Nothing was held.
    let o = s.run(&["search", "--json"]);
    assert_eq!(o.stdout, "", "{o:?}");
}

#[test]
fn non_hold_help_still_exits_0() {
    for args in [vec!["-h"], vec!["search", "--help"], vec!["--version"]] {
        let o = q(&args);
        assert_eq!(o.code, 0, "{args:?}: {o:?}");
    }
}

// ---- 2. a store whose group is not one of its owner's groups ----

/// Runs the binary as a throw-away uid/gid with no supplementary groups.
fn as_uid(uid: u32, gid: u32, args: &[&std::ffi::OsStr], input: &[u8]) -> Out {
    let mut c = Command::new("setpriv");
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()))
        .env("QUARANTINE_CONFIG", "/dev/null")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg(BIN)
        .args(args);
    run_cmd(c, input)
}

#[test]
fn owner_whose_store_group_is_foreign_can_init_and_hold() {
    if !is_root() {
        eprintln!("skipped: needs root to make a throw-away owner");
        return;
    }
    let (uid, gid, foreign) = (54_321u32, 54_321u32, 54_399u32);
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = dir.path().join("store");
    // `install -d -o quarantine DIR`: the owner is right, the group is root's (or anyone's but the owner's).
    std::fs::create_dir(&store).unwrap();
    std::os::unix::fs::chown(&store, Some(uid), Some(foreign)).unwrap();
    let st = store.as_os_str();
    let o = as_uid(uid, gid, &["--store".as_ref(), st, "init".as_ref()], b"");
    assert_eq!(o.code, 0, "init by the owner: {o:?}");
    let hold: Vec<&std::ffi::OsStr> = ["--store".as_ref(), st, "hold".as_ref(), "--verdict".as_ref(), "SPAM".as_ref()]
        .into_iter()
        .chain(["--from", "a@b.example", "--", "c@d.example"].map(std::ffi::OsStr::new))
        .collect();
    let o = as_uid(uid, gid, &hold, b"Subject: x\r\n\r\nx\r\n");
    assert_eq!(o.code, 0, "hold by the owner: {o:?}");
    let o = as_uid(uid, gid, &["--store".as_ref(), st, "verify".as_ref(), "--deep".as_ref()], b"");
    assert_eq!(o.code, 0, "{o:?}");
    // Root's commands still hand every file to the store's owner and group.
    let o = run_cmd(cmd(&hold), b"Subject: y\r\n\r\ny\r\n");
    assert_eq!(o.code, 0, "hold by root: {o:?}");
    let o = as_uid(uid, gid, &hold, b"Subject: z\r\n\r\nz\r\n");
    assert_eq!(o.code, 0, "hold by the owner after root: {o:?}");
    fn walk(p: &Path, uid: u32) {
        for e in std::fs::read_dir(p).unwrap() {
            let p = e.unwrap().path();
            assert_eq!(std::fs::symlink_metadata(&p).unwrap().uid(), uid, "{}", p.display());
            if p.is_dir() {
                walk(&p, uid);
            }
        }
    }
    walk(&store, uid);
}

// ---- 3. a hold of bytes whose blob exists but is corrupt replaces the blob ----

fn blob_paths(store: &Path) -> Vec<PathBuf> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(p).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut v = Vec::new();
    walk(&store.join("blobs"), &mut v);
    v
}

#[test]
fn hold_replaces_a_corrupt_existing_blob_with_the_good_bytes() {
    let s = Store::new();
    let body = mail("dedup me");
    let first = s.hold(&[], &body);
    let blobs = blob_paths(&s.path);
    assert_eq!(blobs.len(), 1);
    for damage in [b"not zstd at all".to_vec(), Vec::new()] {
        std::fs::write(&blobs[0], &damage).unwrap();
        let id = s.hold(&["--", "other@example.org"], &body);
        let o = s.run(&["show", &id, "--raw"]);
        assert_eq!(o.code, 0, "the new hold must be readable: {o:?}");
        assert_eq!(o.stdout.as_bytes(), &body[..]);
        // The first message shares the blob and is readable again too.
        let o = s.run(&["show", &first, "--raw"]);
        assert_eq!(o.code, 0, "{o:?}");
        assert_eq!(s.run(&["verify", "--deep"]).code, 0);
    }
}

// ---- 4. empty selector values are usage errors ----

#[test]
fn empty_selector_values_are_usage_errors_for_every_flag() {
    let s = Store::new();
    s.hold(&[], &mail("keep me"));
    let flags = [
        "--id",
        "--rcpt",
        "--from",
        "--header-from",
        "--subject",
        "--message-id",
        "--verdict",
        "--scanner",
        "--attachment",
        "--state",
    ];
    for flag in flags {
        for value in ["", "  "] {
            for cmdline in [
                vec!["purge", "--yes", flag, value],
                vec!["search", flag, value],
                vec!["release", "--dry-run", flag, value],
                vec!["export", "--to", "/nonexistent/x", flag, value],
            ] {
                let o = s.run(&cmdline);
                assert_eq!(o.code, 2, "{cmdline:?}: {o:?}");
                assert!(o.stderr.contains(flag), "{cmdline:?} names the flag: {o:?}");
            }
        }
    }
    let o = s.run(&["search", "--json"]);
    assert_eq!(o.stdout.lines().count(), 1, "nothing was purged: {o:?}");
}

// ---- 5. an --id that matches nothing is exit 1; show echoes the id as typed ----

#[test]
fn unknown_id_is_an_error_for_release_export_purge() {
    let s = Store::new();
    let id = s.hold(&[], &mail("known"));
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("out");
    let to = to.to_str().unwrap();
    for args in [
        vec!["release", "--id", "NOSUCH0000", "--sendmail", "/bin/true", "--yes"],
        vec!["release", "--id", "NOSUCH0000", "--dry-run"],
        vec!["export", "NOSUCH0000", "--to", to],
        vec!["export", "--id", "NOSUCH0000", "--to", to],
        vec!["purge", "--id", "NOSUCH0000", "--yes"],
        vec!["purge", "--id", "NOSUCH0000", "--dry-run"],
        vec!["purge", "--id", &id, "--id", "NOSUCH0000", "--yes"],
    ] {
        let o = s.run(&args);
        assert_eq!(o.code, 1, "{args:?}: {o:?}");
        assert!(o.stderr.contains("NOSUCH0000"), "{args:?}: {o:?}");
    }
    // Nothing was purged by the mixed one.
    assert_eq!(s.run(&["show", &id]).code, 0);
    // show echoes what was typed (lower case, look-alikes), escaped.
    let o = s.run(&["show", "nosuchlo1x"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("nosuchlo1x"), "{o:?}");
    let o = s.run(&["show", "x\x1b]52;c;aGk=\x07y"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(!o.stderr.contains('\x1b') && !o.stderr.contains('\x07'), "{o:?}");
    assert!(o.stderr.contains("x\\x1b]52;c;aGk=\\x07y"), "{o:?}");
}

// ---- 6. a verdict with glob characters can be selected exactly ----

#[test]
fn verdict_with_glob_characters_is_selected_exactly_with_backslash() {
    let s = Store::new();
    let hold_v = |v: &str, subj: &str| {
        let o = s.run_in(&["hold", "--verdict", v, "--from", "a@b.example", "--", "c@d.example"], &mail(subj));
        assert_eq!(o.code, 0, "{o:?}");
        o.stdout.trim().to_string()
    };
    let star = hold_v("Foo*", "one");
    let _fooby = hold_v("Foobar", "two");
    let q_ = hold_v("Wh?[x]", "three");
    let back = hold_v("A\\B", "four");
    let ids = |v: &str| -> Vec<String> {
        let o = s.run(&["search", "--verdict", v, "--json"]);
        assert_eq!(o.code, 0, "{o:?}");
        o.stdout.lines().map(|l| l.split("\"id\":\"").nth(1).unwrap()[..10].to_string()).collect()
    };
    assert_eq!(ids("Foo\\*"), vec![star.clone()]);
    assert_eq!(ids("Foo*").len(), 2);
    assert_eq!(ids("Wh\\?\\[x]"), vec![q_.clone()]);
    assert_eq!(ids("Wh\\?\\[x]*"), vec![q_]);
    assert_eq!(ids("A\\\\B"), vec![back]);
    assert_eq!(ids("Fo\\o\\*"), vec![star]);
}

// ---- 7. short non-ASCII queries and raw 8-bit (Latin-1 / Windows-1252) headers ----

#[test]
fn text_search_finds_short_non_ascii_and_raw_latin1_headers() {
    let s = Store::new();
    let upper = s.hold(&[], "From: x@example.org\r\nSubject: ÉTÉ Ö\r\n\r\nx\r\n".as_bytes());
    let latin1 = s.hold(&[], b"From: J\xf6rg <j@example.org>\r\nSubject: Gr\xfc\xdfe \x80100\r\n\r\nx\r\n");
    let n = |args: &[&str]| {
        let mut a = vec!["search", "--json"];
        a.extend_from_slice(args);
        let o = s.run(&a);
        assert_eq!(o.code, 0, "{o:?}");
        o.stdout.lines().map(|l| l.split("\"id\":\"").nth(1).unwrap()[..10].to_string()).collect::<Vec<_>>()
    };
    assert_eq!(n(&["--subject", "é"]), vec![upper.clone()]);
    assert_eq!(n(&["--subject", "ö"]), vec![upper.clone()]);
    assert_eq!(n(&["--subject", "tÉ"]), vec![upper.clone()]);
    assert_eq!(n(&["--subject", "Grüße"]), vec![latin1.clone()]);
    assert_eq!(n(&["--subject", "GRÜSSE"]), Vec::<String>::new());
    assert_eq!(n(&["--subject", "€100"]), vec![latin1.clone()]);
    assert_eq!(n(&["--subject", "ü"]), vec![latin1.clone()]);
    assert_eq!(n(&["--header-from", "jörg"]), vec![latin1.clone()]);
    // With a narrowing selector the per-row check agrees.
    assert_eq!(n(&["--id", &latin1, "--subject", "GRÜ"]), vec![latin1]);
}

// ---- 8. import never follows symlinks, and as root reads only files their directory's owner owns ----

#[test]
fn import_skips_symlinks_and_foreign_files_and_reports_them() {
    let s = Store::new();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "Subject: SECRET-SHADOW\r\n\r\nroot:x\r\n").unwrap();
    let md = dir.path().join("Maildir");
    for d in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(md.join(d)).unwrap();
    }
    std::fs::write(md.join("cur/1700000000.ok:2,S"), mail("legit")).unwrap();
    std::os::unix::fs::symlink(&secret, md.join("cur/1700000001.link:2,S")).unwrap();
    // A linked Maildir++ subfolder, and a linked directory inside an eml tree.
    let other = dir.path().join("other");
    for d in ["cur", "new"] {
        std::fs::create_dir_all(other.join(d)).unwrap();
    }
    std::fs::write(other.join("cur/1700000002.x:2,S"), "Subject: SECRET-DIR\r\n\r\nx\r\n").unwrap();
    std::os::unix::fs::symlink(&other, md.join(".Linked")).unwrap();
    let root_only = is_root();
    if root_only {
        // A hard link to a root-owned file inside a user's Maildir, imported by root.
        let (uid, gid) = (54_321u32, 54_321u32);
        std::fs::hard_link(&secret, md.join("new/1700000003.hard")).unwrap();
        for p in [md.clone(), md.join("cur"), md.join("new"), md.join("tmp"), md.join("cur/1700000000.ok:2,S")] {
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid)).unwrap();
        }
    }
    let o =
        s.run(&["import", "--format", "maildir", "--verdict", "SPAM", "--rcpt", "r@example.org", md.to_str().unwrap()]);
    assert_eq!(o.code, 1, "skips are reported with exit 1: {o:?}");
    let all = format!("{}{}", o.stdout, o.stderr);
    assert!(all.contains("1700000001.link") && all.contains("symbolic link"), "{o:?}");
    assert!(all.contains(".Linked"), "{o:?}");
    if root_only {
        assert!(all.contains("1700000003.hard") && all.contains("not read as root"), "{o:?}");
    }
    // eml: a linked file and a linked directory inside the tree.
    let eml = dir.path().join("eml");
    std::fs::create_dir(&eml).unwrap();
    std::fs::write(eml.join("a.eml"), mail("legit eml")).unwrap();
    std::os::unix::fs::symlink(&secret, eml.join("b.eml")).unwrap();
    std::os::unix::fs::symlink(&other, eml.join("sub")).unwrap();
    let o =
        s.run(&["import", "--format", "eml", "--verdict", "SPAM", "--rcpt", "r@example.org", eml.to_str().unwrap()]);
    assert_eq!(o.code, 1, "{o:?}");
    let all = format!("{}{}", o.stdout, o.stderr);
    assert!(all.contains("b.eml") && all.contains("sub"), "{o:?}");
    let o = s.run(&["search", "--subject", "SECRET"]);
    assert_eq!(o.stdout.trim(), "no messages match", "{o:?}");
    let o = s.run(&["search", "--json", "--subject", "legit"]);
    assert_eq!(o.stdout.lines().count(), 2, "{o:?}");
}

// ---- 9. --csv neutralises formulas ----

#[test]
fn csv_cells_that_a_spreadsheet_would_run_are_neutralised() {
    let s = Store::new();
    s.hold(&["--reason=-3.5 score"], b"From: =HYPERLINK(\"http://x\")\r\nSubject: =cmd|' /C calc'!A0\r\n\r\nx\r\n");
    s.hold(&[], b"Subject: @SUM(1)\r\n\r\nx\r\n");
    s.hold(&[], b"Subject: \t+tab\r\n\r\nx\r\n");
    let o = s.run(&["search", "--csv"]);
    assert_eq!(o.code, 0, "{o:?}");
    for line in o.stdout.lines().skip(1) {
        for cell in line.split(',') {
            let c = cell.trim_start_matches('"');
            assert!(!c.starts_with(['=', '+', '-', '@', '\t', '\r']), "cell {cell:?} in {line:?}");
        }
    }
    assert!(o.stdout.contains("'=cmd") && o.stdout.contains("'@SUM") && o.stdout.contains("'-3.5"), "{o:?}");
}

// ---- 10. control characters are escaped in every printed line ----

fn assert_no_controls(what: &str, o: &Out) {
    for (name, text) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{what}: raw control character on {name}: {o:?}");
    }
}

#[test]
fn freeze_reason_and_actor_are_escaped_in_purge_and_freeze() {
    let s = Store::new();
    s.hold(&[], &mail("x"));
    let evil = "\x1b]52;c;aGk=\x07\x1b[2J";
    let o = s.run(&["freeze", "--reason", evil, "--actor", evil]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_no_controls("freeze", &o);
    let o = s.run(&["freeze", "--reason", "again"]);
    assert!(o.stdout.contains("already frozen"), "{o:?}");
    assert!(o.stdout.contains("\\x1b]52"), "{o:?}");
    assert_no_controls("freeze again", &o);
    let o = s.run(&["purge", "--all", "--dry-run"]);
    assert!(o.stdout.contains("FROZEN"), "{o:?}");
    assert_no_controls("purge --dry-run", &o);
    let o = s.run(&["purge", "--all", "--yes"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert_no_controls("purge refusal", &o);
    for args in [
        vec!["stats"],
        vec!["log"],
        vec!["show", evil],
        vec!["search", "--subject", evil],
        vec!["search", "--since", evil],
    ] {
        let o = s.run(&args);
        assert_no_controls(&format!("{args:?}"), &o);
    }
    let o = run_cmd(cmd(&["--store", evil, "hold", "--verdict", "X", "--from", "a@b", "--", "c@d"]), b"x");
    assert_eq!(o.code, 75);
    assert_no_controls("hold with a hostile store path", &o);
    let o = q(&["--store", evil, "verify"]);
    assert_no_controls("verify with a hostile store path", &o);
}

// ---- 11. the config file's size is capped ----

#[test]
fn config_file_size_is_capped() {
    let s = Store::new();
    let big = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(big.path(), "# x\n".repeat(300_000)).unwrap();
    for config in [Path::new("/dev/zero"), big.path()] {
        for args in [vec!["stats"], vec!["config", "check"]] {
            let mut c = cmd(&["--config".as_ref(), config.as_os_str(), "--store".as_ref(), s.path.as_os_str()]);
            c.args(&args);
            let o = run_cmd(c, b"");
            assert_ne!(o.code, 0, "{config:?} {args:?}: {o:?}");
            assert!(o.stderr.contains("MiB"), "{config:?} {args:?}: {o:?}");
        }
        let mut c = cmd(&["--config".as_ref(), config.as_os_str(), "--store".as_ref(), s.path.as_os_str()]);
        c.args(["hold", "--verdict", "X", "--from", "a@b", "--", "c@d"]);
        let o = run_cmd(c, b"x");
        assert_eq!(o.code, 75, "{o:?}");
    }
}

// ---- 12. --retry-in-doubt reports and audits only what it re-sent ----

fn sql(store: &Path, statement: &str) -> String {
    let o = Command::new("sqlite3").arg(store.join("index.sqlite")).arg(statement).output().expect("sqlite3");
    assert!(o.status.success(), "{o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Leaves every recipient `releasing`, claimed by a release whose process is gone (what a SIGKILL leaves).
fn make_in_doubt(store: &Path) {
    sql(store, "UPDATE recipients SET state = 'releasing', release_id = 'DEADREL000 nohost noboot 999999999 1 killed'");
}

#[test]
fn retry_in_doubt_counts_only_what_was_resent() {
    let s = Store::new();
    for i in 0..3 {
        s.hold(&[], &mail(&format!("doubt {i}")));
    }
    make_in_doubt(&s.path);
    // The relay is down: everything claimed is put back, nothing was resent.
    let o = s.run(&["release", "--all", "--retry-in-doubt", "--relay", "smtp://127.0.0.1:9", "--yes", "--json"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stdout.contains("\"retried_in_doubt\":0"), "{o:?}");
    let log = s.run(&["log", "--json"]);
    let last = log.stdout.lines().last().unwrap().to_string();
    assert!(last.contains("\"action\":\"release\"") && last.contains("\"retried_in_doubt\":0"), "{last}");
    // Now resend for real: all three count.
    make_in_doubt(&s.path);
    let o = s.run(&["release", "--all", "--retry-in-doubt", "--sendmail", "/bin/cat >/dev/null", "--yes", "--json"]);
    assert!(o.stdout.contains("\"retried_in_doubt\":3"), "{o:?}");
}

// ---- 13. JSON recipient objects carry every documented key ----

#[test]
fn json_recipients_always_carry_every_key() {
    let s = Store::new();
    let id = s.hold(&[], &mail("keys"));
    for args in [vec!["show", &id, "--json"], vec!["search", "--json"]] {
        let o = s.run(&args);
        let v: serde_json::Value = serde_json::from_str(o.stdout.lines().next().unwrap()).unwrap();
        let r = &v["recipients"][0];
        for key in ["address", "state", "attempts", "released_at", "reply", "last_error"] {
            assert!(r.get(key).is_some(), "{args:?}: recipient lacks {key}: {r}");
        }
        assert!(r["released_at"].is_null() && r["reply"].is_null() && r["last_error"].is_null(), "{r}");
    }
}

// ---- 15. a purge that matches nothing writes an audit row ----

#[test]
fn purge_that_matches_nothing_is_audited() {
    let s = Store::new();
    s.hold(&[], &mail("young"));
    let o = s.run(&["purge", "--older-than", "30d", "--yes", "--reason", "nightly"]);
    assert_eq!(o.code, 0, "{o:?}");
    let log = s.run(&["log", "--json"]);
    let last = log.stdout.lines().last().unwrap_or_default().to_string();
    assert!(last.contains("\"action\":\"purge\"") && last.contains("\"messages\":0"), "{log:?}");
}
