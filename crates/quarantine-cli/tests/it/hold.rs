//! Integration tests for store-and-hold (DESIGN sections 2-5 and 8), driving the real `quarantine` binary.
//!
//! What is proven here: every held message comes back byte-exact, from `show --raw` and from the blob with plain
//! `zstd -d`; blobs are named by the BLAKE3 of the original bytes and stored once; modes are 0700/0600 whatever
//! the umask; every failure of `hold` is exit 75 with one line on stderr and leaves the store consistent; a hold
//! killed at any moment never loses an acknowledged message; verify and show refuse damaged blobs; init never
//! scatters files over foreign data; show never prints terminal controls raw.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use quarantine_testkit::gen::{argv, is_id, walk, XorShift};
use quarantine_testkit::run::{feed, run, wait};
use quarantine_testkit::strace::Strace;
use quarantine_testkit::{Input, Out, Store, HANG};

use crate::store;

/// The envelope most tests hold with.
pub const ENVELOPE: &[&str] =
    &["--verdict", "PMX:VIRUS", "--scanner", "pmx", "--from", "sender@example.org", "--", "rcpt@example.net"];

/// Asserts the MTA contract for a failed hold: exit 75, nothing on stdout, exactly one line on stderr.
#[track_caller]
fn assert_tempfail(out: &Out, what: &str) {
    assert_eq!(out.code, 75, "{what}: expected exit 75, got {out:?}");
    assert!(out.stdout.is_empty(), "{what}: a failed hold printed {:?}", out.text());
    assert!(
        out.stderr.ends_with('\n') && out.stderr.matches('\n').count() == 1 && out.stderr.trim().len() > 10,
        "{what}: stderr must be exactly one line, got {:?}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Helpers local to these tests

/// Compares big byte strings without dumping them into the failure message.
fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
        panic!("{what}: {} bytes, expected {} bytes; first difference at byte {at}", got.len(), want.len());
    }
}

fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `zstd -d -c < blob`: the standard tool, not our code, reads the blob back.
fn zstd_d(blob: &Path) -> Vec<u8> {
    let out = Command::new("zstd")
        .args(["-d", "-c", "-q"])
        .stdin(fs::File::open(blob).unwrap_or_else(|e| panic!("{}: {e}", blob.display())))
        .output()
        .expect("run zstd");
    assert!(out.status.success(), "zstd -d {}: {}", blob.display(), String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Holds `msg`, then checks it every way it can be read back; returns its hash.
fn assert_round_trip(ts: &Store, name: &str, msg: &[u8]) -> String {
    let id = ts.hold_ok(msg, ENVELOPE);
    assert_same(&format!("{name}: show --raw"), &ts.raw(&id), msg);
    let j = ts.show_json(&id);
    assert_eq!(j["id"], id.as_str(), "{name}");
    assert_eq!(j["size"].as_u64(), Some(msg.len() as u64), "{name}: size");
    let hash = j["hash"].as_str().expect("hash is a string").to_string();
    assert!(is_hash(&hash), "{name}: hash {hash:?}");
    let blob = ts.blob_path(&hash);
    assert!(blob.is_file(), "{name}: no blob at {}", blob.display());
    assert_eq!(blob.file_name().unwrap().to_str(), Some(hash.as_str()));
    assert_same(&format!("{name}: zstd -d < blob"), &zstd_d(&blob), msg);
    hash
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus");
    let mut out: Vec<(String, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), fs::read(&p).unwrap()))
        .collect();
    out.sort();
    assert!(out.len() >= 6, "tests/corpus has only {} .eml files", out.len());
    out
}

fn corpus_file(name: &str) -> Vec<u8> {
    corpus().into_iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("tests/corpus/{name} is missing")).1
}

fn corpus_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus").join(name)
}

/// Lines of pseudo-random base64-alphabet text, like an encoded attachment.
fn base64ish_lines(rng: &mut XorShift, total: usize) -> Vec<u8> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut v = Vec::with_capacity(total + 80);
    while v.len() < total {
        for _ in 0..9 {
            let mut r = rng.next_u64();
            for _ in 0..8 {
                v.push(A[(r & 63) as usize]);
                r >>= 6;
            }
        }
        v.extend_from_slice(b"\r\n");
    }
    v.truncate(total);
    v
}

/// The odd and large cases, generated rather than committed.
fn generated() -> Vec<(&'static str, Vec<u8>)> {
    let mut rng = XorShift::new(42);
    let mut one_mb_header = b"From: big@example.org\r\nTo: rcpt@example.net\r\nSubject: ".to_vec();
    for i in 0..(1 << 20) / 64 {
        // One folded 1 MB Subject...
        one_mb_header
            .extend_from_slice(format!("{i:08} lorem ipsum dolor sit amet consectetur adipiscing\r\n ").as_bytes());
    }
    one_mb_header.extend_from_slice(b"end\r\nX-Unfolded: ");
    one_mb_header.extend(std::iter::repeat_n(b'x', 1 << 20)); // ...and one 1 MB line without a break
    one_mb_header.extend_from_slice(b"\r\n\r\nshort body\r\n");
    vec![
        ("empty input", Vec::new()),
        ("abc", b"abc".to_vec()),
        (
            "no body, no blank line, no final newline",
            b"From: a@example.org\r\nTo: b@example.net\r\nSubject: headers only".to_vec(),
        ),
        ("header block only", b"From: a@example.org\nSubject: nothing below\n\n".to_vec()),
        ("NUL bytes", b"From: a@example.org\nSubject: nul\0inside\n\nbody\0\0with NULs\0\n\0".to_vec()),
        ("binary garbage", rng.bytes(256 * 1024)),
        ("bare CR line ends", b"From: a@example.org\rSubject: old mac\r\rbody\r".to_vec()),
        ("1 MB header", one_mb_header),
        ("100000-byte pattern", (0..100_000u32).map(|i| (i % 251) as u8).collect()),
    ]
}

