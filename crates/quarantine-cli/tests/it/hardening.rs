//! Issue 13: the hardening items (hold's exit codes, ownership, corrupt blobs, selectors, escaping, limits, panics,
//! export names, mbox round trips), on the testkit's runner and scratch store.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use quarantine_testkit::env::{is_root, require_root};
use quarantine_testkit::run::run;
use quarantine_testkit::{require, Input, Out, Store, HANG};

use crate::{scratch, store};

/// `hold --verdict SPAM --from s@example.org EXTRA... [-- r@example.org]` with `body`; asserted, returns the id.
fn hold(s: &Store, extra: &[&str], body: &[u8]) -> String {
    let mut args = vec!["--verdict", "SPAM", "--from", "s@example.org"];
    args.extend_from_slice(extra);
    if !extra.contains(&"--") {
        args.extend_from_slice(&["--", "r@example.org"]);
    }
    let id = s.hold_ok(body, &args);
    // hold writes only the spool (DESIGN section 4): these tests look at blobs and rows at once.
    s.ingest();
    id
}

fn mail(subject: &str) -> Vec<u8> {
    format!("From: a@example.org\r\nTo: r@example.org\r\nSubject: {subject}\r\n\r\nbody {subject}\r\n").into_bytes()
}

/// Ids printed by `search --json ARGS...`, in output order.
fn search_ids(s: &Store, args: &[&str]) -> Vec<String> {
    let mut a = vec!["search", "--json"];
    a.extend_from_slice(args);
    let o = s.q(&a);
    o.ok().lines().map(|l| l.split("\"id\":\"").nth(1).unwrap()[..10].to_string()).collect()
}

// ---- 1. every argv with `hold` in it exits 75 unless the message was held ----

#[test]
fn hold_help_version_and_global_option_errors_exit_75() {
    let s = store();
    let st = s.root.to_str().unwrap();
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
        let o = s.scratch.run(&args, Input::Bytes(b"Subject: x\r\n\r\nx\r\n"));
        // `--store` with no value has no `hold` word: plain usage error.
        if args == ["--store"] {
            o.code_is(2, &format!("{args:?}"));
            continue;
        }
        o.code_is(75, &format!("{args:?}"));
        assert!(o.stdout.is_empty(), "{args:?} printed on stdout: {}", o.brief());
        assert_eq!(o.stderr.trim_end().lines().count(), 1, "{args:?}: one line: {}", o.brief());
        assert!(o.stderr.starts_with("quarantine hold: "), "{args:?}: {}", o.brief());
    }
    // Nothing was held.
    assert_eq!(s.q(&["search", "--json"]).ok(), "");
}

#[test]
fn non_hold_help_still_exits_0() {
    let sc = scratch();
    for args in [vec!["-h"], vec!["search", "--help"], vec!["--version"]] {
        sc.q(&args).code_is(0, &format!("{args:?}"));
    }
}

// ---- 2. a store whose group is not one of its owner's groups ----

/// Runs the binary as a throw-away uid/gid with no supplementary groups.
fn as_uid(sc: &quarantine_testkit::Scratch, uid: u32, gid: u32, args: &[&std::ffi::OsStr], input: &[u8]) -> Out {
    let mut c = sc.program(require("setpriv", "util-linux"));
    c.arg(format!("--reuid={uid}")).arg(format!("--regid={gid}")).arg("--clear-groups").arg(&sc.bin).args(args);
    run(c, Input::Bytes(input), HANG)
}

