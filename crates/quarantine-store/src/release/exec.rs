//! Carrying out a release plan: claim a batch, send it, record what the relay said, repeat.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::TransactionBehavior;
use serde::Serialize;

use super::journal::{self, Outcome, Tag};
use super::plan::{Action, Plan, PlannedMessage, Skip};

use super::load::{Lane, Recycle, Scratch};
use super::rescan::{Rescan, ScanVerdict};
use super::{Down, Prepared, Transport, BATCH};
use crate::audit::{self, AuditEntry};
use crate::error::Result;
use crate::progress::Progress;
use crate::state::AuditAction;
use crate::state::RecipientState;
use crate::store::{now_us, Store};

/// How to carry a plan out.
pub struct ExecOptions<'a> {
    /// Who is releasing (`audit::actor`): in the trace header, the journal tag and the audit row.
    pub actor: String,
    /// Free text for the audit row (`--reason`).
    pub reason: Option<String>,
    /// Prepend `X-Quarantine-Released`.
    pub trace_header: bool,
    /// At most this many messages per second.
    pub rate: Option<f64>,
    /// When set (e.g. by a SIGINT handler), stop after the current message; what was claimed but not sent goes
    /// back to `held`.
    pub cancel: Option<&'a AtomicBool>,
    /// Rescan each original before sending it (`--rescan`): infected → skipped, left `held` with the reason.
    pub rescan: Option<Rescan>,
}

/// What a release did, per recipient (copies with `--to` count as recipients too).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// This run's release id (in the journal and the audit trail).
    pub release: String,
    /// Messages handed to the relay or command.
    pub messages: u64,
    pub delivered: u64,
    /// Left `held` for the next run: 4xx replies, an unreachable relay, an interrupted run.
    pub deferred: u64,
    /// 5xx replies and refused addresses.
    pub failed: u64,
    /// Sent with no answer, or left in doubt by an earlier run (see `--retry-in-doubt`).
    pub in_doubt: u64,
    /// Nothing to do: already released or failed, purged, or being released by another run.
    pub skipped: u64,
    /// Not sent because the stored original is missing or corrupt.
    pub not_sent: u64,
    /// Not sent because the rescan found them infected: still `held`, the scanner's words in `last_error`.
    pub infected: u64,
    /// Of the recipients actually handed to the relay or command this run, how many were in doubt before
    /// (`--retry-in-doubt`); one claimed but then not attempted (relay down, interrupted) is not counted.
    pub retried_in_doubt: u64,
    /// True for a `--to` copy run: no recipient state changed.
    pub copy: bool,
    /// Why the run stopped before the end, if it did.
    pub stopped: Option<String>,
    /// One entry per recipient that was not delivered (skips for already-released recipients excepted).
    pub problems: Vec<Problem>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    pub message: String,
    pub address: String,
    pub kind: ProblemKind,
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    Deferred,
    Failed,
    InDoubt,
    NotSent,
    Busy,
    /// Skipped by `--rescan`: the scanner still calls it infected.
    Infected,
}

impl Report {
    /// True when everything this run was asked to deliver was delivered.
    pub fn complete(&self) -> bool {
        self.deferred + self.failed + self.in_doubt + self.not_sent == 0 && self.stopped.is_none()
    }

    fn problem(&mut self, m: &str, a: &str, kind: ProblemKind, detail: impl Into<String>) {
        self.problems.push(Problem { message: m.into(), address: a.into(), kind, detail: detail.into() });
    }

    fn tally(&mut self, m: &str, a: &str, o: &Outcome) {
        match o {
            Outcome::Delivered(_) => self.delivered += 1,
            Outcome::Deferred(t) | Outcome::NotSent(t) => {
                self.deferred += 1;
                self.problem(m, a, ProblemKind::Deferred, t.clone());
            }
            Outcome::Failed(t) => {
                self.failed += 1;
                self.problem(m, a, ProblemKind::Failed, t.clone());
            }
            Outcome::InDoubt(t) => {
                self.in_doubt += 1;
                self.problem(m, a, ProblemKind::InDoubt, t.clone());
            }
            Outcome::Infected(t) => {
                self.infected += 1;
                self.problem(m, a, ProblemKind::Infected, t.clone());
            }
        }
    }

    fn counts_json(&self) -> serde_json::Value {
        serde_json::json!({
            "messages": self.messages,
            "delivered": self.delivered,
            "deferred": self.deferred,
            "failed": self.failed,
            "in_doubt": self.in_doubt,
            "skipped": self.skipped,
            "not_sent": self.not_sent,
            "infected": self.infected,
            "retried_in_doubt": self.retried_in_doubt,
        })
    }
}

