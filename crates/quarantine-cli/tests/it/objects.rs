//! Blobs in an S3-compatible object store (DESIGN section 11), against a real SeaweedFS server
//! (`quarantine_testkit::s3`), never a mock: ingest uploads, reads come back byte-exact and checked, create-only
//! uploads trust an existing object only when it checks, purge deletes an object only after its last reference
//! and the upload grace, verify finds missing and corrupt objects, and an outage of the object store loses
//! nothing.

use std::process::Command;

use quarantine_testkit::run::run;
use quarantine_testkit::s3::{Bucket, Weed};
use quarantine_testkit::{Input, Store, HANG};

use crate::store;

const PREFIX: &str = "gw1";

/// A store whose blobs live in `bucket` under [`PREFIX`].
fn s3_store(bucket: &Bucket) -> Store {
    let s = store();
    s.set_config(&bucket.config(PREFIX));
    s
}

fn message(n: usize) -> Vec<u8> {
    let mut m = format!("From: a{n}@example.org\r\nTo: b@example.net\r\nSubject: object {n}\r\n\r\n").into_bytes();
    // Bytes that a text-only path would mangle, and enough of them to compress.
    m.extend((0..4000u32).map(|i| (i.wrapping_mul(31).wrapping_add(n as u32) % 256) as u8));
    m.extend_from_slice(b"\r\n.\r\nend\r\n");
    m
}

fn hold(s: &Store, msg: &[u8]) -> String {
    s.hold_ok(msg, &["--verdict", "SPAM", "--from", "a@example.org", "--", "u@example.net"])
}

fn hash_of(s: &Store, id: &str) -> String {
    s.show_json(id)["hash"].as_str().expect("show --json has the hash").to_string()
}

/// `zstd -d` of `bytes`: the object decompressed by a tool that shares no code with the store.
fn unzstd(s: &Store, bytes: &[u8]) -> Vec<u8> {
    let mut c = s.program(quarantine_testkit::require("zstd", "zstd"));
    c.args(["-d", "-c"]);
    let out = run(c, Input::Bytes(bytes), HANG);
    out.code_is(0, "zstd -d");
    out.stdout
}

fn zstd(s: &Store, bytes: &[u8], level: &str) -> Vec<u8> {
    let mut c = s.program(quarantine_testkit::require("zstd", "zstd"));
    c.args([level, "-c", "--check"]);
    let out = run(c, Input::Bytes(bytes), HANG);
    out.code_is(0, "zstd");
    out.stdout
}

#[test]
fn ingest_uploads_and_reads_come_back_byte_exact_from_the_bucket() {
    let weed = Weed::shared();
    let bucket = weed.bucket();
    let s = s3_store(&bucket);
    let msgs: Vec<Vec<u8>> = (0..3).map(message).collect();
    let ids: Vec<String> = msgs.iter().map(|m| hold(&s, m)).collect();
    assert_eq!(bucket.keys(""), Vec::<String>::new(), "hold writes the spool only");
    s.q(&["ingest"]).code_is(0, "ingest");
    assert!(s.spool_files().is_empty(), "ingest dropped the spool files");
    assert!(s.blob_files().is_empty(), "nothing under STORE/blobs/: {:?}", s.blob_files());

    let mut want: Vec<String> = ids.iter().map(|id| format!("{PREFIX}/{}", hash_of(&s, id))).collect();
    want.sort();
    assert_eq!(bucket.keys(""), want);
    for (id, m) in ids.iter().zip(&msgs) {
        let object = bucket.get(&format!("{PREFIX}/{}", hash_of(&s, id))).expect("the object exists");
        assert_eq!(unzstd(&s, &object), *m, "the object is the zstd frame of the original bytes");
        assert_eq!(s.raw(id), *m, "show --raw from the object store");
    }
    let dir = s.work().join("export");
    let dir_arg = dir.display().to_string();
    s.q(&["export", "--all", "--to", &dir_arg]).code_is(0, "export");
    for (id, m) in ids.iter().zip(&msgs) {
        assert_eq!(std::fs::read(dir.join(format!("{id}.eml"))).unwrap(), *m, "export of {id} from the bucket");
    }
    s.verify_deep_clean("after ingest into the bucket");
    s.q(&["check"]).code_is(0, "check with a healthy object store");
    let c = s.q(&["config", "check"]);
    c.code_is(0, "config check connects to the object store");
}