#[test]
fn owner_whose_store_group_is_foreign_can_init_and_hold() {
    require_root("to make a throw-away owner");
    let (uid, gid, foreign) = (54_321u32, 54_321u32, 54_399u32);
    let sc = scratch();
    std::fs::set_permissions(sc.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(sc.config(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = sc.path().join("store");
    // `install -d -o quarantine DIR`: the owner is right, the group is root's (or anyone's but the owner's).
    std::fs::create_dir(&store).unwrap();
    std::os::unix::fs::chown(&store, Some(uid), Some(foreign)).unwrap();
    let st = store.as_os_str();
    as_uid(&sc, uid, gid, &["--store".as_ref(), st, "init".as_ref()], b"").code_is(0, "init by the owner");
    let hold: Vec<&std::ffi::OsStr> = ["--store".as_ref(), st, "hold".as_ref(), "--verdict".as_ref(), "SPAM".as_ref()]
        .into_iter()
        .chain(["--from", "a@b.example", "--", "c@d.example"].map(std::ffi::OsStr::new))
        .collect();
    as_uid(&sc, uid, gid, &hold, b"Subject: x\r\n\r\nx\r\n").code_is(0, "hold by the owner");
    as_uid(&sc, uid, gid, &["--store".as_ref(), st, "verify".as_ref(), "--deep".as_ref()], b"").code_is(0, "verify");
    // Root's commands still hand every file to the store's owner and group.
    sc.run(&hold, Input::Bytes(b"Subject: y\r\n\r\ny\r\n")).code_is(0, "hold by root");
    as_uid(&sc, uid, gid, &hold, b"Subject: z\r\n\r\nz\r\n").code_is(0, "hold by the owner after root");
    quarantine_testkit::gen::walk(&store, &mut |p, _| {
        assert_eq!(std::fs::symlink_metadata(p).unwrap().uid(), uid, "{}", p.display());
    });
}

// ---- 3. a hold of bytes whose blob exists but is corrupt replaces the blob ----

#[test]
fn hold_replaces_a_corrupt_existing_blob_with_the_good_bytes() {
    let s = store();
    let body = mail("dedup me");
    let first = hold(&s, &[], &body);
    let blobs = s.blob_files();
    assert_eq!(blobs.len(), 1);
    for damage in [b"not zstd at all".to_vec(), Vec::new()] {
        std::fs::write(&blobs[0], &damage).unwrap();
        let id = hold(&s, &["--", "other@example.org"], &body);
        // The new hold must be readable.
        assert_eq!(s.raw(&id), body);
        // The first message shares the blob and is readable again too.
        s.q(&["show", &first, "--raw"]).code_is(0, "show the first");
        s.verify_deep_clean("after the replaced blob");
    }
}

// ---- 4. empty selector values are usage errors ----

#[test]
fn empty_selector_values_are_usage_errors_for_every_flag() {
    let s = store();
    hold(&s, &[], &mail("keep me"));
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
                let o = s.q(&cmdline);
                o.code_is(2, &format!("{cmdline:?}"));
                assert!(o.stderr.contains(flag), "{cmdline:?} names the flag: {}", o.brief());
            }
        }
    }
    assert_eq!(s.q(&["search", "--json"]).ok().lines().count(), 1, "nothing was purged");
}

// ---- 5. an --id that matches nothing is exit 1; show echoes the id as typed ----

#[test]
fn unknown_id_is_an_error_for_release_export_purge() {
    let s = store();
    let id = hold(&s, &[], &mail("known"));
    let to = s.work().join("out");
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
        let o = s.q(&args);
        o.code_is(1, &format!("{args:?}"));
        assert!(o.stderr.contains("NOSUCH0000"), "{args:?}: {}", o.brief());
    }
    // Nothing was purged by the mixed one.
    s.q(&["show", &id]).code_is(0, "show after the mixed purge");
    // show echoes what was typed (lower case, look-alikes), escaped.
    let o = s.q(&["show", "nosuchlo1x"]);
    o.code_is(1, "show unknown");
    assert!(o.stderr.contains("nosuchlo1x"), "{}", o.brief());
    let o = s.q(&["show", "x\x1b]52;c;aGk=\x07y"]);
    o.code_is(1, "show hostile");
    assert!(!o.stderr.contains('\x1b') && !o.stderr.contains('\x07'), "{}", o.brief());
    assert!(o.stderr.contains("x\\x1b]52;c;aGk=\\x07y"), "{}", o.brief());
}

