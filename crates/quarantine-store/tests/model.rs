//! Model-based property test of the store (DESIGN sections 4 and 7): random sequences of hold, purge by id and by
//! verdict, release marking, reopen, simulated crashes and orphan sweeps run against the library and against a
//! small in-memory model of what must be true, compared after every step:
//! - every message the model knows is in the index; a live one reads back byte-exact through `Store::original`,
//!   a purged one is a tombstone whose original is refused;
//! - recipients and their states are as the model says (case-insensitive dedup, retries with the same queue id
//!   join the existing message);
//! - the blob files on disk are exactly the model's: a blob goes only when a purge's GC (or an orphan sweep)
//!   finds no live row for it, and a hold between a purge's rows and its GC keeps it;
//! - `verify --deep` is clean.
//!
//! `PROPTEST_CASES` sets the number of sequences (default 48; scripts/torture runs more).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use quarantine_store::PurgeRule;
use quarantine_store::Selector;
use quarantine_store::{HoldRequest, Silent, Store};

/// The bodies holds draw from: few, so dedup happens all the time.
/// A second connection to the store's index: the model plays the part of a crash or a concurrent writer, which the
/// library's API rightly offers no way to do.
fn index(store: &Store) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(store.index_path()).expect("open the index");
    conn.busy_timeout(std::time::Duration::from_secs(30)).expect("busy timeout");
    conn
}

fn bodies() -> Vec<Vec<u8>> {
    let mut big = b"From: big@example.org\r\nSubject: big\r\n\r\n".to_vec();
    for i in 0..4000u32 {
        big.extend_from_slice(format!("line {i} of a long body, quite compressible\r\n").as_bytes());
    }
    vec![
        b"From: a@example.org\r\nSubject: one\r\n\r\nbody one\r\n".to_vec(),
        b"From: b@example.org\nSubject: bare LF\n\nbody two\n.\n".to_vec(),
        Vec::new(),
        b"\x00\x01binary\xff\xfe\r\n\r\n\x00".to_vec(),
        big,
    ]
}

const VERDICTS: &[&str] = &["SPAM", "PMX:VIRUS"];
/// Recipient choices; the last is the first in another case, which must dedup onto it.
const RCPTS: &[&str] = &["a@example.net", "b@example.net", "c@example.net", "A@Example.NET"];
const MARKS: &[&str] = &["held", "releasing", "released", "failed"];

#[derive(Clone, Debug)]
enum Op {
    Hold {
        body: usize,
        verdict: usize,
        rcpts: Vec<usize>,
        queue: Option<u8>,
    },
    PurgeId(usize),
    PurgeVerdict(usize),
    /// Sets one recipient's release state, as a release's journal would.
    Mark {
        msg: usize,
        rcpt: usize,
        state: usize,
    },
    Reopen,
    /// A hold killed between rename and commit: a complete blob, no row.
    CrashOrphanBlob(usize),
    /// A hold killed while staging: a partial temp file.
    CrashTempFile,
    /// A write transaction that never committed (a row pointing at a blob that does not exist).
    CrashAbortedTx,
    /// A purge killed between its row transaction and its GC: the tombstone and the queued hash, no unlink.
    CrashBeforeGc(usize),
    /// `purge` with no orphan grace: removes orphans and temp files.
    Sweep,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..5usize, 0..2usize, prop::collection::vec(0..4usize, 1..4), prop::option::of(0..3u8))
            .prop_map(|(body, verdict, rcpts, queue)| Op::Hold { body, verdict, rcpts, queue }),
        2 => any::<usize>().prop_map(Op::PurgeId),
        1 => (0..2usize).prop_map(Op::PurgeVerdict),
        2 => (any::<usize>(), 0..4usize, 0..4usize).prop_map(|(msg, rcpt, state)| Op::Mark { msg, rcpt, state }),
        1 => Just(Op::Reopen),
        1 => (0..5usize).prop_map(Op::CrashOrphanBlob),
        1 => Just(Op::CrashTempFile),
        1 => Just(Op::CrashAbortedTx),
        1 => any::<usize>().prop_map(Op::CrashBeforeGc),
        1 => Just(Op::Sweep),
    ]
}