#[test]
fn an_existing_object_is_kept_only_when_it_checks() {
    let weed = Weed::shared();
    let bucket = weed.bucket();
    let (good, bad) = (message(10), message(11));

    // Learn each message's name from a first store on another prefix of the bucket.
    let probe = store();
    probe.set_config(&bucket.config("probe"));
    let (hg, hb) = (hash_of(&probe, &hold(&probe, &good)), hash_of(&probe, &hold(&probe, &bad)));

    // Another gateway's upload of the same content, compressed differently: as good as ours, kept as it is.
    let theirs = zstd(&probe, &good, "-19");
    bucket.put(&format!("{PREFIX}/{hg}"), &theirs);
    // Garbage under the other name: never trusted, replaced by the good bytes.
    bucket.put(&format!("{PREFIX}/{hb}"), &zstd(&probe, b"not the message", "-3"));

    let s = s3_store(&bucket);
    let (ig, ib) = (hold(&s, &good), hold(&s, &bad));
    let out = s.q(&["ingest", "--json"]);
    out.code_is(0, "ingest");
    assert_eq!(bucket.get(&format!("{PREFIX}/{hg}")).unwrap(), theirs, "a matching object is left alone");
    assert_eq!(unzstd(&s, &bucket.get(&format!("{PREFIX}/{hb}")).unwrap()), bad, "a mismatching one is replaced");
    assert_eq!(s.raw(&ig), good);
    assert_eq!(s.raw(&ib), bad);
    s.verify_deep_clean("after create-only uploads met existing objects");
}

#[test]
fn purge_deletes_the_object_after_the_last_reference_and_the_grace() {
    let weed = Weed::shared();
    let bucket = weed.bucket();
    let s = s3_store(&bucket);
    let m = message(20);
    let a = hold(&s, &m);
    let b = s.hold_ok(&m, &["--verdict", "VIRUS", "--from", "other@example.org", "--", "v@example.net"]);
    s.q(&["ingest"]).code_is(0, "ingest");
    let key = format!("{PREFIX}/{}", hash_of(&s, &a));
    assert_eq!(hash_of(&s, &b), hash_of(&s, &a), "same bytes, one object");

    s.q(&["purge", "--id", &a, "--yes"]).code_is(0, "purge the first reference");
    assert!(bucket.get(&key).is_some(), "one live row still references the object");
    assert_eq!(s.raw(&b), m);

    s.q(&["purge", "--id", &b, "--yes"]).code_is(0, "purge the last reference");
    assert!(bucket.get(&key).is_some(), "uploaded within the grace period: kept");
    assert_eq!(s.sql_count("SELECT count(*) FROM gc_queue"), 1, "and still queued");

    let out = s.q(&["purge", "--all", "--yes", "--orphan-grace", "0s"]);
    out.code_is(0, "purge with no grace");
    assert!(bucket.get(&key).is_none(), "no reference and past the grace: deleted; {}", out.all());
    assert_eq!(s.sql_count("SELECT count(*) FROM gc_queue"), 0);
}

#[test]
fn verify_finds_a_deleted_and_a_corrupted_object() {
    let weed = Weed::shared();
    let bucket = weed.bucket();
    let s = s3_store(&bucket);
    let ids: Vec<String> = (30..33).map(|n| hold(&s, &message(n))).collect();
    s.q(&["ingest"]).code_is(0, "ingest");
    let (gone, bad) = (hash_of(&s, &ids[0]), hash_of(&s, &ids[1]));
    bucket.delete(&format!("{PREFIX}/{gone}"));
    bucket.put(&format!("{PREFIX}/{bad}"), &zstd(&s, b"someone else's bytes", "-3"));
    bucket.put(&format!("{PREFIX}/{}", "0".repeat(64)), b"orphan");

    let shallow = s.q(&["verify"]);
    shallow.code_is(1, "verify with a missing object");
    assert!(shallow.all().contains(&gone), "{}", shallow.all());

    let deep = s.q(&["verify", "--deep"]);
    deep.code_is(1, "verify --deep");
    let all = deep.all();
    assert!(all.contains(&gone) && all.contains(&bad), "names both: {all}");
    assert!(all.contains(&"0".repeat(64)), "reports the orphan: {all}");
    let r = s.q(&["show", &ids[1], "--raw"]);
    assert_ne!(r.code, 0, "a corrupt object is never served as the message");
}