// ---- 6. a verdict with glob characters can be selected exactly ----

#[test]
fn verdict_with_glob_characters_is_selected_exactly_with_backslash() {
    let s = store();
    let hold_v =
        |v: &str, subj: &str| s.hold_ok(&mail(subj), &["--verdict", v, "--from", "a@b.example", "--", "c@d.example"]);
    let star = hold_v("Foo*", "one");
    let _fooby = hold_v("Foobar", "two");
    let q_ = hold_v("Wh?[x]", "three");
    let back = hold_v("A\\B", "four");
    let ids = |v: &str| search_ids(&s, &["--verdict", v]);
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
    let s = store();
    let upper = hold(&s, &[], "From: x@example.org\r\nSubject: ÉTÉ Ö\r\n\r\nx\r\n".as_bytes());
    let latin1 = hold(&s, &[], b"From: J\xf6rg <j@example.org>\r\nSubject: Gr\xfc\xdfe \x80100\r\n\r\nx\r\n");
    let n = |args: &[&str]| search_ids(&s, args);
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
    let s = store();
    let dir = s.work();
    let secret = dir.join("secret");
    std::fs::write(&secret, "Subject: SECRET-SHADOW\r\n\r\nroot:x\r\n").unwrap();
    let md = dir.join("Maildir");
    for d in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(md.join(d)).unwrap();
    }
    std::fs::write(md.join("cur/1700000000.ok:2,S"), mail("legit")).unwrap();
    std::os::unix::fs::symlink(&secret, md.join("cur/1700000001.link:2,S")).unwrap();
    // A linked Maildir++ subfolder, and a linked directory inside an eml tree.
    let other = dir.join("other");
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
        s.q(&["import", "--format", "maildir", "--verdict", "SPAM", "--rcpt", "r@example.org", md.to_str().unwrap()]);
    o.code_is(1, "skips are reported with exit 1");
    let all = format!("{}{}", o.text(), o.stderr);
    assert!(all.contains("1700000001.link") && all.contains("symbolic link"), "{}", o.brief());
    assert!(all.contains(".Linked"), "{}", o.brief());
    if root_only {
        assert!(all.contains("1700000003.hard") && all.contains("not read as root"), "{}", o.brief());
    }
    // eml: a linked file and a linked directory inside the tree.
    let eml = dir.join("eml");
    std::fs::create_dir(&eml).unwrap();
    std::fs::write(eml.join("a.eml"), mail("legit eml")).unwrap();
    std::os::unix::fs::symlink(&secret, eml.join("b.eml")).unwrap();
    std::os::unix::fs::symlink(&other, eml.join("sub")).unwrap();
    let o = s.q(&["import", "--format", "eml", "--verdict", "SPAM", "--rcpt", "r@example.org", eml.to_str().unwrap()]);
    o.code_is(1, "eml skips");
    let all = format!("{}{}", o.text(), o.stderr);
    assert!(all.contains("b.eml") && all.contains("sub"), "{}", o.brief());
    assert_eq!(s.q(&["search", "--subject", "SECRET"]).text().trim(), "no messages match");
    assert_eq!(s.q(&["search", "--json", "--subject", "legit"]).text().lines().count(), 2);
}

// ---- 9. --csv neutralises formulas ----

#[test]
fn csv_cells_that_a_spreadsheet_would_run_are_neutralised() {
    let s = store();
    hold(&s, &["--reason=-3.5 score"], b"From: =HYPERLINK(\"http://x\")\r\nSubject: =cmd|' /C calc'!A0\r\n\r\nx\r\n");
    hold(&s, &[], b"Subject: @SUM(1)\r\n\r\nx\r\n");
    hold(&s, &[], b"Subject: \t+tab\r\n\r\nx\r\n");
    let text = s.q(&["search", "--csv"]).ok();
    for line in text.lines().skip(1) {
        for cell in line.split(',') {
            let c = cell.trim_start_matches('"');
            assert!(!c.starts_with(['=', '+', '-', '@', '\t', '\r']), "cell {cell:?} in {line:?}");
        }
    }
    assert!(text.contains("'=cmd") && text.contains("'@SUM") && text.contains("'-3.5"), "{text}");
}