fn twenty_mb_message() -> Vec<u8> {
    let mut rng = XorShift::new(20);
    let mut m = b"From: scanner-test@example.org\r\nTo: alice@example.edu\r\nSubject: 20 MB attachment\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b20\"\r\n\r\n--b20\r\nContent-Type: text/plain\r\n\r\n\
see attachment\r\n--b20\r\nContent-Type: application/octet-stream; name=\"disk.img\"\r\n\
Content-Disposition: attachment; filename=\"disk.img\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        .to_vec();
    m.extend(base64ish_lines(&mut rng, 20 * 1024 * 1024 - m.len() - 10));
    m.extend_from_slice(b"\r\n--b20--\r\n");
    m
}

/// Asserts a failed operation left no trace: the same number of messages, and `verify --deep` is clean.
fn assert_no_message_added(ts: &Store, before: u64, what: &str) {
    assert_eq!(ts.messages(), before, "{what}: a failed hold added a message row");
    let out = ts.q(&["verify", "--deep"]);
    assert_eq!(out.code, 0, "{what}: verify --deep afterwards: {}{}", out.text(), out.stderr);
}

fn tmp_files(ts: &Store) -> Vec<PathBuf> {
    fs::read_dir(ts.root.join("tmp")).unwrap().map(|e| e.unwrap().path()).collect()
}

/// `c` run through `sh -c 'umask MASK && exec ...'`, with the same environment.
fn under_umask(mask: &str, c: &Command) -> Command {
    let mut s = Command::new("sh");
    s.arg("-c").arg(format!("umask {mask} && exec \"$0\" \"$@\"")).arg(c.get_program()).args(c.get_args());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => s.env(k, v),
            None => s.env_remove(k),
        };
    }
    s
}

const MSG: &[u8] = b"From: Mallory <mallory@evil.example>\r\nTo: alice@example.edu\r\nSubject: your parcel\r\n\
Message-ID: <parcel-1@evil.example>\r\n\r\nOpen the attached label.\r\n";

// ---------------------------------------------------------------------------------------------------------------
// 1. Byte-exact round trip

#[test]
fn corpus_round_trips_byte_exact() {
    let ts = store();
    let corpus = corpus();
    // The corpus must really contain what its names promise, or the round trip proves less than it says.
    let crlf = corpus_file("crlf.eml");
    assert!(crlf.windows(2).filter(|w| w == b"\r\n").count() == crlf.iter().filter(|&&b| b == b'\n').count());
    assert!(!corpus_file("lf-only.eml").contains(&b'\r'));
    let latin1 = corpus_file("latin1-8bit.eml");
    assert!(
        std::str::from_utf8(&latin1).is_err() && latin1.iter().any(|&b| b >= 0x80),
        "latin1-8bit.eml is not 8-bit latin1"
    );

    let mut hashes = HashSet::new();
    for (name, bytes) in &corpus {
        let hash = assert_round_trip(&ts, name, bytes);
        // The same file through --file gives the same blob.
        let path = corpus_path(name);
        let mut args = vec!["--file", path.to_str().unwrap()];
        args.extend_from_slice(ENVELOPE);
        let id = ts.hold_ok(b"", &args);
        assert_eq!(ts.show_json(&id)["hash"], hash.as_str(), "{name}: --file and stdin disagree");
        assert_same(&format!("{name} via --file"), &ts.raw(&id), bytes);
        assert!(hashes.insert(hash), "{name}: two different corpus files got the same hash");
    }
    assert_eq!(ts.blob_files().len(), corpus.len(), "one blob per distinct message");

    // The parsed fields come from the real headers (best effort, but these are plain).
    let id = ts.hold_ok(&corpus_file("multipart-attachment.eml"), ENVELOPE);
    let j = ts.show_json(&id);
    assert_eq!(j["subject"], "Invoice 2024-1187 for October");
    assert_eq!(j["attachments"], serde_json::json!(["Invoice_2024-1187.pdf"]));
    let id = ts.hold_ok(&latin1, ENVELOPE);
    assert_eq!(ts.show_json(&id)["subject"], "Grüße aus Köln");
    ts.verify_deep_clean("");
}

#[test]
fn generated_cases_round_trip_byte_exact() {
    let ts = store();
    let cases = generated();
    let mut hashes = HashSet::new();
    for (name, bytes) in &cases {
        let hash = assert_round_trip(&ts, name, bytes);
        assert!(hashes.insert(hash), "{name}: a different input already had this hash");
    }
    assert_eq!(ts.blob_files().len(), cases.len());
    ts.verify_deep_clean("");
}

#[test]
fn twenty_mb_message_round_trips_byte_exact() {
    let ts = store();
    let msg = twenty_mb_message();
    assert!(msg.len() >= 20 * 1024 * 1024);
    assert_round_trip(&ts, "20 MB message", &msg);
    ts.verify_deep_clean("");
}

/// The name is BLAKE3 of the ORIGINAL bytes (not of the zstd frame): checked against reference values computed
/// with the reference `blake3` crate, outside the code under test.
#[test]
fn blob_name_is_blake3_of_the_original_bytes() {
    let ts = store();
    let pattern: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    for (name, bytes, want) in [
        ("empty", &b""[..], "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"),
        ("abc", &b"abc"[..], "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"),
        ("pattern", &pattern[..], "d93c23eedaf165a7e0be908ba86f1a7a520d568d2d13cde787c8580c5c72cc54"),
    ] {
        assert_eq!(assert_round_trip(&ts, name, bytes), want, "{name}: blob name is not BLAKE3 of the original");
        assert!(ts.blob_path(want).is_file());
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 2. Modes

#[test]
fn store_is_0700_and_0600_whatever_the_umask() {
    let scratch = crate::scratch();
    let root = scratch.path().join("store");
    fs::create_dir(&root).unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o777)).unwrap(); // an admin's mkdir with a loose mode
    let ts = Store { scratch, root };
    let run0 = |args: &[&str], input: &[u8]| run(under_umask("000", &ts.cmd(args)), Input::Bytes(input), HANG);
    assert_eq!(run0(&["init"], b"").code, 0);
    let bounce = corpus_file("bounce-dsn.eml");
    let msgs: [&[u8]; 5] = [MSG, b"second message", MSG, b"", &bounce];
    for (i, m) in msgs.iter().enumerate() {
        let mut args = vec!["hold"];
        args.extend_from_slice(ENVELOPE);
        let out = run0(&args, m);
        assert_eq!(out.code, 0, "hold {i} under umask 000: {out:?}");
    }
    // A failed hold (tmp file created, then a read error) must not leave loose modes either.
    let out = run0(&["hold", "--file", "/", "--verdict", "V", "--from", "", "--", "r@x.example"], b"");
    assert_tempfail(&out, "hold --file /");
    // hold writes the spool; ingest (under the same umask) makes the blobs and index files.
    assert_eq!(run0(&["ingest"], b"").code, 0);

    let mut checked = (0, 0);
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&ts.root), 0o700, "store directory");
    walk(&ts.root, &mut |p, is_dir| {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode(p), want, "{} has mode {:o}", p.display(), mode(p));
        if is_dir {
            checked.0 += 1
        } else {
            checked.1 += 1
        }
    });
    assert!(ts.root.join("index.sqlite").is_file() && ts.root.join("tmp").is_dir());
    assert_eq!(ts.blob_files().len(), 4, "four distinct messages");
    assert!(checked.0 >= 2 + 4 && checked.1 >= 5, "walked too little: {checked:?}");
}