/// Outcomes waiting for the next journal commit: (message, address, outcome).
type Pending = Vec<(String, String, Outcome)>;

/// One message handed to a sender: the recipients this run claimed for it.
struct Job<'p> {
    m: &'p PlannedMessage,
    rcpts: Vec<String>,
}

/// What became of a [`Job`].
enum Done<'p> {
    /// Handed to the transport (or it was down): one outcome per recipient.
    Sent { m: &'p PlannedMessage, rcpts: Vec<String>, outcomes: Vec<Outcome>, down: bool },
    /// Not attempted: the run is stopping (interrupted, the relay is down).
    NotAttempted { m: &'p PlannedMessage, rcpts: Vec<String>, why: String },
    /// The stored original is missing or corrupt.
    Unreadable { m: &'p PlannedMessage, rcpts: Vec<String>, why: String },
}

/// What every sender shares: read-only inputs, the stop flag and the rate clock.
struct Shared<'a> {
    blobs: crate::blob::BlobStore,
    actor: String,
    trace: Option<crate::trace::TraceKey>,
    rate: Option<f64>,
    cancel: Option<&'a AtomicBool>,
    stop: std::sync::Mutex<Option<String>>,
    started: Instant,
    handed: std::sync::atomic::AtomicU64,
    /// The transport takes SMTP DATA encoded ahead ([`Transport::wants_smtp_data`]).
    smtp_data: bool,
}

impl Shared<'_> {
    fn stopped(&self) -> Option<String> {
        let mut stop = self.stop.lock().unwrap_or_else(|p| p.into_inner());
        if stop.is_none() && self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            *stop = Some("interrupted".into());
        }
        stop.clone()
    }

    fn stop(&self, why: &str) {
        let mut stop = self.stop.lock().unwrap_or_else(|p| p.into_inner());
        if stop.is_none() {
            *stop = Some(why.to_string());
        }
    }

    /// Sends one job on `sender` (any thread), loading it into `msg` first.
    fn send<'p>(
        &self,
        sender: &mut dyn Transport,
        job: Job<'p>,
        msg: Prepared,
        scratch: &mut Scratch,
    ) -> (Done<'p>, Prepared) {
        let loaded = self.load(job, msg, scratch);
        self.deliver(sender, loaded)
    }

    /// Reads and re-hashes the original into `msg`, makes the trace header and, for an SMTP transport, encodes
    /// the two as DATA: everything about a job that needs no connection, so it can run ahead of the sending
    /// (any thread).
    fn load<'p>(&self, job: Job<'p>, mut msg: Prepared, scratch: &mut Scratch) -> Loaded<'p> {
        let m = job.m;
        let unreadable = scratch
            .read_original(&self.blobs, &m.hash, m.size, &mut msg.original)
            .err()
            .map(|e| format!("not sent: {e}"));
        msg.header.clear();
        if let (Some(key), None) = (&self.trace, &unreadable) {
            let now = chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            msg.header.extend_from_slice(&key.header(&m.id, &self.actor, &now));
        }
        if self.smtp_data && unreadable.is_none() {
            msg.smtp_data.get_or_insert_with(Default::default).encode(&[&msg.header, &msg.original]);
        }
        Loaded { job, msg, unreadable }
    }

    /// Hands a loaded job to `sender`, unless the run is stopping, at the pace `--rate` allows; gives the
    /// buffers back for the next message.
    fn deliver<'p>(&self, sender: &mut dyn Transport, loaded: Loaded<'p>) -> (Done<'p>, Prepared) {
        let Loaded { job: Job { m, rcpts }, msg, unreadable } = loaded;
        if let Some(why) = self.stopped() {
            return (Done::NotAttempted { m, rcpts, why }, msg);
        }
        if let Some(why) = unreadable {
            return (Done::Unreadable { m, rcpts, why }, msg);
        }
        if let Some(rate) = self.rate.filter(|r| *r > 0.0) {
            // One clock for every connection: message k goes out no sooner than k / rate after the start. The CLI
            // bounds the rate; one too small to express as a wait here waits a second, never panics.
            let k = self.handed.fetch_add(1, Ordering::Relaxed);
            let due = Duration::try_from_secs_f64(k as f64 / rate)
                .ok()
                .and_then(|d| self.started.checked_add(d))
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
        let parts: [&[u8]; 2] = [&msg.header, &msg.original];
        let sent = match &msg.smtp_data {
            Some(data) if self.smtp_data => sender.send_encoded(&m.from, &refs, &parts, data),
            _ => sender.send(&m.from, &refs, &parts),
        };
        let (outcomes, down) = match sent {
            Ok(o) => (o, false),
            Err(Down(why)) => {
                self.stop(&why);
                (vec![Outcome::Deferred(why); rcpts.len()], true)
            }
        };
        (Done::Sent { m, rcpts, outcomes, down }, msg)
    }
}