// ---- 10. control characters are escaped in every printed line ----

#[track_caller]
fn assert_no_controls(what: &str, o: &Out) {
    for (name, text) in [("stdout", &o.text()), ("stderr", &o.stderr)] {
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{what}: raw control character on {name}: {}",
            o.brief()
        );
    }
}

#[test]
fn freeze_reason_and_actor_are_escaped_in_purge_and_freeze() {
    let s = store();
    hold(&s, &[], &mail("x"));
    let evil = "\x1b]52;c;aGk=\x07\x1b[2J";
    let o = s.q(&["freeze", "--reason", evil, "--actor", evil]);
    o.code_is(0, "freeze");
    assert_no_controls("freeze", &o);
    let o = s.q(&["freeze", "--reason", "again"]);
    assert!(o.text().contains("already frozen"), "{}", o.brief());
    assert!(o.text().contains("\\x1b]52"), "{}", o.brief());
    assert_no_controls("freeze again", &o);
    let o = s.q(&["purge", "--all", "--dry-run"]);
    assert!(o.text().contains("FROZEN"), "{}", o.brief());
    assert_no_controls("purge --dry-run", &o);
    let o = s.q(&["purge", "--all", "--yes"]);
    o.code_is(1, "purge refusal");
    assert_no_controls("purge refusal", &o);
    for args in [
        vec!["stats"],
        vec!["log"],
        vec!["show", evil],
        vec!["search", "--subject", evil],
        vec!["search", "--since", evil],
    ] {
        let o = s.q(&args);
        assert_no_controls(&format!("{args:?}"), &o);
    }
    let o =
        s.scratch.run(&["--store", evil, "hold", "--verdict", "X", "--from", "a@b", "--", "c@d"], Input::Bytes(b"x"));
    o.code_is(75, "hold with a hostile store path");
    assert_no_controls("hold with a hostile store path", &o);
    let o = s.scratch.q(&["--store", evil, "verify"]);
    assert_no_controls("verify with a hostile store path", &o);
}

// ---- 11. the config file's size is capped ----

#[test]
fn config_file_size_is_capped() {
    let s = store();
    let big = s.file("big.toml", "# x\n".repeat(300_000));
    for config in [Path::new("/dev/zero"), big.as_path()] {
        for args in [vec!["stats"], vec!["config", "check"]] {
            let mut c =
                s.scratch.cmd(&["--config".as_ref(), config.as_os_str(), "--store".as_ref(), s.root.as_os_str()]);
            c.args(&args);
            let o = run(c, Input::Null, HANG);
            assert_ne!(o.code, 0, "{config:?} {args:?}: {}", o.brief());
            assert!(o.stderr.contains("MiB"), "{config:?} {args:?}: {}", o.brief());
        }
        let mut c = s.scratch.cmd(&["--config".as_ref(), config.as_os_str(), "--store".as_ref(), s.root.as_os_str()]);
        c.args(["hold", "--verdict", "X", "--from", "a@b", "--", "c@d"]);
        run(c, Input::Bytes(b"x"), HANG).code_is(75, &format!("hold with --config {config:?}"));
    }
}

// ---- 12. --retry-in-doubt reports and audits only what it re-sent ----

/// Leaves every recipient `releasing`, claimed by a release whose process is gone (what a SIGKILL leaves).
fn make_in_doubt(s: &Store) {
    s.sql("UPDATE recipients SET state = 'releasing', release_id = 'DEADREL000 nohost noboot 999999999 1 killed'");
}