// ---------------------------------------------------------------------------------------------------------------
// 3. Dedup and idempotent retries

#[test]
fn identical_bytes_make_two_messages_and_one_blob() {
    let ts = store();
    let a = ts.hold_ok(MSG, ENVELOPE);
    let b = ts.hold_ok(MSG, ENVELOPE);
    assert_ne!(a, b, "two holds (no queue id) are two messages");
    assert_eq!(ts.show_json(&a)["hash"], ts.show_json(&b)["hash"]);
    assert_eq!(ts.messages(), 2);
    assert_eq!(ts.blob_files().len(), 1, "identical bytes are stored once");
    assert_same("first", &ts.raw(&a), MSG);
    assert_same("second", &ts.raw(&b), MSG);
    assert!(tmp_files(&ts).is_empty(), "the second hold's temp file was left behind: {:?}", tmp_files(&ts));
    ts.verify_deep_clean("");
}

#[test]
fn retried_hold_with_same_queue_id_sender_and_bytes_adds_nothing() {
    let ts = store();
    let env = argv("--verdict SPAM --queue-id 4Xk2Lp0z3Fz9tBq --from bob@example.org -- alice@example.edu");
    let first = ts.hold_ok(MSG, &env);
    for _ in 0..3 {
        let out = ts.hold(MSG, &env);
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(out.text(), format!("{first}\n"), "a retry must print the same id and nothing else");
    }
    assert_eq!(ts.messages(), 1, "retries created messages");
    assert_eq!(ts.sql_count("SELECT count(*) FROM recipients"), 1);
    assert_eq!(ts.blob_files().len(), 1);
    assert_eq!(ts.show_json(&first)["queue_id"], "4Xk2Lp0z3Fz9tBq");

    // Only the same queue id AND sender AND bytes is a retry.
    let other_bytes = ts.hold_ok(b"different bytes", &env);
    let mut env2 = env.clone();
    env2[5] = "carol@example.org";
    let other_sender = ts.hold_ok(MSG, &env2);
    let mut env3 = env.clone();
    env3[3] = "4Xk2Lp0z3Fz9tZZ";
    let other_queue_id = ts.hold_ok(MSG, &env3);
    let ids: HashSet<_> = [&first, &other_bytes, &other_sender, &other_queue_id].into_iter().collect();
    assert_eq!(ids.len(), 4, "these are four different messages");
    assert_eq!(ts.messages(), 4);
    assert_eq!(ts.blob_files().len(), 2);
    ts.verify_deep_clean("");
}

// ---------------------------------------------------------------------------------------------------------------
// 4. Envelope

#[test]
fn envelope_null_sender_and_recipients() {
    let ts = store();
    for from in ["<>", ""] {
        let mut args = argv("--verdict V --from SENDER -- postmaster@example.edu");
        args[3] = from;
        let id = ts.hold_ok(MSG, &args);
        assert_eq!(ts.show_json(&id)["from"], "", "--from {from:?} must store the null sender");
    }
    let id = ts.hold_ok(
        MSG,
        &argv(
            "--verdict PMX:VIRUS --scanner pmx --reason Eicar-Test-Signature --queue-id Q1 \
             --from <bob@example.org> --rcpt a@example.edu --rcpt b@example.edu -- c@example.edu d@example.edu",
        ),
    );
    let j = ts.show_json(&id);
    let rcpts = j["recipients"].as_array().unwrap();
    let addrs: Vec<&str> = rcpts.iter().map(|r| r["address"].as_str().unwrap()).collect();
    assert_eq!(addrs, argv("a@example.edu b@example.edu c@example.edu d@example.edu"));
    assert!(rcpts.iter().all(|r| r["state"] == "held"), "{rcpts:?}");
    assert_eq!(j["from"], "bob@example.org");
    assert_eq!(j["verdict"], "PMX:VIRUS");
    assert_eq!(j["scanner"], "pmx");
    assert_eq!(j["reason"], "Eicar-Test-Signature");
    assert_eq!(j["queue_id"], "Q1");
    assert_eq!(j["state"], "held");
}

// ---------------------------------------------------------------------------------------------------------------
// 5. Every failure of hold is 75, one line, and leaves the store as it was