#[derive(Clone, Debug)]
struct MMsg {
    id: String,
    body: usize,
    verdict: usize,
    queue: Option<u8>,
    /// (address as first given, state)
    rcpts: Vec<(String, String)>,
    purged: bool,
}

#[derive(Default, Debug)]
struct Model {
    msgs: Vec<MMsg>,
    /// Bodies whose blob is on disk.
    on_disk: BTreeSet<usize>,
    /// Bodies whose hash sits in the GC queue.
    queued: BTreeSet<usize>,
    tmp_files: usize,
}

impl Model {
    fn live_refs(&self, body: usize) -> usize {
        self.msgs.iter().filter(|m| !m.purged && m.body == body).count()
    }

    /// A purge's effect on `victims` (indexes), then its GC of everything queued.
    fn purge(&mut self, victims: &[usize]) {
        for &i in victims {
            let m = &mut self.msgs[i];
            if m.purged || m.rcpts.iter().any(|(_, s)| s == "releasing") {
                continue;
            }
            m.purged = true;
            for r in &mut m.rcpts {
                r.1 = "purged".into();
            }
            let body = m.body;
            if self.live_refs(body) == 0 {
                self.queued.insert(body);
            }
        }
        self.gc();
    }

    fn gc(&mut self) {
        for body in std::mem::take(&mut self.queued) {
            if self.live_refs(body) == 0 {
                self.on_disk.remove(&body);
            }
        }
    }
}

fn hash_of(b: &[u8]) -> String {
    blake3::hash(b).to_hex().to_string()
}

fn blob_path(root: &Path, hash: &str) -> std::path::PathBuf {
    root.join("blobs").join(&hash[0..2]).join(&hash[2..4]).join(hash)
}

fn files_under(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out
}

fn open(root: &Path) -> Store {
    Store::open(root, Duration::from_secs(5)).expect("open")
}

fn purge_with(store: &mut Store, selector: Selector) {
    let rule = PurgeRule { selector, exclude_verdicts: Vec::new(), label: "model".into() };
    let plan = store.purge_plan(vec![rule]).expect("plan");
    store.purge(&plan, "model", Some("model test"), &Silent).expect("purge");
}