#[test]
fn retry_in_doubt_counts_only_what_was_resent() {
    let s = store();
    for i in 0..3 {
        hold(&s, &[], &mail(&format!("doubt {i}")));
    }
    make_in_doubt(&s);
    // The relay is down: everything claimed is put back, nothing was resent.
    let o = s.q(&["release", "--all", "--retry-in-doubt", "--relay", "smtp://127.0.0.1:9", "--yes", "--json"]);
    o.code_is(1, "release to a dead relay");
    assert!(o.text().contains("\"retried_in_doubt\":0"), "{}", o.brief());
    let log = s.q(&["log", "--json"]).text();
    let last = log.lines().last().unwrap().to_string();
    assert!(last.contains("\"action\":\"release\"") && last.contains("\"retried_in_doubt\":0"), "{last}");
    // Now resend for real: all three count.
    make_in_doubt(&s);
    let o = s.q(&["release", "--all", "--retry-in-doubt", "--sendmail", "/bin/cat >/dev/null", "--yes", "--json"]);
    assert!(o.text().contains("\"retried_in_doubt\":3"), "{}", o.brief());
}

// ---- 13. JSON recipient objects carry every documented key ----

#[test]
fn json_recipients_always_carry_every_key() {
    let s = store();
    let id = hold(&s, &[], &mail("keys"));
    for args in [vec!["show", &id, "--json"], vec!["search", "--json"]] {
        let text = s.q(&args).ok();
        let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
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
    let s = store();
    hold(&s, &[], &mail("young"));
    s.q(&["purge", "--older-than", "30d", "--yes", "--reason", "nightly"]).code_is(0, "purge");
    let log = s.q(&["log", "--json"]).text();
    let last = log.lines().last().unwrap_or_default().to_string();
    assert!(last.contains("\"action\":\"purge\"") && last.contains("\"messages\":0"), "{log}");
}

// ---- 14. a second mbox export into the same directory within one second picks a fresh name ----

#[test]
fn mbox_exports_in_the_same_second_get_fresh_names() {
    let s = store();
    hold(&s, &[], &mail("one"));
    hold(&s, &[], &mail("two"));
    let dir = s.work().join("exp");
    // A stopped clock: every run starts in the same second.
    let faketime = require("faketime", "faketime");
    for run_no in 0..3 {
        let mut c = s.program(&faketime);
        c.arg("2024-01-01 12:00:00").arg(&s.bin).args(s.args(&[
            "export",
            "--verdict",
            "SPAM",
            "--format",
            "mbox",
            "--to",
            dir.to_str().unwrap(),
        ]));
        run(c, Input::Null, HANG).code_is(0, &format!("export number {}", run_no + 1));
    }
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let mboxes: Vec<&String> = names.iter().filter(|n| n.ends_with(".mbox")).collect();
    assert_eq!(mboxes.len(), 3, "three exports, three mbox files: {names:?}");
    assert_eq!(names.len(), 6, "each mbox has its .jsonl: {names:?}");
    for m in mboxes {
        let text = std::fs::read_to_string(dir.join(m)).unwrap();
        assert_eq!(text.lines().filter(|l| l.starts_with("From ")).count(), 2, "{m}");
        let stem = m.strip_suffix(".mbox").unwrap();
        assert!(names.contains(&format!("{stem}.jsonl")), "{m} has its records beside it: {names:?}");
    }
}

// ---- 16. mbox export then import restores envelope, verdict and scanner ----

#[test]
fn mbox_export_then_import_restores_envelope_verdict_and_scanner() {
    let s = store();
    // bcc@ is an envelope recipient the headers never name; the body has a line an mbox must quote.
    let a = s.hold_ok(
        b"From: a@example.org\r\nTo: to@example.org\r\nSubject: first\r\n\r\nFrom the start\r\n>From quoted\r\n",
        &["--verdict", "PMX:VIRUS", "--scanner", "pmx", "--reason", "sig 42", "--from", "env@example.org", "--"]
            .into_iter()
            .chain(["to@example.org", "bcc@example.org"])
            .collect::<Vec<_>>(),
    );
    let b = s.hold_ok(
        b"From: b@example.org\r\nSubject: second\r\n\r\nbody\r\n",
        &["--verdict", "SPAM", "--from", "", "--", "other@example.org"],
    );
    let dir = s.work().join("exp");
    s.q(&["export", "--id", &a, "--id", &b, "--format", "mbox", "--to", dir.to_str().unwrap()]).code_is(0, "export");
    let mbox = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "mbox"))
        .expect("an mbox file");
    let before: Vec<serde_json::Value> = [&a, &b].map(|id| s.show_json(id)).into();

    let t = store();
    t.q(&["import", "--format", "mbox", "--verdict", "IMPORTED", mbox.to_str().unwrap()]).code_is(0, "import");
    let got: Vec<serde_json::Value> =
        t.q(&["search", "--json"]).ok().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(got.len(), 2);
    for want in &before {
        let g = got.iter().find(|g| g["hash"] == want["hash"]).unwrap_or_else(|| panic!("{} not imported", want["id"]));
        for key in ["from", "verdict", "scanner", "reason", "size", "subject"] {
            assert_eq!(g[key], want[key], "{key} of {}", want["id"]);
        }
        let rcpts = |v: &serde_json::Value| -> Vec<String> {
            v["recipients"].as_array().unwrap().iter().map(|r| r["address"].as_str().unwrap().to_string()).collect()
        };
        assert_eq!(rcpts(g), rcpts(want), "the envelope recipients of {}, Bcc included", want["id"]);
        assert_eq!(t.raw(g["id"].as_str().unwrap()), s.raw(want["id"].as_str().unwrap()), "byte-exact");
    }
    // The export directory as a whole: the records are read with their mbox, not reported as a broken mbox.
    let d = store();
    d.q(&["import", "--format", "mbox", "--verdict", "IMPORTED", dir.to_str().unwrap()]).code_is(0, "directory import");
    assert_eq!(search_verdicts(&d), ["PMX:VIRUS", "SPAM"]);
    // Without its records beside it, the same mbox gets the --verdict given and only the envelope its bytes
    // carry: the message with no recipient header is skipped (exit 1), the Bcc recipient is lost.
    let lone = s.work().join("lone.mbox");
    std::fs::copy(&mbox, &lone).unwrap();
    let u = store();
    u.q(&["import", "--format", "mbox", "--verdict", "IMPORTED", lone.to_str().unwrap()]).code_is(1, "lone import");
    let lone: Vec<serde_json::Value> =
        u.q(&["search", "--json"]).ok().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lone.len(), 1);
    assert_eq!(lone[0]["verdict"], "IMPORTED");
    assert_eq!(lone[0]["recipients"].as_array().unwrap().len(), 1, "{}", lone[0]);
}