/// A job with its original read and checked (or why it cannot be sent), its trace header and, for SMTP, its
/// DATA payload.
struct Loaded<'p> {
    job: Job<'p>,
    msg: Prepared,
    unreadable: Option<String>,
}

/// How a run's jobs reach the relay: on the caller's thread through one transport, or through a pool of
/// connections on worker threads.
trait Senders<'p> {
    /// Sends `jobs`, calling `done` on this thread for each as it finishes (in any order).
    fn run(&mut self, jobs: Vec<Job<'p>>, done: &mut dyn FnMut(Done<'p>) -> Result<()>) -> Result<()>;
}

/// Loader threads ahead of one connection. Two: on two cores shared with the relay (and, on a busy host, with
/// everyone else) one loader is the slower side of the pipeline; a second keeps the connection fed.
const LOADERS: usize = 2;
/// Messages each loader may have ready; it is woken to refill once half are taken.
const LOOKAHEAD: usize = 4;

struct Inline<'s, 't> {
    shared: &'s Shared<'s>,
    sender: &'t mut dyn Transport,
    scratch: Vec<Scratch>,
    recycle: Recycle,
}

impl<'p> Senders<'p> for Inline<'_, '_> {
    fn run(&mut self, jobs: Vec<Job<'p>>, done: &mut dyn FnMut(Done<'p>) -> Result<()>) -> Result<()> {
        // One connection waits for the relay twice per message; loader threads read, decompress, re-hash and
        // encode the next originals meanwhile, so that work is off the wire's critical path. Job k goes to
        // loader k mod LOADERS and is taken back in the same order, so messages go out in plan order. Memory
        // stays LOADERS * (LOOKAHEAD + 1) messages.
        let (shared, sender, recycle) = (self.shared, &mut *self.sender, &self.recycle);
        let n = jobs.len();
        let mut per: Vec<Vec<Job<'p>>> = (0..LOADERS).map(|_| Vec::with_capacity(n / LOADERS + 1)).collect();
        for (k, job) in jobs.into_iter().enumerate() {
            per[k % LOADERS].push(job);
        }
        let lanes: Vec<Lane<Loaded<'p>>> = (0..LOADERS).map(|_| Lane::new(LOOKAHEAD)).collect();
        let lanes = &lanes;
        self.scratch.resize_with(LOADERS, Scratch::default);
        std::thread::scope(|scope| {
            let loaders: Vec<_> = per
                .into_iter()
                .zip(self.scratch.drain(..))
                .zip(lanes.iter())
                .map(|((jobs, mut scratch), lane)| {
                    scope.spawn(move || {
                        // Finished on the way out, panics included: the sender must not wait for a dead loader.
                        let _end = lane.finisher();
                        for job in jobs {
                            if !lane.put(shared.load(job, recycle.take(), &mut scratch)) {
                                break; // the sender stopped on an index error
                            }
                        }
                        scratch
                    })
                })
                .collect();
            let mut result = Ok(());
            for k in 0..n {
                let Some(loaded) = lanes[k % LOADERS].take() else { break };
                let (d, msg) = shared.deliver(sender, loaded);
                recycle.give(msg);
                result = done(d);
                if result.is_err() {
                    break;
                }
            }
            for lane in lanes {
                lane.close();
            }
            for h in loaders {
                self.scratch.push(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            }
            result
        })
    }
}

struct Pool<'p> {
    jobs: Option<std::sync::mpsc::Sender<Job<'p>>>,
    results: std::sync::mpsc::Receiver<Done<'p>>,
}

impl<'p> Senders<'p> for Pool<'p> {
    fn run(&mut self, jobs: Vec<Job<'p>>, done: &mut dyn FnMut(Done<'p>) -> Result<()>) -> Result<()> {
        let n = jobs.len();
        let tx = self.jobs.as_ref().expect("open until the run ends");
        for job in jobs {
            tx.send(job).expect("the workers outlive the run");
        }
        for _ in 0..n {
            let d = self.results.recv().expect("every job is answered");
            done(d)?;
        }
        Ok(())
    }
}