fn run_ops(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let bodies = bodies();
    let hashes: Vec<String> = bodies.iter().map(|b| hash_of(b)).collect();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let (mut store, _) = Store::init(&root).expect("init");
    let mut model = Model::default();

    for (step, op) in ops.iter().enumerate() {
        let at = format!("step {step} {op:?}");
        match op {
            Op::Hold { body, verdict, rcpts, queue } => {
                let req = HoldRequest {
                    from: "sender@example.org".into(),
                    recipients: rcpts.iter().map(|&r| RCPTS[r].to_string()).collect(),
                    verdict: VERDICTS[*verdict].into(),
                    scanner: Some("model".into()),
                    reason: None,
                    queue_id: queue.map(|q| format!("QUEUE{q}")),
                    scanner_version: None,
                };
                let out =
                    store.hold(&req, &mut &bodies[*body][..]).map_err(|e| TestCaseError::fail(format!("{at}: {e}")))?;
                prop_assert_eq!(&out.hash, &hashes[*body], "{}", at);
                prop_assert_eq!(out.size, bodies[*body].len() as u64, "{}", at);
                // A retry: a live message with the same queue id, sender and bytes.
                let existing = queue
                    .and_then(|q| model.msgs.iter().position(|m| !m.purged && m.queue == Some(q) && m.body == *body));
                prop_assert_eq!(out.duplicate, existing.is_some(), "{}", at);
                let idx = match existing {
                    Some(i) => {
                        prop_assert_eq!(&out.id, &model.msgs[i].id, "{}", at);
                        i
                    }
                    None => {
                        prop_assert!(model.msgs.iter().all(|m| m.id != out.id), "{}: id reused", at);
                        model.msgs.push(MMsg {
                            id: out.id.clone(),
                            body: *body,
                            verdict: *verdict,
                            queue: *queue,
                            rcpts: Vec::new(),
                            purged: false,
                        });
                        model.on_disk.insert(*body);
                        model.queued.remove(body);
                        model.msgs.len() - 1
                    }
                };
                for &r in rcpts {
                    let a = RCPTS[r];
                    let m = &mut model.msgs[idx];
                    if !m.rcpts.iter().any(|(x, _)| x.eq_ignore_ascii_case(a)) {
                        m.rcpts.push((a.to_string(), "held".into()));
                    }
                }
            }
            Op::PurgeId(i) => {
                if model.msgs.is_empty() {
                    continue;
                }
                let i = i % model.msgs.len();
                let sel = Selector { ids: vec![model.msgs[i].id.clone()], ..Default::default() };
                purge_with(&mut store, sel);
                model.purge(&[i]);
            }
            Op::PurgeVerdict(v) => {
                let sel = Selector { verdicts: vec![VERDICTS[*v].into()], ..Default::default() };
                purge_with(&mut store, sel);
                let victims: Vec<usize> = (0..model.msgs.len()).filter(|&i| model.msgs[i].verdict == *v).collect();
                model.purge(&victims);
            }
            Op::Mark { msg, rcpt, state } => {
                if model.msgs.is_empty() {
                    continue;
                }
                let i = msg % model.msgs.len();
                let m = &mut model.msgs[i];
                if m.purged || m.rcpts.is_empty() {
                    continue;
                }
                let r = rcpt % m.rcpts.len();
                let new = MARKS[*state];
                let n = index(&store)
                    .execute(
                        "UPDATE recipients SET state = ?1, release_id = CASE WHEN ?1 = 'releasing' THEN 'model' END
                         WHERE message = ?2 AND address_lc = lower(?3)",
                        rusqlite::params![new, m.id, m.rcpts[r].0],
                    )
                    .unwrap();
                prop_assert_eq!(n, 1, "{}", at);
                m.rcpts[r].1 = new.into();
            }
            Op::Reopen => {
                drop(store);
                store = open(&root);
            }
            Op::CrashOrphanBlob(b) => {
                let p = blob_path(&root, &hashes[*b]);
                if !p.exists() {
                    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                    std::fs::write(&p, zstd::encode_all(&bodies[*b][..], 3).unwrap()).unwrap();
                    model.on_disk.insert(*b);
                }
            }
            Op::CrashTempFile => {
                let p = root.join("tmp").join(format!("{:016x}.99999.tmp", model.tmp_files));
                std::fs::write(p, b"(torn zstd frame)").unwrap();
                model.tmp_files += 1;
            }
            Op::CrashAbortedTx => {
                let mut conn = rusqlite::Connection::open(root.join("index.sqlite")).unwrap();
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).unwrap();
                tx.execute(
                    "INSERT INTO messages (id, hash, size, received_us, env_from, env_from_lc, verdict)
                     VALUES ('ABORTED000', ?1, 1, 0, '', '', 'SPAM')",
                    [&"f".repeat(64)],
                )
                .unwrap();
                tx.execute("DELETE FROM gc_queue", []).unwrap();
                drop(tx); // rolled back: the process died before COMMIT
            }
            Op::CrashBeforeGc(i) => {
                if model.msgs.is_empty() {
                    continue;
                }
                let i = i % model.msgs.len();
                let m = &model.msgs[i];
                if m.purged || m.rcpts.iter().any(|(_, s)| s == "releasing") {
                    continue;
                }
                let conn = index(&store);
                conn.execute("UPDATE messages SET purged_us = 1, purged_by = 'crash' WHERE id = ?1", [&m.id]).unwrap();
                conn.execute("UPDATE recipients SET state = 'purged' WHERE message = ?1", [&m.id]).unwrap();
                conn.execute(
                    "INSERT OR IGNORE INTO gc_queue (hash, queued_us) SELECT ?1, 1 WHERE NOT EXISTS
                       (SELECT 1 FROM messages WHERE hash = ?1 AND purged_us IS NULL)",
                    [&hashes[m.body]],
                )
                .unwrap();
                let body = m.body;
                let mm = &mut model.msgs[i];
                mm.purged = true;
                for r in &mut mm.rcpts {
                    r.1 = "purged".into();
                }
                if model.live_refs(body) == 0 {
                    model.queued.insert(body);
                }
            }
            Op::Sweep => {
                store.sweep_orphans(Duration::ZERO).expect("sweep");
                let live: BTreeSet<usize> = model.msgs.iter().filter(|m| !m.purged).map(|m| m.body).collect();
                model.on_disk.retain(|b| live.contains(b));
                model.tmp_files = 0;
            }
        }
        check(&store, &root, &model, &bodies, &hashes, &at)?;
    }
    // Whatever the crashes left, a final purge's GC and an orphan sweep leave exactly the live blobs.
    purge_with(&mut store, Selector { ids: vec!["NOSUCHID00".into()], ..Default::default() });
    model.gc();
    store.sweep_orphans(Duration::ZERO).expect("sweep");
    let live: BTreeSet<usize> = model.msgs.iter().filter(|m| !m.purged).map(|m| m.body).collect();
    model.on_disk.retain(|b| live.contains(b));
    model.tmp_files = 0;
    check(&store, &root, &model, &bodies, &hashes, "at the end")
}

