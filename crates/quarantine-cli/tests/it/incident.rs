//! Issue 15, the incident seen and undone: the audit hash chain (`log --verify`, anchors, the upgrade that chains
//! old rows), parallel release (`--connections`), rescan before release with a real ClamAV, spike statistics,
//! provenance (`scanner_version`) and the re-quarantine marks.

use std::path::{Path, PathBuf};

use quarantine_testkit::{Out, Store};

use crate::store;

/// A few audit rows through the binary: freeze and thaw, twice.
fn some_audit_rows(s: &Store) {
    for i in 0..2 {
        s.q(&["freeze", "--reason", &format!("drill {i}")]).code_is(0, "freeze");
        s.q(&["thaw", "--reason", "over"]).code_is(0, "thaw");
    }
}

fn verify(s: &Store, extra: &[&str]) -> Out {
    let mut args = vec!["log", "--verify"];
    args.extend_from_slice(extra);
    s.q(&args)
}

#[test]
fn audit_chain_verifies_untouched_and_exports_its_head() {
    let s = store();
    some_audit_rows(&s);
    let out = verify(&s, &[]);
    out.code_is(0, "log --verify on an untouched store");
    assert!(out.text().contains("audit trail intact: 4 row(s)"), "{}", out.all());
    let head = s.q(&["log", "--head"]).ok().trim().to_string();
    assert_eq!(head.len(), 64, "{head}");
    verify(&s, &["--from-anchor", &head]).code_is(0, "the head just exported is its own anchor");
    // log --json carries the chain: each row's prev_hash is the hash of the row before.
    let rows: Vec<serde_json::Value> =
        s.q(&["log", "--json"]).ok().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 4);
    for w in rows.windows(2) {
        assert_eq!(w[1]["prev_hash"], w[0]["hash"], "{w:?}");
    }
    assert_eq!(rows[3]["hash"].as_str(), Some(head.as_str()));
    // More rows later: the old anchor still verifies (it is in the trail), and the head moves on.
    some_audit_rows(&s);
    verify(&s, &["--from-anchor", &head]).code_is(0, "an older anchor");
    verify(&s, &["--from-anchor", "zz"]).code_is(2, "a malformed anchor is a usage error");
}

#[test]
fn audit_chain_detects_an_edited_row() {
    let s = store();
    some_audit_rows(&s);
    s.sql("DROP TRIGGER audit_no_update; UPDATE audit SET reason = 'nothing happened' WHERE seq = 2");
    let out = verify(&s, &[]);
    out.code_is(1, "log --verify after an edit");
    assert!(out.stderr.contains("audit row #2 does not match its hash"), "{}", out.all());
    assert_eq!(out.stderr.lines().count(), 1, "one line: {}", out.stderr);
}

#[test]
fn audit_chain_detects_a_removed_middle_row_and_a_removed_head() {
    let s = store();
    some_audit_rows(&s);
    s.sql("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = 2");
    let out = verify(&s, &[]);
    out.code_is(1, "log --verify after deleting row 2");
    assert!(out.stderr.contains("audit row #3 does not link to row #1"), "{}", out.all());

    let s = store();
    some_audit_rows(&s);
    s.sql("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = 1");
    let out = verify(&s, &[]);
    out.code_is(1, "log --verify after deleting the first row");
    assert!(out.stderr.contains("audit row #2 does not link to the genesis value"), "{}", out.all());
}

#[test]
fn audit_chain_detects_an_inserted_row() {
    let s = store();
    some_audit_rows(&s);
    // A row slipped in between (renumbering the later ones), with a plausible hash copied from its neighbour.
    s.sql(
        "DROP TRIGGER audit_no_update; UPDATE audit SET seq = seq + 10 WHERE seq >= 3; UPDATE audit SET seq = seq - 9 \
         WHERE seq >= 13; INSERT INTO audit (seq, at_us, actor, action, selection, counts, prev_hash, hash) \
         SELECT 3, at_us, 'mallory', 'release', '{}', '{}', prev_hash, hash FROM audit WHERE seq = 2",
    );
    let out = verify(&s, &[]);
    out.code_is(1, "log --verify after an insertion");
    assert!(out.stderr.contains("audit row #3 does not match its hash"), "{}", out.all());
}

#[test]
fn audit_chain_cut_tail_needs_the_anchor() {
    let s = store();
    some_audit_rows(&s);
    let head = s.q(&["log", "--head"]).ok().trim().to_string();
    s.sql("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq >= 3");
    // What a chain alone cannot see: the shorter trail is intact.
    verify(&s, &[]).code_is(0, "a cut tail without an anchor");
    let out = verify(&s, &["--from-anchor", &head]);
    out.code_is(1, "a cut tail against the exported head");
    assert!(out.stderr.contains(&format!("anchor {head} is not in the audit trail")), "{}", out.all());
    assert!(out.stderr.contains("ends at row #2"), "{}", out.all());
}

/// The shipped migration files, for building an index as an older binary made it.
fn migration(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations").join(name)
}

/// A store whose index is at schema 2 (built with the sqlite3 shell from the shipped, never-edited 0001 and 0002
/// files: exactly what the previous binary created), with audit rows of the old shape.
pub fn schema2_store() -> Store {
    let s = store();
    std::fs::remove_file(s.index()).unwrap();
    let sql = format!(
        ".read {}\n.read {}\nPRAGMA application_id = {};\nPRAGMA user_version = 2;\n\
         INSERT INTO audit (at_us, actor, action, selection, counts, reason) VALUES \
         (1700000000000000, 'old', 'purge', '{{}}', '{{\"messages\":0}}', 'nightly'), \
         (1700000001000000, 'old', 'freeze', '{{}}', '{{}}', NULL), \
         (1700000002000000, 'old', 'thaw', '{{}}', '{{}}', 'done');\n",
        migration("0001_initial.sql").display(),
        migration("0002_search.sql").display(),
        0x5152_4e54
    );
    let mut c = s.sqlite3();
    c.stdin(std::process::Stdio::piped());
    let out =
        quarantine_testkit::run::run(c, quarantine_testkit::Input::Bytes(sql.as_bytes()), quarantine_testkit::HANG);
    out.code_is(0, "build a schema-2 index");
    assert_eq!(s.sql("PRAGMA user_version"), "2");
    s
}

#[test]
fn audit_chain_after_an_upgrade_from_schema_2() {
    let s = schema2_store();
    let out = verify(&s, &[]);
    out.code_is(0, "log --verify right after the upgrade");
    assert!(out.text().contains("3 row(s)"), "{}", out.all());
    assert_eq!(s.sql("PRAGMA user_version"), "3");
    assert_eq!(s.sql_count("SELECT count(*) FROM audit WHERE hash IS NULL OR prev_hash IS NULL"), 0);
    // New rows extend the upgraded chain; edits are still caught and rows still append-only.
    some_audit_rows(&s);
    verify(&s, &[]).code_is(0, "after new rows");
    assert!(s.sqlite("UPDATE audit SET actor = 'x' WHERE seq = 1").code != 0, "the trigger is back");
    s.sql("DROP TRIGGER audit_no_update; UPDATE audit SET actor = 'x' WHERE seq = 1");
    verify(&s, &[]).code_is(1, "an edit of an upgraded row");
}