/// Opens one transport per release connection (on the worker thread that uses it).
pub type OpenTransport<'a> = &'a (dyn Fn() -> Box<dyn Transport> + Sync);

impl Store {
    /// Carries out `plan` through one transport: per batch of messages, claims the recipients in one transaction,
    /// sends, and records each recipient's outcome. Per-recipient failures are counted and the run goes on; an
    /// unreachable relay stops it (everything not sent stays `held`). Returns `Err` only when the index itself
    /// fails, and then whatever was claimed and not recorded is left in doubt, never silently released.
    pub fn execute_release(
        &mut self,
        plan: &Plan,
        opts: &ExecOptions,
        sender: &mut dyn Transport,
        progress: &dyn Progress,
    ) -> Result<Report> {
        let mut shared = self.shared(opts)?;
        let via = sender.describe();
        shared.smtp_data = sender.wants_smtp_data();
        let mut senders = Inline { shared: &shared, sender, scratch: Vec::new(), recycle: Recycle::default() };
        let report = self.run_release(plan, opts, &shared, &mut senders, via, 1, progress);
        senders.sender.finish();
        report
    }

    /// [`Store::execute_release`] over `connections` transports at once (`release --connections N`), each made by
    /// `open` on its own worker thread and reused for the whole run. Claims and outcomes stay transactions on this
    /// store's one index connection, so the journal is exactly what it is with one connection: every recipient is
    /// claimed once, by one run, before any connection sends it.
    pub fn execute_release_with(
        &mut self,
        plan: &Plan,
        opts: &ExecOptions,
        open: OpenTransport,
        connections: usize,
        progress: &dyn Progress,
    ) -> Result<Report> {
        let connections = connections.max(1);
        let mut shared = self.shared(opts)?;
        let probe = open();
        let via = probe.describe();
        shared.smtp_data = probe.wants_smtp_data();
        drop(probe);
        let (job_tx, job_rx) = std::sync::mpsc::channel::<Job>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<Done>();
        let job_rx = std::sync::Mutex::new(job_rx);
        let (shared, job_rx) = (&shared, &job_rx);
        std::thread::scope(|scope| {
            for _ in 0..connections {
                let done_tx = done_tx.clone();
                scope.spawn(move || {
                    let mut sender = open();
                    let (mut msg, mut scratch) = (Prepared::default(), Scratch::default());
                    loop {
                        let job = job_rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(job) = job else { break };
                        let (d, used) = shared.send(sender.as_mut(), job, msg, &mut scratch);
                        msg = used;
                        if done_tx.send(d).is_err() {
                            break;
                        }
                    }
                    sender.finish();
                });
            }
            drop(done_tx);
            let mut pool = Pool { jobs: Some(job_tx), results: done_rx };
            let report = self.run_release(plan, opts, shared, &mut pool, via, connections, progress);
            if report.is_err() {
                // The index failed: send nothing more (what is claimed stays in doubt for the next run).
                shared.stop("the index failed");
            }
            drop(pool.jobs.take()); // the workers end, and QUIT
            report
        })
    }

    /// `--dry-run --rescan`: what the rescan says about each message the plan would send, claiming nothing.
    pub fn rescan_plan(&self, plan: &Plan, rescan: &Rescan) -> Vec<(String, ScanVerdict)> {
        let work: Vec<&PlannedMessage> =
            plan.messages.iter().filter(|m| m.recipients.iter().any(|r| r.action.sends())).collect();
        let blobs = &self.blobs;
        let verdicts = rescan.scan_all(&work, &|m: &&PlannedMessage| {
            crate::message::checked_hash(&m.hash)
                .and_then(|h| blobs.read_verified(h))
                .map_err(|e| format!("rescan: {e}"))
        });
        work.iter().map(|m| m.id.clone()).zip(verdicts).collect()
    }