#[test]
fn hold_usage_and_configuration_errors_exit_75() {
    let ts = store();
    ts.hold_ok(b"seed", ENVELOPE);
    let bad_config = ts.path().join("bad.toml");
    fs::write(&bad_config, "stroe = \"/var/lib/quarantine\"\n").unwrap();
    let bad_deadline_config = ts.path().join("deadline.toml");
    fs::write(&bad_deadline_config, "hold_deadline = \"soon\"\n").unwrap();
    let envelope = "--verdict V --from a@b.example -- r@x.example";
    // {sp}, {empty} and {crlf} stand for a space, an empty argument and CR LF (see `argv`).
    let cases: Vec<(&str, String)> = vec![
        ("unknown flag", "hold --bogus --verdict V --from a@b.example -- r@x.example".into()),
        ("unknown flag before the subcommand", format!("--bogus hold {envelope}")),
        ("missing --verdict", "hold --from a@b.example -- r@x.example".into()),
        ("missing --from", "hold --verdict V -- r@x.example".into()),
        ("blank --verdict", "hold --verdict {sp} --from a@b.example -- r@x.example".into()),
        ("no recipient", "hold --verdict V --from a@b.example".into()),
        ("recipient smuggling SMTP", "hold --verdict V --from a@b.example -- r@x.example{crlf}DATA".into()),
        ("sender with a space", "hold --verdict V --from a{sp}b@c.example -- r@x.example".into()),
        ("bad --deadline", format!("hold --deadline soon {envelope}")),
        ("--deadline without a unit", format!("hold --deadline 10 {envelope}")),
        ("empty --deadline", format!("hold --deadline {{empty}} {envelope}")),
        ("missing config file", format!("--config /nonexistent/quarantine.toml hold {envelope}")),
        ("config with an unknown key", format!("--config {} hold {envelope}", bad_config.display())),
        ("config with a bad hold_deadline", format!("--config {} hold {envelope}", bad_deadline_config.display())),
    ];
    for (what, line) in &cases {
        let out = run(ts.cmd(&argv(line)), Input::Bytes(MSG), HANG);
        assert_tempfail(&out, what);
    }
    assert!(tmp_files(&ts).is_empty(), "failed holds left temp files: {:?}", tmp_files(&ts));
    assert_eq!(ts.q(&["ingest"]).code, 0);
    assert_eq!(ts.blob_files().len(), 1);
    assert_no_message_added(&ts, 1, "usage errors");

    // No store at all, and a directory that is not a store: still 75, and nothing is created there.
    let nowhere = ts.path().join("no-such-store");
    let empty = ts.path().join("empty");
    fs::create_dir(&empty).unwrap();
    for (what, dir) in [("no store", &nowhere), ("not a store", &empty)] {
        let mut args: Vec<OsString> = vec!["--store".into(), dir.into(), "hold".into()];
        args.extend(ENVELOPE.iter().map(OsString::from));
        let out = run(ts.scratch.cmd(&args), Input::Bytes(MSG), HANG);
        assert_tempfail(&out, what);
        assert!(out.stderr.contains("not a quarantine store"), "{what}: {}", out.stderr);
    }
    assert!(!nowhere.exists(), "hold created a store directory");
    assert_eq!(fs::read_dir(&empty).unwrap().count(), 0, "hold wrote into a directory that is not a store");
}