fn check(
    store: &Store,
    root: &Path,
    model: &Model,
    bodies: &[Vec<u8>],
    hashes: &[String],
    at: &str,
) -> Result<(), TestCaseError> {
    let n: i64 = index(store).query_row("SELECT count(*) FROM messages", [], |r| r.get(0)).unwrap();
    prop_assert_eq!(n as usize, model.msgs.len(), "{}: message rows", at);
    for m in &model.msgs {
        let rec = store.message(&m.id).map_err(|e| TestCaseError::fail(format!("{at}: {}: {e}", m.id)))?;
        prop_assert_eq!(rec.purged_at.is_some(), m.purged, "{}: {} purged?", at, m.id);
        prop_assert_eq!(&rec.hash, &hashes[m.body], "{}", at);
        let got: Vec<(String, String)> =
            rec.recipients.iter().map(|r| (r.address.clone(), r.state.to_string())).collect();
        prop_assert_eq!(&got, &m.rcpts, "{}: recipients of {}", at, m.id);
        match store.original(&rec) {
            Ok(bytes) => {
                prop_assert!(!m.purged, "{}: a tombstone gave its original back", at);
                prop_assert!(bytes == bodies[m.body], "{}: {} is not byte-exact", at, m.id);
            }
            Err(e) => prop_assert!(m.purged, "{}: live message {} unreadable: {}", at, m.id, e),
        }
    }
    let report = store.verify(true, &Silent).expect("verify");
    prop_assert!(report.is_clean(), "{}: verify: missing {:?} corrupt {:?}", at, report.missing, report.corrupt);
    let want: BTreeSet<String> = model.on_disk.iter().map(|&b| hashes[b].clone()).collect();
    let have = files_under(&root.join("blobs"));
    prop_assert_eq!(&have, &want, "{}: blob files", at);
    let queued: BTreeSet<String> = index(store)
        .prepare("SELECT hash FROM gc_queue")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let want_q: BTreeSet<String> = model.queued.iter().map(|&b| hashes[b].clone()).collect();
    prop_assert_eq!(&queued, &want_q, "{}: GC queue", at);
    prop_assert_eq!(files_under(&root.join("tmp")).len(), model.tmp_files, "{}: temp files", at);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(48),
        max_shrink_iters: 2000,
        .. ProptestConfig::default()
    })]

    #[test]
    fn store_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        run_ops(ops)?;
    }
}

/// The sequence that matters most, spelled out: a purge's rows commit, the process dies before GC, a hold of the
/// same bytes arrives, and the next purge's GC must keep the blob the new row references.
#[test]
fn hold_between_purge_rows_and_gc_keeps_the_blob() {
    run_ops(vec![
        Op::Hold { body: 0, verdict: 0, rcpts: vec![0], queue: None },
        Op::CrashBeforeGc(0),
        Op::Hold { body: 0, verdict: 1, rcpts: vec![1], queue: None },
        Op::PurgeVerdict(0),
        Op::Reopen,
    ])
    .unwrap();
}