/// The verdicts in a store, sorted.
fn search_verdicts(s: &Store) -> Vec<String> {
    let mut v: Vec<String> = s
        .q(&["search", "--json"])
        .ok()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["verdict"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

// ---- 17. a long "+N recipients" cell on a narrow terminal never panics the table ----

#[test]
fn search_table_survives_any_width_with_a_long_recipient_count() {
    let s = store();
    let id = hold(&s, &[], &mail("many recipients"));
    hold(&s, &[], "Subject: 日本語の件名とても長い件名です\r\n\r\nx\r\n".as_bytes());
    s.sql(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 123456)
         INSERT INTO recipients (message, address, address_lc)
         SELECT '{id}', 'user' || i || '@example.org', 'user' || i || '@example.org' FROM n"
    ));
    for w in [0usize, 1, 2, 3, 5, 8, 10, 15, 20, 30, 40, 50, 60, 70, 80, 100, 120, 200, 1000] {
        let mut c = s.cmd(&["search"]);
        c.env("COLUMNS", w.to_string());
        let o = run(c, Input::Null, HANG);
        o.code_is(0, &format!("search with COLUMNS={w}"));
        assert!(!o.stderr.contains("panicked"), "COLUMNS={w}: {}", o.brief());
        let text = o.text();
        assert!(text.contains("+123456"), "COLUMNS={w}: the recipient count is kept: {text}");
        if w >= 200 {
            use unicode_width::UnicodeWidthStr;
            for line in text.lines() {
                assert!(line.width() <= w, "COLUMNS={w}: {line:?} is {} wide", line.width());
            }
        }
    }
}