#[test]
fn an_object_store_outage_leaves_mail_in_the_spool_and_ingest_resumes() {
    let weed = Weed::private();
    let bucket = weed.bucket();
    let s = s3_store(&bucket);
    let msgs: Vec<Vec<u8>> = (40..52).map(message).collect();
    let mut ids: Vec<String> = msgs[..4].iter().map(|m| hold(&s, m)).collect();
    s.q(&["ingest"]).code_is(0, "ingest while the object store is up");

    // The store is killed while an ingest runs over a spool of several messages.
    ids.extend(msgs[4..8].iter().map(|m| hold(&s, m)));
    let mut ingest = s.cmd(&["ingest"]);
    let child = spawn_quiet(&mut ingest);
    weed.kill();
    let out = child.wait_with_output().unwrap();
    let _ = out; // it may have finished before the kill or failed after it: both are fine, nothing is lost

    ids.extend(msgs[8..].iter().map(|m| hold(&s, m))); // holds keep exiting 0 (hold_ok asserts it)
    let down = s.q(&["ingest"]);
    assert_ne!(down.code, 0, "ingest with the object store down fails: {}", down.all());
    assert!(!s.spool_files().is_empty(), "the messages wait in the spool");
    let check = s.q(&["check"]);
    check.code_is(75, "check with the object store down");
    assert!(check.stderr.contains("object store") && check.stderr.contains("unreachable"), "{}", check.all());

    weed.start();
    s.q(&["ingest"]).code_is(0, "ingest after the object store is back");
    assert!(s.spool_files().is_empty(), "the spool drained");
    assert_eq!(s.messages(), msgs.len() as u64, "every message held once");
    for (id, m) in ids.iter().zip(&msgs) {
        assert_eq!(s.raw(id), *m, "{id} byte-exact");
    }
    s.verify_deep_clean("after the outage");
    s.q(&["check"]).code_is(0, "check after the object store is back");
}

fn spawn_quiet(c: &mut Command) -> std::process::Child {
    c.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn config_check_says_what_is_wrong_with_the_object_store() {
    let weed = Weed::shared();
    let s = store();
    let cases = [
        (
            format!("blobs = \"s3://no-such-bucket-here/p\"\n[s3]\nendpoint = \"{}\"\n", weed.endpoint()),
            "no such bucket",
        ),
        // A port nothing listens on: connecting is refused at once.
        ("blobs = \"s3://b-unreachable/p\"\n[s3]\nendpoint = \"http://127.0.0.1:9\"\n".to_string(), "unreachable"),
        ("blobs = \"S3://Bad\"\n".to_string(), "expected s3://BUCKET"),
    ];
    for (config, want) in &cases {
        s.set_config(config);
        let out = s.q(&["config", "check"]);
        out.code_is(1, &format!("config check with {config:?}"));
        assert!(out.stderr.contains(want), "{want:?} in {}", out.all());
        if *want != "expected s3://BUCKET" {
            let check = s.q(&["check"]);
            check.code_is(75, "check");
            assert!(check.stderr.contains("object store") && check.stderr.contains(want), "{}", check.all());
        }
    }

    use std::os::unix::fs::PermissionsExt;
    let creds = s.file("s3-credentials", "[default]\naws_access_key_id = AK\naws_secret_access_key = SK\n");
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
    let bucket = weed.bucket();
    let config = format!("{}credentials_file = \"{}\"\n", bucket.config(PREFIX), creds.display());
    s.set_config(&config);
    let out = s.q(&["config", "check"]);
    out.code_is(1, "config check with a world-readable credentials file");
    assert!(
        out.stderr.contains("readable by group or others") && out.stderr.contains("s3-credentials"),
        "{}",
        out.all()
    );
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    // SeaweedFS with no identities configured accepts signed requests too: the keys are used, and work.
    s.q(&["config", "check"]).code_is(0, "config check with a private credentials file");
    let id = hold(&s, &message(60));
    s.q(&["ingest"]).code_is(0, "ingest with signed requests");
    assert_eq!(s.raw(&id), message(60));
}

#[test]
fn release_sends_the_original_bytes_from_the_bucket() {
    use quarantine_testkit::smtp::{Script, Server};
    let bucket = Weed::shared().bucket();
    let s = s3_store(&bucket);
    let m =
        b"From: a@example.org\r\nTo: u@example.net\r\nSubject: release me\r\n\r\n.a leading dot\r\n8-bit \xc3\xa9\r\n"
            .to_vec();
    let id = hold(&s, &m);
    s.q(&["ingest"]).code_is(0, "ingest");
    let relay = Server::start(Script::default().ehlo(&["8BITMIME"]));
    let out = s.q(&["release", "--id", &id, "--relay", &relay.url(), "--no-trace-header", "--yes"]);
    out.code_is(0, "release from the object store");
    let t = relay.transactions();
    assert_eq!(t.len(), 1, "one transaction: {t:?}");
    assert_eq!(t[0].rcpt_addrs(), vec!["u@example.net".to_string()]);
    assert_eq!(t[0].data, m, "the relay got the original bytes");
}