    fn shared<'a>(&self, opts: &ExecOptions<'a>) -> Result<Shared<'a>> {
        let trace = if opts.trace_header {
            // A store without a key (an index written by hand) still gets the plain trace header's fields.
            Some(self.trace_key()?.unwrap_or_else(crate::trace::TraceKey::unkeyed))
        } else {
            None
        };
        Ok(Shared {
            blobs: self.blobs.clone(),
            actor: opts.actor.clone(),
            trace,
            rate: opts.rate,
            cancel: opts.cancel,
            stop: std::sync::Mutex::new(None),
            started: Instant::now(),
            handed: std::sync::atomic::AtomicU64::new(0),
            smtp_data: false,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn run_release<'p>(
        &mut self,
        plan: &'p Plan,
        opts: &ExecOptions,
        shared: &Shared,
        senders: &mut dyn Senders<'p>,
        via: String,
        connections: usize,
        progress: &dyn Progress,
    ) -> Result<Report> {
        let tag = Tag::current(&opts.actor);
        journal::announce_running(&self.conn, &tag.release).map_err(crate::index::sql_err(&self.index_path))?;
        let tag_s = tag.encode();
        let copy = plan.copy_to.is_some();
        let mut report = Report { release: tag.release.clone(), copy, ..Report::default() };
        let selection = serde_json::json!({
            "release": tag.release,
            "selector": plan.selector,
            "transport": via,
            "connections": connections,
            "rescan": opts.rescan.as_ref().map(|r| r.describe()),
            "copy_to": plan.copy_to,
            "retry_in_doubt": plan.retry_in_doubt,
            "retry_failed": plan.retry_failed,
            "trace_header": opts.trace_header,
        });

        for m in &plan.messages {
            for r in &m.recipients {
                if let Action::Skip { skip } = &r.action {
                    match skip {
                        Skip::InDoubt { previous } => {
                            report.in_doubt += 1;
                            let why = format!(
                                "in doubt: sent by {} which did not record the relay's answer; \
                                 resend with --retry-in-doubt",
                                journal::describe(previous)
                            );
                            report.problem(&m.id, &r.address, ProblemKind::InDoubt, why);
                        }
                        Skip::Busy { by } => {
                            report.skipped += 1;
                            let why = format!("being released by {}", journal::describe(by));
                            report.problem(&m.id, &r.address, ProblemKind::Busy, why);
                        }
                        Skip::Released | Skip::Failed | Skip::Purged => report.skipped += 1,
                    }
                }
            }
        }

        let work: Vec<&PlannedMessage> = plan.messages.iter().filter(|m| m.sends()).collect();
        progress.start("release", work.len() as u64);
        let mut pending: Pending = Vec::new();
        let mut retrying: std::collections::HashSet<(String, String)> = std::collections::HashSet::new();

        // A batch is at most about a second of sending, so a crash leaves little in doubt.
        let batch = opts.rate.filter(|r| *r > 0.0).map_or(BATCH, |r| (r.ceil() as usize).clamp(1, BATCH));
        let chunks: Vec<&[&'p PlannedMessage]> = work.chunks(batch).collect();
        let start_entry = AuditEntry {
            actor: &opts.actor,
            action: AuditAction::ReleaseStart,
            selection: selection.clone(),
            counts: serde_json::to_value(plan.counts()).unwrap_or_default(),
            reason: opts.reason.as_deref(),
        };
        let conn = &mut self.conn;
        let path = self.index_path.as_path();
        let tag_ref = tag_s.as_str();
        let sent = std::thread::scope(|scope| -> Result<()> {
            // The journal runs on its own thread so its fsyncs overlap the sending: while batch i goes out, one
            // transaction records what batch i - 1 got and claims batch i + 1. Each recipient is still claimed
            // in a committed transaction before it is handed to a sender, and recorded only after its reply.
            let (req_tx, req_rx) = std::sync::mpsc::channel::<Req<'_>>();
            let (ans_tx, ans_rx) = std::sync::mpsc::channel::<Result<Claimed>>();
            let writer = scope.spawn(move || journal_thread(conn, path, tag_ref, req_rx, ans_tx));
            let mut journal = Journal { tx: Some(req_tx), rx: ans_rx };
            let mut claim_asked = false;
            if !copy && !chunks.is_empty() {
                journal.ask(Vec::new(), Some(chunks[0]), Some(&start_entry));
                claim_asked = true;
            }
            let mut last_flush = Instant::now();
            for (i, chunk) in chunks.iter().enumerate() {
                if report.stopped.is_none() {
                    report.stopped = shared.stopped();
                }
                let claimed = if copy {
                    report.stopped.is_none().then(|| copy_targets(chunk, &mut report))
                } else if claim_asked {
                    let Some(c) = journal.answer() else { break };
                    let c = c?;
                    report.skipped += c.notes.skipped;
                    report.failed += c.notes.failed;
                    report.problems.extend(c.notes.problems);
                    retrying.extend(c.retrying);
                    Some(c.mine)
                } else {
                    None
                };
                let Some(claimed) = claimed else {
                    // Never claimed: these stay `held` untouched.
                    let why = report.stopped.clone().unwrap_or_else(|| "stopped".into());
                    for m in chunk.iter() {
                        for r in m.recipients.iter().filter(|r| r.action.sends()) {
                            report.deferred += 1;
                            report.problem(&m.id, &r.address, ProblemKind::Deferred, format!("not attempted: {why}"));
                        }
                    }
                    progress.advance(chunk.len() as u64);
                    continue;
                };
                // Ask for the next claim (with the outcomes so far) before sending this batch, unless the run
                // is stopping: what is claimed then is put back by the senders, which attempt nothing.
                claim_asked = false;
                if !copy {
                    let next = chunks.get(i + 1).copied().filter(|_| shared.stopped().is_none());
                    if next.is_some() || !pending.is_empty() {
                        journal.ask(std::mem::take(&mut pending), next, None);
                        last_flush = Instant::now();
                        claim_asked = next.is_some();
                    }
                }
                let mut jobs: Vec<Job<'p>> = Vec::with_capacity(chunk.len());
                for (m, rcpts) in chunk.iter().zip(claimed) {
                    if rcpts.is_empty() {
                        progress.advance(1);
                    } else {
                        jobs.push(Job { m, rcpts });
                    }
                }
                if let Some(rescan) = &opts.rescan {
                    // Claimed first, so no other release sends them while they are scanned.
                    let blobs = &shared.blobs;
                    let verdicts = rescan.scan_all(&jobs, &|j: &Job| {
                        crate::message::checked_hash(&j.m.hash)
                            .and_then(|h| blobs.read_verified(h))
                            .map_err(|e| format!("rescan: {e}"))
                    });
                    let mut clean = Vec::with_capacity(jobs.len());
                    for (job, v) in jobs.into_iter().zip(verdicts) {
                        let outcome = match v {
                            ScanVerdict::Clean => {
                                clean.push(job);
                                continue;
                            }
                            ScanVerdict::Infected(what) => Outcome::Infected(format!("rescan: infected: {what}")),
                            ScanVerdict::Error(e) => Outcome::Deferred(e),
                        };
                        for a in job.rcpts {
                            report.tally(&job.m.id, &a, &outcome);
                            if !copy {
                                pending.push((job.m.id.clone(), a, outcome.clone()));
                            }
                        }
                        progress.advance(1);
                    }
                    jobs = clean;
                }
                senders.run(jobs, &mut |done| {
                    match done {
                        Done::NotAttempted { m, rcpts, why } => {
                            for a in rcpts {
                                let o = Outcome::NotSent(format!("not attempted: {why}"));
                                report.tally(&m.id, &a, &o);
                                if !copy {
                                    pending.push((m.id.clone(), a, o));
                                }
                            }
                        }
                        Done::Unreadable { m, rcpts, why } => {
                            for a in rcpts {
                                report.not_sent += 1;
                                report.problem(&m.id, &a, ProblemKind::NotSent, why.clone());
                                if !copy {
                                    pending.push((m.id.clone(), a, Outcome::NotSent(why.clone())));
                                }
                            }
                        }
                        Done::Sent { m, rcpts, outcomes, down } => {
                            report.messages += 1;
                            for (a, o) in rcpts.into_iter().zip(outcomes) {
                                if !down
                                    && !matches!(o, Outcome::NotSent(_))
                                    && retrying.contains(&(m.id.clone(), a.clone()))
                                {
                                    report.retried_in_doubt += 1;
                                }
                                report.tally(&m.id, &a, &o);
                                if !copy {
                                    pending.push((m.id.clone(), a, o));
                                }
                            }
                        }
                    }
                    progress.advance(1);
                    // A slow relay still has its answers committed at least once a second.
                    if !pending.is_empty() && last_flush.elapsed() >= Duration::from_secs(1) {
                        journal.ask(std::mem::take(&mut pending), None, None);
                        last_flush = Instant::now();
                    }
                    Ok(())
                })?;
                if report.stopped.is_none() {
                    report.stopped = shared.stopped();
                }
            }
            // Every outcome handed over is committed before the thread ends; its first error is the run's.
            drop(journal.tx.take());
            writer.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        });
        sent?;
        progress.finish();
        let counts = report.counts_json();
        let entry = AuditEntry {
            actor: &opts.actor,
            action: AuditAction::Release,
            selection,
            counts,
            reason: opts.reason.as_deref(),
        };
        self.record_outcomes(&tag_s, &mut pending, Some(&entry))?;
        Ok(report)
    }
}

/// A request to the journal thread: commit these outcomes and, in the same transaction, claim this batch (the
/// first claim also writes the `release-start` audit row). Answered (with [`Claimed`]) only when it claims.
struct Req<'a> {
    outcomes: Pending,
    claim: Option<&'a [&'a PlannedMessage]>,
    start: Option<&'a AuditEntry<'a>>,
}