// ---- 18. a malformed hash in a row is reported, never a panic ----

#[test]
fn malformed_hash_in_a_row_is_reported_by_every_reader() {
    let s = store();
    let id = hold(&s, &[], &mail("bad hash"));
    let good = s.show_json(&id)["hash"].as_str().unwrap().to_string();
    let out = s.work().join("exp");
    let sendmail = sendmail_sink(&s);
    for bad in ["", "a", "abc", "é", "éééé", "../../../../../../etc/passwd", &good.to_uppercase(), &good[..63]] {
        s.sql(&format!("UPDATE messages SET hash = '{}' WHERE id = '{id}'", bad.replace('\'', "''")));
        for args in [
            vec!["verify"],
            vec!["verify", "--deep"],
            vec!["show", &id, "--raw"],
            vec!["export", &id, "--to", out.to_str().unwrap()],
            vec!["export", &id, "--format", "mbox", "--to", out.to_str().unwrap()],
            vec!["release", "--id", &id, "--sendmail", sendmail.to_str().unwrap(), "--yes"],
        ] {
            let o = s.q(&args);
            let what = format!("hash {bad:?}: {args:?}");
            o.code_is(1, &what);
            assert!(!o.stderr.contains("panicked"), "{what}: {}", o.brief());
            let all = format!("{}{}", o.text(), o.stderr);
            assert!(all.contains("malformed hash"), "{what}: names the problem: {}", o.brief());
        }
        assert_eq!(s.sql_count("SELECT count(*) FROM recipients WHERE state != 'held'"), 0, "hash {bad:?}");
        // show (not raw) still works: the row is there, only its bytes cannot be found.
        s.q(&["show", &id]).code_is(0, &format!("show with hash {bad:?}"));
    }
    s.sql(&format!("UPDATE messages SET hash = '{good}' WHERE id = '{id}'"));
    s.verify_deep_clean("hash restored");
}