#[test]
fn hold_read_errors_exit_75() {
    let ts = store();
    ts.hold_ok(b"seed", ENVELOPE);
    let dir = ts.path().to_str().unwrap().to_string();
    let missing = format!("{dir}/no-such-message.eml");
    for (what, file) in [("--file is a directory", &dir), ("--file does not exist", &missing)] {
        let mut args = vec!["hold", "--file", file];
        args.extend_from_slice(ENVELOPE);
        let out = run(ts.cmd(&args), Input::Null, HANG);
        assert_tempfail(&out, what);
    }
    // stdin that cannot be read (a directory): EISDIR on the first read.
    let mut args = vec!["hold"];
    args.extend_from_slice(ENVELOPE);
    let mut c = ts.cmd(&args);
    c.stdin(fs::File::open(ts.path()).unwrap()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = wait(c.spawn().unwrap(), "hold", Some(HANG), None, Instant::now());
    assert_tempfail(&out, "stdin is a directory");

    assert!(tmp_files(&ts).is_empty(), "a failed read left its temp file: {:?}", tmp_files(&ts));
    assert_no_message_added(&ts, 1, "read errors");
}

#[test]
fn hold_exits_75_when_spool_is_a_regular_file() {
    // hold writes only spool/ (DESIGN section 4): tmp/ and blobs/ are ingest's business.
    let ts = store();
    let seed = ts.hold_ok(b"seed", ENVELOPE);
    let sub = "spool";
    let (real, away) = (ts.root.join(sub), ts.root.join(format!("{sub}.away")));
    fs::rename(&real, &away).unwrap();
    fs::write(&real, b"not a directory").unwrap();
    let out = ts.hold(format!("new message for {sub}").as_bytes(), ENVELOPE);
    assert_tempfail(&out, &format!("{sub} is a regular file"));
    assert_eq!(fs::read(&real).unwrap(), b"not a directory", "hold overwrote {sub}");
    fs::remove_file(&real).unwrap();
    fs::rename(&away, &real).unwrap();
    assert_no_message_added(&ts, 1, sub);
    assert!(tmp_files(&ts).is_empty(), "{sub}: temp file left behind: {:?}", tmp_files(&ts));
    // Repaired, the store takes mail again.
    assert_round_trip(&ts, "after repair", b"new message for spool");
    assert_same("seed", &ts.raw(&seed), b"seed");
}

/// What a traced hold did, in order: fsyncs (path relative to the store root, "" for the root itself), renames
/// into `blobs/`, and the id written to stdout (the acknowledgement).
#[derive(Debug, PartialEq)]
enum Ev {
    Sync(String),
    Rename(String),
    Ack,
}

/// Runs `hold` (with [`ENVELOPE`]) under strace, optionally injecting a fault, and returns what it did.
fn traced_hold(ts: &Store, msg: &[u8], inject: Option<&str>) -> (Out, Vec<Ev>) {
    let trace = ts.work().join("trace");
    let mut strace = Strace::new().trace(&["fsync", "fdatasync", "rename", "renameat", "renameat2", "write"]);
    if let Some(spec) = inject {
        strace = strace.inject(spec);
    }
    let mut args: Vec<OsString> = vec!["--store".into(), ts.root.clone().into(), "hold".into()];
    args.extend(ENVELOPE.iter().map(OsString::from));
    let out = run(strace.trace_to(&trace).command(ts, &args), Input::Bytes(msg), HANG);
    let text =
        fs::read_to_string(&trace).unwrap_or_else(|e| panic!("no strace output ({e}); is strace usable? {out:?}"));
    let root = ts.root.to_str().unwrap();
    let rel = |p: &str| p.strip_prefix(root).map(|r| r.trim_start_matches('/').to_string());
    let mut evs = Vec::new();
    for line in text.lines() {
        if line.contains("fsync(") || line.contains("fdatasync(") {
            let path = line.split_once('<').and_then(|(_, r)| r.split_once(">)")).map(|(p, _)| p).unwrap();
            evs.push(Ev::Sync(rel(path).unwrap_or_else(|| panic!("fsync outside the store: {line}"))));
        } else if line.contains("rename") && line.contains("/spool/") {
            let to = line.rsplit(", \"").next().unwrap().split('"').next().unwrap();
            evs.push(Ev::Rename(rel(to).unwrap()));
        } else if line.contains(" write(1<") {
            evs.push(Ev::Ack);
        }
    }
    (out, evs)
}

const SEED: &[u8] = b"From: seed@example.org\r\nSubject: seed\r\n\r\nseed\r\n";

/// One fsync (or fdatasync) in a hold fails with EIO. Any failure before the id is printed must be 75 with the
/// store unchanged; the hold is never retried-and-trusted. A failure after the commit (the checkpoint SQLite runs
/// on close) may still be 0, and then the message must be intact.
#[test]
fn hold_exits_75_on_injected_fsync_eio() {
    // Baseline: which fsyncs a hold does, in which order, relative to the rename and the printed id.
    let ts = store();
    ts.hold_ok(SEED, ENVELOPE);
    let (out, evs) = traced_hold(&ts, MSG, None);
    assert_eq!(out.code, 0, "strace does not work here (ptrace not permitted?): {out:?}");
    let pos = |f: &dyn Fn(&Ev) -> bool| evs.iter().position(f);
    let ack = pos(&|e| *e == Ev::Ack).expect("the id was printed");
    let staged = pos(&|e| matches!(e, Ev::Sync(p) if p.starts_with("spool/.") && p.ends_with(".tmp")))
        .expect("spool temp file fsync");
    let renamed = pos(&|e| matches!(e, Ev::Rename(_))).expect("rename into spool/");
    let dir_synced = evs[renamed..].iter().position(|e| *e == Ev::Sync("spool".into())).map(|i| i + renamed);
    // DESIGN section 4: spool file fsynced, renamed, spool/ fsynced, then the id. The index is never touched.
    assert!(matches!(dir_synced, Some(d) if staged < renamed && d < ack), "write order violated: {evs:?}");
    assert!(!evs.iter().any(|e| matches!(e, Ev::Sync(p) if p.starts_with("index"))), "hold synced the index: {evs:?}");

    let syncs: Vec<(usize, String)> = evs
        .iter()
        .enumerate()
        .filter_map(|(i, e)| if let Ev::Sync(p) = e { Some((i, p.clone())) } else { None })
        .collect();
    let mut failed = 0;
    for (n, (i, path)) in syncs.iter().enumerate() {
        let n = n + 1;
        // SQLite fsyncs the directory after creating the -wal and ignores that call's error by design (some
        // filesystems reject directory fsync); that one call, and only that one, may fail without failing the hold.
        let sqlite_dirsync = path.is_empty() && *i > 0 && evs[i - 1] == Ev::Sync("index.sqlite-wal".into());
        let ts = store();
        ts.hold_ok(SEED, ENVELOPE);
        let (out, _) = traced_hold(&ts, MSG, Some(&format!("fsync:error=EIO:when={n}")));
        let what = format!("EIO on fsync #{n} ({path:?})");
        if *i < ack && !sqlite_dirsync {
            assert_tempfail(&out, &what);
            assert!(
                out.stderr.contains("Input/output error") || out.stderr.contains("I/O error"),
                "{what}: {}",
                out.stderr
            );
        }
        if out.code == 75 {
            failed += 1;
            assert_tempfail(&out, &what);
            assert_no_message_added(&ts, 1, &what);
        } else {
            assert_eq!(out.code, 0, "{what}: {out:?}");
            let id = out.text().trim().to_string();
            assert_same(&what, &ts.raw(&id), MSG);
            assert_eq!(ts.messages(), 2, "{what}");
            ts.verify_deep_clean("");
        }
    }
    assert!(failed >= 2, "only {failed} of {} injected fsync failures failed the hold: {evs:?}", syncs.len());

    // Every fsync and fdatasync failing.
    let ts = store();
    ts.hold_ok(SEED, ENVELOPE);
    let (out, _) = traced_hold(&ts, MSG, Some("fsync,fdatasync:error=EIO"));
    assert_tempfail(&out, "EIO on every fsync and fdatasync");
    assert_no_message_added(&ts, 1, "EIO on every fsync and fdatasync");
}

/// A hold whose `spool/` fsync failed (75) has renamed its file into place without making the name durable: it
/// takes the file back, so the MTA's retry is the only copy and no unacknowledged message is indexed.
#[test]
fn hold_takes_its_spool_file_back_when_the_spool_fsync_fails() {
    let ts = store();
    ts.hold_ok(SEED, ENVELOPE);
    let probe = store();
    probe.hold_ok(SEED, ENVELOPE);
    let (_, evs) = traced_hold(&probe, MSG, None);
    let renamed = evs.iter().position(|e| matches!(e, Ev::Rename(_))).unwrap();
    assert_eq!(evs[renamed + 1], Ev::Sync("spool".into()), "{evs:?}");
    let n = evs[..=renamed + 1].iter().filter(|e| matches!(e, Ev::Sync(_))).count();
    let (out, _) = traced_hold(&ts, MSG, Some(&format!("fsync:error=EIO:when={n}")));
    assert_tempfail(&out, "EIO on the spool directory's fsync");
    assert_no_message_added(&ts, 1, "EIO on the spool directory's fsync");
    // The MTA retries.
    let (out, _) = traced_hold(&ts, MSG, None);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(ts.messages(), 2);
}

/// Postfix reads the pipe's output; if that reader is gone, writing the one-line reason fails with EPIPE. The
/// hold must still exit 75 (a panic from `eprintln!`, or an abort from a panic inside the panic hook, is not 75).
#[test]
fn hold_exits_75_even_when_stderr_is_a_broken_pipe() {
    let ts = store();
    ts.hold_ok(b"seed", ENVELOPE);
    // A failure of the spool (a regular file where spool/ should be), with the stderr reader closed first. hold may
    // give up before it reads stdin (it checks spool/ first), so writing the message may meet a closed pipe.
    let (real, away) = (ts.root.join("spool"), ts.root.join("spool.away"));
    fs::rename(&real, &away).unwrap();
    fs::write(&real, b"").unwrap();
    let mut args = vec!["hold"];
    args.extend_from_slice(ENVELOPE);
    let mut child = ts.cmd(&args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stderr.take()); // the reader goes away
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(MSG);
    drop(stdin);
    let mut stdout = Vec::new();
    std::io::Read::read_to_end(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    let status = child.wait().unwrap();
    fs::remove_file(&real).unwrap();
    fs::rename(&away, &real).unwrap();
    assert_eq!(status.code(), Some(75), "hold with a broken stderr: {status:?}");
    assert!(stdout.is_empty());
    assert_no_message_added(&ts, 1, "broken stderr");
}

/// DESIGN section 2: a command run as root must not leave a file the store's account cannot open. The store is
/// given to `nobody`; everything root's commands create (blob dirs, blobs, temp files, SQLite's -wal and -shm)
/// must belong to `nobody` too.
#[test]
fn files_created_as_root_belong_to_the_store_owner() {
    use std::os::unix::fs::MetadataExt;
    let ts = store();
    quarantine_testkit::env::require_root("to give the store to nobody");
    const NOBODY: u32 = 65534;
    std::os::unix::fs::chown(&ts.root, Some(NOBODY), Some(NOBODY)).unwrap();
    walk(&ts.root, &mut |p, _| std::os::unix::fs::lchown(p, Some(NOBODY), Some(NOBODY)).unwrap());
    let check = |when: &str| {
        let mut n = 0;
        walk(&ts.root, &mut |p, _| {
            let m = fs::symlink_metadata(p).unwrap();
            assert_eq!(
                (m.uid(), m.gid()),
                (NOBODY, NOBODY),
                "{when}: {} belongs to {}:{}",
                p.display(),
                m.uid(),
                m.gid()
            );
            n += 1;
        });
        n
    };
    let id = ts.hold_ok(MSG, ENVELOPE);
    ts.hold_ok(b"a second blob, in new directories", ENVELOPE);
    assert_same("as root", &ts.raw(&id), MSG);
    ts.verify_deep_clean("");
    assert_eq!(ts.q(&["init"]).code, 0);
    assert!(check("after holds, show, verify and init") > 2 + 2 + 4);

    // While a hold is running (stdin still open) its spool temp file exists; SQLite's -wal and -shm come from
    // the ingest every index command runs (hold itself never opens the index).
    let mut args = vec!["hold"];
    args.extend_from_slice(ENVELOPE);
    let mut child = ts.cmd(&args).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"From: slow@example.org\r\n").unwrap();
    let started = Instant::now();
    // The temp file is created (as root) and then chowned: wait for the chown, not only for the file, or the check
    // below races the microseconds between the two (seen under load). A hold killed inside that window leaves a
    // root-owned empty temp file, which the owner's ingest can still remove (it owns the directory).
    let spool_tmp = || {
        fs::read_dir(ts.root.join("spool")).unwrap().flatten().any(|e| {
            e.file_name().to_string_lossy().ends_with(".tmp")
                && fs::symlink_metadata(e.path()).is_ok_and(|m| m.uid() == NOBODY)
        })
    };
    while !spool_tmp() && started.elapsed() < HANG {
        std::thread::sleep(Duration::from_millis(10));
    }
    let n = check("during a hold");
    let _ = child.kill();
    let _ = child.wait();
    assert!(n >= 2 + 2 + 4 + 1 + 3, "a running hold's files were not all there: {n}");
    let search = ts.q(&["search"]);
    assert_eq!(search.code, 0, "{search:?}");
    check("after a killed hold");
}

#[test]
fn hold_exits_0_while_the_index_stays_locked_past_the_deadline() {
    let ts = store();
    ts.hold_ok(b"seed", ENVELOPE);
    // A sqlite3 shell takes the write lock (BEGIN IMMEDIATE and a write) and says so on its stdout before the hold
    // starts; it keeps the lock until it is dropped.
    let locker = ts.lock_index();

    let mut args = vec!["hold", "--deadline", "2s"];
    args.extend_from_slice(ENVELOPE);
    let out = run(ts.cmd(&args), Input::Bytes(MSG), Duration::from_secs(30));
    drop(locker); // EOF: the locker exits and releases the lock
                  // DESIGN section 4: hold never touches the index, so a lock never makes it wait or fail.
    out.code_is(0, "hold beside a locked index");
    assert!(out.elapsed < Duration::from_secs(2), "hold waited {:?} for a lock it must not take", out.elapsed);
    // The lock is gone: the message is indexed and comes back byte-exact.
    let id = out.text().trim().to_string();
    assert_same("after the lock", &ts.raw(&id), MSG);
    assert_eq!(ts.messages(), 2);
}

#[test]
fn hold_exits_75_by_its_deadline_when_the_config_file_blocks() {
    // A config "file" that is a FIFO nobody writes blocks open(2) before the config (and its deadline) is read:
    // the deadline is armed before that, from --deadline (or the default), so the MTA gets 75, not a hang it
    // would time out and bounce.
    let ts = store();
    let fifo = ts.scratch.path().join("config.fifo");
    let ok = Command::new("mkfifo").arg(&fifo).status().unwrap().success();
    assert!(ok, "mkfifo");
    let mut args: Vec<&str> = vec!["--config", fifo.to_str().unwrap(), "hold", "--deadline", "1s"];
    args.extend_from_slice(ENVELOPE);
    let out = run(ts.cmd(&args), Input::Bytes(MSG), Duration::from_secs(30));
    assert_tempfail(&out, "a config file that blocks");
    assert!(out.stderr.contains("deadline of 1s"), "{}", out.brief());
    assert!(ts.spool_files().is_empty(), "nothing held");
}

#[test]
fn hold_exits_75_when_stdin_never_closes() {
    let ts = store();
    ts.hold_ok(b"seed", ENVELOPE);
    let mut args = vec!["hold", "--deadline", "1s"];
    args.extend_from_slice(ENVELOPE);
    let started = Instant::now();
    let mut child = ts.cmd(&args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"From: slow@example.org\r\nSubject: never ends\r\n").unwrap();
    let out = wait(child, "hold", Some(Duration::from_secs(30)), None, started);
    drop(stdin);
    assert_tempfail(&out, "stdin never closes");
    assert!(out.elapsed >= Duration::from_millis(900), "gave up after {:?}, before the 1s deadline", out.elapsed);
    assert!(out.elapsed < Duration::from_secs(5), "the 1s deadline fired only after {:?}", out.elapsed);
    assert_no_message_added(&ts, 1, "stdin never closes");
}

// ---------------------------------------------------------------------------------------------------------------
// 6. SIGKILL at random moments never loses an acknowledged message

#[test]
fn sigkill_at_random_moments_never_loses_an_acknowledged_hold() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 75;
    let ts = store();
    let shared: Vec<u8> = [MSG, b"\r\nshared body, held by many killed holds\r\n"].concat();
    // Kill after 0-30 ms; on a machine so slow (or so loaded: THREADS holds share the cores) that a hold takes
    // longer than that, stretch the range so that some holds still complete (otherwise the loop would prove nothing
    // about acknowledged messages).
    let mut times: Vec<Duration> = (0..5).map(|_| ts.hold(&shared, ENVELOPE).elapsed).collect();
    times.sort();
    let max_delay_ms = (times[2].as_millis() as u64 * THREADS).max(30);
    let acked: Mutex<Vec<(String, Vec<u8>)>> = Mutex::new(Vec::new());
    let killed = Mutex::new(0u32);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (ts, shared, acked, killed) = (&ts, &shared, &acked, &killed);
            s.spawn(move || {
                for k in 0..PER_THREAD {
                    let i = t * PER_THREAD + k;
                    let mut rng = XorShift::new(i + 1);
                    let msg = if i.is_multiple_of(5) {
                        shared.clone()
                    } else {
                        let size = match rng.below(10) {
                            0..=4 => rng.below(2_000),
                            5..=8 => rng.below(64_000),
                            _ => rng.below(1_000_000),
                        } as usize;
                        let mut m = format!(
                            "From: sender{i}@example.org\r\nTo: rcpt@example.net\r\nSubject: kill loop {i}\r\n\
                             Message-ID: <{i}@kill.example>\r\n\r\n"
                        )
                        .into_bytes();
                        m.extend(base64ish_lines(&mut rng, size));
                        m
                    };
                    let qid = format!("Q{i}");
                    let mut args = vec!["hold", "--verdict", "SPAM", "--from", "s@example.org"];
                    if i.is_multiple_of(2) {
                        args.extend_from_slice(&["--queue-id", qid.as_str()]);
                    }
                    args.extend_from_slice(&["--", "r@example.net"]);
                    let delay = Duration::from_millis(rng.below(max_delay_ms + 1));
                    let started = Instant::now();
                    let mut child = ts
                        .cmd(&args)
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()
                        .unwrap();
                    let writer = feed(child.stdin.take().expect("piped stdin"), &msg);
                    std::thread::sleep(delay);
                    let _ = child.kill(); // SIGKILL; a no-op if it already exited
                    let out = wait(child, "hold", Some(HANG), None, started);
                    let _ = writer.join();
                    match out.code {
                        0 => {
                            let id = out.text().trim().to_string();
                            assert!(is_id(&id), "hold {i} exited 0 and printed {:?}", out.text());
                            acked.lock().unwrap().push((id, msg));
                        }
                        137 => *killed.lock().unwrap() += 1,
                        _ => panic!("hold {i} (not killed in time) failed: {out:?}"),
                    }
                }
            });
        }
    });
    let acked = acked.into_inner().unwrap();
    let killed = killed.into_inner().unwrap();
    eprintln!("kill loop: {} acknowledged, {killed} killed, delays 0-{max_delay_ms} ms", acked.len());
    assert!(
        acked.len() >= 10 && killed >= 10,
        "the loop must both kill and complete holds: {} / {killed}",
        acked.len()
    );
    for (id, msg) in &acked {
        assert_same(&format!("acknowledged {id}"), &ts.raw(id), msg);
    }
    assert!(ts.messages() >= acked.iter().map(|(id, _)| id).collect::<HashSet<_>>().len() as u64);
    ts.verify_deep_clean("");
}