/// What a claim transaction decided: per message the addresses this run now owns, what the report must count
/// (skips, refusals and their problems), and the in-doubt recipients taken over for `--retry-in-doubt`.
struct Claimed {
    mine: Vec<Vec<String>>,
    notes: Report,
    retrying: Vec<(String, String)>,
}

/// The sending side's end of the journal thread.
struct Journal<'a> {
    tx: Option<std::sync::mpsc::Sender<Req<'a>>>,
    rx: std::sync::mpsc::Receiver<Result<Claimed>>,
}

impl<'a> Journal<'a> {
    fn ask(&self, outcomes: Pending, claim: Option<&'a [&'a PlannedMessage]>, start: Option<&'a AuditEntry<'a>>) {
        // A send fails only when the thread has stopped on an error, which `answer` or the join then reports.
        if let Some(tx) = &self.tx {
            let _ = tx.send(Req { outcomes, claim, start });
        }
    }

    /// The answer to the oldest claim asked for; `None` when the thread stopped on an error (the join reports it).
    fn answer(&self) -> Option<Result<Claimed>> {
        self.rx.recv().ok()
    }
}

/// The journal thread: one write transaction per request, in the order asked. Stops at the first error, which it
/// returns (and answers a pending claim with): whatever was claimed and not recorded then stays in doubt.
fn journal_thread(
    conn: &mut crate::db::Conn,
    path: &std::path::Path,
    tag: &str,
    rx: std::sync::mpsc::Receiver<Req<'_>>,
    answers: std::sync::mpsc::Sender<Result<Claimed>>,
) -> Result<()> {
    for req in rx {
        let wants_answer = req.claim.is_some();
        match ride_out(conn, path, tag, |conn| commit_batch(conn, path, tag, &req)) {
            Ok(c) => {
                if wants_answer {
                    let _ = answers.send(Ok(c));
                }
            }
            // A claim's error goes to the sender waiting for it; any other is the thread's result.
            Err(e) if wants_answer => {
                let _ = answers.send(Err(e));
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// How long a release waits for a shared index that went away in the middle of the run (a restart, a failover)
/// before it gives up. Its recipients are claimed and some are on the wire: giving up at once would leave every
/// answer it holds unrecorded, in doubt, and sent twice by a `--retry-in-doubt`.
const OUTAGE_WAIT: Duration = Duration::from_secs(60);

/// Runs one journal transaction, again (on a new connection) while the shared index is unreachable, for up to
/// [`OUTAGE_WAIT`]. Safe to repeat: a failed transaction rolled back, and every write in it is guarded by the state
/// it expects. A new session no longer holds the release's running lock, so it takes it again first: without it
/// another gateway would take this run's claims for abandoned ones.
fn ride_out<T>(
    conn: &mut crate::db::Conn,
    path: &std::path::Path,
    tag: &str,
    mut f: impl FnMut(&mut crate::db::Conn) -> Result<T>,
) -> Result<T> {
    let deadline = Instant::now() + OUTAGE_WAIT;
    let mut reconnected = false;
    loop {
        let attempt = if reconnected {
            let release = tag.split(' ').next().unwrap_or(tag);
            journal::announce_running(conn, release).map_err(crate::index::sql_err(path)).and_then(|()| f(conn))
        } else {
            f(conn)
        };
        match attempt {
            Err(e) if e.is_outage() && Instant::now() < deadline => {
                reconnected = true;
                std::thread::sleep(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

/// In one write transaction: records `req.outcomes`, then claims the recipients of `req.claim`, marks refused
/// addresses failed, and (first batch) writes the `release-start` audit row.
fn commit_batch(conn: &mut crate::db::Conn, path: &std::path::Path, tag: &str, req: &Req) -> Result<Claimed> {
    let e = crate::index::sql_err(path);
    let mut out = Claimed { mine: Vec::new(), notes: Report::default(), retrying: Vec::new() };
    if req.outcomes.is_empty() && req.claim.is_none() {
        return Ok(out);
    }
    let now = now_us();
    // The release-start row appends to the audit chain, which needs the exclusive lock; every other batch only
    // touches recipient rows, which the row locks below keep apart from another gateway's release.
    let tx = if req.start.is_some() {
        conn.transaction_with_behavior(TransactionBehavior::Immediate)
    } else {
        conn.begin_claims()
    }
    .map_err(&e)?;
    for (m, a, o) in &req.outcomes {
        journal::record(&tx, m, a, tag, o, now).map_err(&e)?;
    }
    if let Some(entry) = req.start {
        audit::record(&tx, entry).map_err(&e)?;
    }
    let report = &mut out.notes;
    for m in req.claim.unwrap_or_default() {
        let mut mine = Vec::new();
        for r in &m.recipients {
            match &r.action {
                Action::Send => {
                    if journal::claim_held(&tx, &m.id, &r.address, tag).map_err(&e)? {
                        mine.push(r.address.clone());
                    } else {
                        let st = journal::row_state(&tx, &m.id, &r.address).map_err(&e)?;
                        // Claimed by this very run: a commit whose answer the outage lost ([`ride_out`]) did land.
                        if st.as_ref().is_some_and(|st| {
                            st.state == RecipientState::Releasing && st.release_id.as_deref() == Some(tag)
                        }) {
                            mine.push(r.address.clone());
                            continue;
                        }
                        // Changed since the plan: another release got there first, or a purge.
                        report.skipped += 1;
                        match st {
                            Some(st) if st.state == RecipientState::Releasing => {
                                let by = journal::describe(st.release_id.as_deref().unwrap_or(""));
                                let why = format!("being released by {by}");
                                report.problem(&m.id, &r.address, ProblemKind::Busy, why);
                            }
                            // Still `held` as last committed: another gateway's claim has its row locked right
                            // now (PostgreSQL); that release sends it, or a later run does if it rolls back.
                            Some(st) if st.state == RecipientState::Held => {
                                let why = "being claimed by another release right now";
                                report.problem(&m.id, &r.address, ProblemKind::Busy, why);
                            }
                            _ => {}
                        }
                    }
                }
                Action::RetryInDoubt { previous } => {
                    if journal::claim_in_doubt(&tx, &m.id, &r.address, previous, tag).map_err(&e)? {
                        // Counted once it is actually sent (run_release), not when claimed.
                        out.retrying.push((m.id.clone(), r.address.clone()));
                        mine.push(r.address.clone());
                    } else {
                        report.skipped += 1;
                    }
                }
                Action::RetryFailed => {
                    if journal::claim_failed(&tx, &m.id, &r.address, tag).map_err(&e)? {
                        mine.push(r.address.clone());
                    } else {
                        report.skipped += 1;
                    }
                }
                Action::Refuse { why } => {
                    journal::refuse(&tx, &m.id, &r.address, why).map_err(&e)?;
                    report.failed += 1;
                    report.problem(&m.id, &r.address, ProblemKind::Failed, why.clone());
                }
                Action::Copy | Action::Skip { .. } => {}
            }
        }
        out.mine.push(mine);
    }
    tx.commit().map_err(&e)?;
    Ok(out)
}

/// `--to` copies: nothing is claimed; refusals are counted, not recorded.
fn copy_targets(chunk: &[&PlannedMessage], report: &mut Report) -> Vec<Vec<String>> {
    chunk
        .iter()
        .map(|m| {
            let mut v = Vec::new();
            for r in &m.recipients {
                match &r.action {
                    Action::Copy => v.push(r.address.clone()),
                    Action::Refuse { why } => {
                        report.failed += 1;
                        report.problem(&m.id, &r.address, ProblemKind::Failed, why.clone());
                    }
                    _ => {}
                }
            }
            v
        })
        .collect()
}

impl Store {
    /// Commits the pending outcomes (and the final audit row, if given) in one write transaction.
    fn record_outcomes(&mut self, tag: &str, pending: &mut Pending, entry: Option<&AuditEntry>) -> Result<()> {
        if pending.is_empty() && entry.is_none() {
            return Ok(());
        }
        let path = self.index_path.clone();
        ride_out(&mut self.conn, &path, tag, |conn| {
            let e = crate::index::sql_err(&path);
            let now = now_us();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
            for (m, a, o) in pending.iter() {
                journal::record(&tx, m, a, tag, o, now).map_err(&e)?;
            }
            if let Some(entry) = entry {
                audit::record(&tx, entry).map_err(&e)?;
            }
            tx.commit().map_err(&e)
        })?;
        pending.clear();
        Ok(())
    }
}