/// A sendmail-compatible command that accepts every message and throws it away.
fn sendmail_sink(s: &Store) -> std::path::PathBuf {
    let p = s.file("sendmail", "#!/bin/sh\ncat >/dev/null\n");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

// ---- 19. release --rate and --timeout out of range are usage errors that claim nothing ----

#[test]
fn release_rate_and_timeout_out_of_range_are_usage_errors() {
    let s = store();
    // Two messages: the rate's wait comes before the second.
    hold(&s, &[], &mail("rate 1"));
    hold(&s, &[], &mail("rate 2"));
    let sendmail = sendmail_sink(&s);
    let sendmail = sendmail.to_str().unwrap();
    for (flag, value) in [
        ("--rate", "1e-300"),
        ("--rate", "0.0000001"),
        ("--rate", "1e300"),
        ("--rate", "0"),
        ("--rate=-1", ""),
        ("--rate", "NaN"),
        ("--rate", "inf"),
        ("--timeout", "0s"),
        ("--timeout", "100000000w"),
    ] {
        let mut args = vec!["release", "--all", "--yes", "--sendmail", sendmail, flag];
        if !value.is_empty() {
            args.push(value);
        }
        let o = s.q(&args);
        let flag = flag.split('=').next().unwrap();
        let what = format!("{flag} {value}");
        o.code_is(2, &what);
        assert_eq!(o.stderr.trim_end().lines().count(), 1, "{what}: one line: {}", o.brief());
        assert!(o.stderr.contains(flag), "{what}: names the flag: {}", o.brief());
        assert!(!o.stderr.contains("panicked"), "{what}: {}", o.brief());
        assert_eq!(s.sql_count("SELECT count(*) FROM recipients WHERE state != 'held'"), 0, "{what}");
    }
    s.q(&["release", "--all", "--yes", "--sendmail", sendmail, "--rate", "1000", "--timeout", "5s"])
        .code_is(0, "in-range --rate and --timeout");
    assert_eq!(s.sql_count("SELECT count(*) FROM recipients WHERE state = 'released'"), 2);
}

// ---- 20. purge: the blob-removal bar moves; an unlink error is counted and the rest go on ----

#[test]
fn purge_shows_its_blob_removal_progress_on_a_terminal() {
    let s = store();
    for i in 0..20 {
        hold(&s, &[], &mail(&format!("bar {i}")));
    }
    let cmdline = format!("{} --store {} purge --verdict SPAM --yes", s.bin.display(), s.root.display());
    let mut c = s.program(require("script", "bsdutils"));
    c.env("TERM", "xterm").args(["-qc", &cmdline, "/dev/null"]);
    let o = run(c, Input::Null, HANG);
    o.code_is(0, "purge on a terminal");
    let text = o.text();
    assert!(text.contains("purging ["), "the first bar is drawn: {text:?}");
    let second =
        text.find("removing blobs [").map(|at| &text[at..]).unwrap_or_else(|| panic!("no second bar: {text:?}"));
    assert!(second.contains("] 20/20"), "the blob-removal bar moves to the end: {text:?}");
    assert!(s.blob_files().is_empty(), "every blob removed");
}

#[test]
fn purge_counts_unlink_errors_and_removes_the_rest() {
    let s = store();
    let ids: Vec<String> = (0..4).map(|i| hold(&s, &[], &mail(&format!("unlink {i}")))).collect();
    let mut hashes: Vec<String> = ids.iter().map(|id| s.show_json(id)["hash"].as_str().unwrap().to_string()).collect();
    hashes.sort();
    // The first blob GC reaches (it goes in hash order) cannot be unlinked: a directory stands in its place.
    let stuck = s.blob_path(&hashes[0]);
    std::fs::remove_file(&stuck).unwrap();
    std::fs::create_dir(&stuck).unwrap();
    std::fs::write(stuck.join("keep"), b"x").unwrap();
    let o = s.q(&["purge", "--verdict", "SPAM", "--yes"]);
    o.code_is(1, "purge with an unlink error");
    assert!(o.text().contains("purged 4 message(s)"), "{}", o.brief());
    assert!(o.text().contains("removed 3 blob(s)"), "the others are removed: {}", o.brief());
    assert!(o.stderr.contains(&hashes[0]) && o.stderr.contains("unlink"), "the failure is named: {}", o.brief());
    assert_eq!(o.stderr.trim_end().lines().count(), 1, "{}", o.brief());
    for h in &hashes[1..] {
        assert!(!s.blob_path(h).exists(), "{h} removed");
    }
    // The failed one stays queued, so the next purge retries it once the cause is gone.
    assert_eq!(s.sql_count("SELECT count(*) FROM gc_queue"), 1);
    std::fs::remove_dir_all(&stuck).unwrap();
    std::fs::write(&stuck, b"back").unwrap();
    let o = s.q(&["purge", "--verdict", "NO-SUCH", "--yes"]);
    o.code_is(0, "the retry");
    assert!(!stuck.exists(), "removed on the retry: {}", o.brief());
    assert_eq!(s.sql_count("SELECT count(*) FROM gc_queue"), 0);
}
