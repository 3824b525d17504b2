//! DESIGN section 2: an admin command run as root must not leave a file in the store that the store's own
//! account cannot open (SQLite's -wal and -shm included), or the next `hold` by the MTA fails.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::BIN;

fn hold_as(user: Option<&str>, store: &Path, body: &[u8]) -> std::process::Output {
    let mut c = match user {
        Some(u) => {
            let mut c = crate::program(quarantine_testkit::require("setpriv", "util-linux"));
            c.args([&format!("--reuid={u}"), "--regid=nogroup", "--clear-groups", BIN]);
            c
        }
        None => crate::quarantine(),
    };
    c.arg("--store").arg(store).args(["hold", "--verdict", "SPAM", "--from", "a@b.example", "--", "c@d.example"]);
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(body).unwrap();
    child.wait_with_output().unwrap()
}

fn all_entries(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if p.is_dir() {
            all_entries(&p, out);
        }
    }
}

#[test]
fn root_commands_leave_files_the_store_owner_can_use() {
    quarantine_testkit::env::require_root("to change owners");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = dir.path().join("store");
    assert!(crate::quarantine().arg("--store").arg(&store).arg("init").status().unwrap().success());
    assert!(Command::new("chown").args(["-R", "nobody:nogroup"]).arg(&store).status().unwrap().success());
    let nobody = std::fs::metadata(&store).unwrap().uid();

    // Root holds a message (new fan-out directories, blob, WAL) and runs admin commands.
    let out = hold_as(None, &store, b"Subject: by root\r\n\r\nx\r\n");
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    for args in [vec!["verify", "--deep"], vec!["freeze", "--reason", "test"], vec!["thaw"], vec!["show", &id]] {
        let o = crate::quarantine().arg("--store").arg(&store).args(&args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {o:?}");
    }
    // A root hold that is still running (stdin not yet closed) has created its spool temp file.
    let mut pending = crate::quarantine()
        .arg("--store")
        .arg(&store)
        .args(["hold", "--verdict", "SPAM", "--from", "", "--", "e@f.example"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let spool_tmp = || {
        std::fs::read_dir(store.join("spool"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
    };
    for _ in 0..100 {
        if spool_tmp() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(spool_tmp(), "a running hold has its spool temp file");
    let mut entries = Vec::new();
    all_entries(&store, &mut entries);
    for p in &entries {
        let m = std::fs::symlink_metadata(p).unwrap();
        assert_eq!(m.uid(), nobody, "{} is owned by uid {}, not the store's owner", p.display(), m.uid());
        let mode = m.mode() & 0o777;
        assert!(mode == 0o600 || mode == 0o700, "{} has mode {mode:o}", p.display());
    }

    // The store's own account can still hold (new blob dirs under root-created ones) and read.
    let out = hold_as(Some("nobody"), &store, b"Subject: by nobody\r\n\r\ny\r\n");
    assert!(out.status.success(), "hold as the store owner after root: {out:?}");
    let out = hold_as(Some("nobody"), &store, b"Subject: by root\r\n\r\nx\r\n");
    assert!(out.status.success(), "dedup onto a root-written blob: {out:?}");
    pending.stdin.take().unwrap().write_all(b"Subject: late\r\n\r\nz\r\n").unwrap();
    assert!(pending.wait_with_output().unwrap().status.success());
}