// ---------------------------------------------------------------------------------------------------------------
// 7. verify and show refuse damaged blobs

#[test]
fn verify_deep_and_show_catch_flipped_and_truncated_blobs() {
    let ts = store();
    let flipped_msg = corpus_file("multipart-attachment.eml");
    let truncated_msg = base64ish_lines(&mut XorShift::new(7), 300_000);
    let (a, b, c) =
        (ts.hold_ok(&flipped_msg, ENVELOPE), ts.hold_ok(&truncated_msg, ENVELOPE), ts.hold_ok(MSG, ENVELOPE));
    let hash = |id: &str| ts.show_json(id)["hash"].as_str().unwrap().to_string();
    let (ha, hb) = (hash(&a), hash(&b));
    ts.verify_deep_clean("");

    // One flipped byte in the middle of A's blob.
    let pa = ts.blob_path(&ha);
    let original = fs::read(&pa).unwrap();
    let mut bad = original.clone();
    bad[original.len() / 2] ^= 0x01;
    fs::write(&pa, &bad).unwrap();
    let out = ts.q(&["verify", "--deep"]);
    assert_eq!(out.code, 1, "verify --deep missed a flipped byte: {}", out.text());
    let report = out.text();
    assert!(report.to_lowercase().contains("corrupt") && report.contains(&ha) && report.contains(&a), "{report}");
    assert!(!report.contains(&hb), "an intact blob reported: {report}");
    for mode in ["--raw", "--headers"] {
        let out = ts.q(&["show", &a, mode]);
        assert_eq!(out.code, 1, "show {mode} on a corrupt blob: {out:?}");
        assert!(out.stdout.is_empty(), "show {mode} wrote {} bytes of a corrupt blob", out.stdout.len());
        assert!(out.stderr.to_lowercase().contains("corrupt"), "show {mode}: {}", out.stderr);
    }
    fs::write(&pa, &original).unwrap();
    ts.verify_deep_clean("");

    // B's blob cut in half.
    let pb = ts.blob_path(&hb);
    let len = fs::metadata(&pb).unwrap().len();
    fs::OpenOptions::new().write(true).open(&pb).unwrap().set_len(len / 2).unwrap();
    let out = ts.q(&["verify", "--deep"]);
    assert_eq!(out.code, 1, "verify --deep missed a truncated blob: {}", out.text());
    assert!(out.text().to_lowercase().contains("corrupt") && out.text().contains(&hb), "{}", out.text());
    let out = ts.q(&["show", &b, "--raw"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.is_empty(), "show --raw wrote {} bytes of a truncated blob", out.stdout.len());
    // The others are still fine.
    assert_same("intact message", &ts.raw(&c), MSG);
}

#[test]
fn verify_catches_a_deleted_blob() {
    let ts = store();
    let (a, b) = (ts.hold_ok(MSG, ENVELOPE), ts.hold_ok(b"another message", ENVELOPE));
    let ha = ts.show_json(&a)["hash"].as_str().unwrap().to_string();
    assert_eq!(ts.q(&["verify"]).code, 0);
    fs::remove_file(ts.blob_path(&ha)).unwrap();
    let out = ts.q(&["verify"]);
    assert_eq!(out.code, 1, "plain verify missed a deleted blob: {}", out.text());
    assert!(
        out.text().to_lowercase().contains("missing") && out.text().contains(&ha) && out.text().contains(&a),
        "{}",
        out.text()
    );
    let out = ts.q(&["show", &a, "--raw"]);
    assert_eq!(out.code, 1);
    assert!(out.stdout.is_empty());
    assert_same("the other message", &ts.raw(&b), b"another message");
}

// ---------------------------------------------------------------------------------------------------------------
// 8. init

#[test]
fn init_on_an_existing_store_is_harmless() {
    let ts = store();
    let id = ts.hold_ok(MSG, ENVELOPE);
    let index_before = fs::read(ts.root.join("index.sqlite")).unwrap();
    for _ in 0..2 {
        let out = ts.q(&["init"]);
        assert_eq!(out.code, 0, "{out:?}");
    }
    assert_eq!(fs::read(ts.root.join("index.sqlite")).unwrap(), index_before, "init rewrote the index");
    assert_eq!(ts.messages(), 1);
    assert_same("after re-init", &ts.raw(&id), MSG);
    ts.verify_deep_clean("");
}

#[test]
fn init_refuses_a_non_empty_directory_that_is_not_a_store() {
    let dir = crate::scratch();
    // Someone's files...
    let docs = dir.path().join("docs");
    fs::create_dir(&docs).unwrap();
    fs::write(docs.join("notes.txt"), b"do not touch").unwrap();
    // ...and some other program's SQLite database that happens to be called index.sqlite.
    let other = dir.path().join("other");
    fs::create_dir(&other).unwrap();
    let st = Command::new(quarantine_testkit::require("sqlite3", "sqlite3"))
        .arg(other.join("index.sqlite"))
        .arg("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .status();
    assert!(st.unwrap().success());
    for d in [&docs, &other] {
        let before = listing(d);
        let mode_before = fs::metadata(d).unwrap().permissions().mode();
        let out = run(dir.cmd(&[OsString::from("--store"), d.into(), "init".into()]), Input::Null, HANG);
        assert_eq!(out.code, 1, "init on {}: {out:?}", d.display());
        assert!(out.stderr.contains("not empty") || out.stderr.contains("not a quarantine store"), "{}", out.stderr);
        assert_eq!(listing(d), before, "init changed {}", d.display());
        assert_eq!(fs::metadata(d).unwrap().permissions().mode(), mode_before, "init chmodded {}", d.display());
    }
}

/// Every file below `d` with its bytes.
fn listing(d: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v = Vec::new();
    walk(d, &mut |p, is_dir| v.push((p.to_path_buf(), if is_dir { Vec::new() } else { fs::read(p).unwrap() })));
    v.sort();
    v
}

#[test]
fn other_commands_refuse_a_directory_that_is_not_a_store() {
    let dir = crate::scratch();
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let full = dir.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("README"), b"my files").unwrap();
    let missing = dir.path().join("missing");
    for d in [&empty, &full, &missing] {
        let existed = d.exists();
        let before = if existed { listing(d) } else { Vec::new() };
        for args in [&["show", "0123456789"][..], &["show", "0123456789", "--raw"], &["verify"], &["verify", "--deep"]]
        {
            let mut full_args: Vec<OsString> = vec!["--store".into(), d.into()];
            full_args.extend(args.iter().map(OsString::from));
            let out = run(dir.cmd(&full_args), Input::Null, HANG);
            assert_eq!(out.code, 1, "{args:?} on {}: {out:?}", d.display());
            assert!(out.stderr.contains("not a quarantine store"), "{args:?} on {}: {}", d.display(), out.stderr);
            assert!(out.stdout.is_empty());
        }
        if existed {
            assert_eq!(listing(d), before, "a command wrote into {}", d.display());
        } else {
            assert!(!d.exists(), "a command created {}", d.display());
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 9. show escapes terminal controls

#[test]
fn show_never_prints_terminal_controls_raw() {
    let ts = store();
    let msg = corpus_file("hostile-subject.eml");
    assert!(msg.windows(4).any(|w| w == b"\x1b[2J") && msg.windows(3).any(|w| w == "\u{202e}".as_bytes()));
    let id = ts.hold_ok(&msg, ENVELOPE);

    // The index keeps the subject as it is; escaping is the printer's job.
    let j = ts.show_json(&id);
    let subject = j["subject"].as_str().unwrap();
    assert!(
        subject.contains("\u{1b}[2J") && subject.contains('\u{202e}'),
        "subject was not indexed verbatim: {subject:?}"
    );

    let out = ts.q(&["show", &id]);
    assert_eq!(out.code, 0, "{out:?}");
    let text = out.text();
    for (what, bad) in [
        ("ESC", "\u{1b}"),
        ("BEL", "\u{7}"),
        ("RLO U+202E", "\u{202e}"),
        ("PDF U+202C", "\u{202c}"),
        ("CSI U+009B", "\u{9b}"),
    ] {
        assert!(!text.contains(bad), "show printed a raw {what}:\n{text}");
    }
    assert!(
        text.contains("\\x1b[2J") && text.contains("\\u{202e}fdp.exe"),
        "the subject is not shown (escaped):\n{text}"
    );
    assert!(text.contains(&id));

    // --json escapes control characters the JSON way.
    let out = ts.q(&["show", &id, "--json"]);
    assert!(!out.stdout.contains(&0x1b) && !out.stdout.contains(&0x07), "raw control byte in --json output");
}
