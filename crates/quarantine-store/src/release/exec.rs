//! Carrying out a release plan: claim a batch, send it, record what the relay said, repeat.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::TransactionBehavior;
use serde::Serialize;

use super::journal::{self, Outcome, Tag};
use super::plan::{Action, Plan, PlannedMessage, Skip};
use quarantine_mail::encode;

use super::{Down, Transport, BATCH};
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
            "retried_in_doubt": self.retried_in_doubt,
        })
    }
}

/// Outcomes waiting for the next journal commit: (message, address, outcome).
type Pending = Vec<(String, String, Outcome)>;

impl Store {
    /// Carries out `plan`: per batch of messages, claims the recipients in one transaction, sends, and records
    /// each recipient's outcome. Per-recipient failures are counted and the run goes on; an unreachable relay
    /// stops it (everything not sent stays `held`). Returns `Err` only when the index itself fails, and then
    /// whatever was claimed and not recorded is left in doubt, never silently released.
    pub fn execute_release(
        &mut self,
        plan: &Plan,
        opts: &ExecOptions,
        sender: &mut dyn Transport,
        progress: &dyn Progress,
    ) -> Result<Report> {
        let tag = Tag::current(&opts.actor);
        let tag_s = tag.encode();
        let copy = plan.copy_to.is_some();
        let mut report = Report { release: tag.release.clone(), copy, ..Report::default() };
        let selection = serde_json::json!({
            "release": tag.release,
            "selector": plan.selector,
            "transport": sender.describe(),
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
        let mut last_flush = Instant::now();
        let mut started = false;
        let mut retrying: std::collections::HashSet<(String, String)> = std::collections::HashSet::new();
        let t0 = Instant::now();

        // A batch is at most about a second of sending, so a crash leaves at most that much in doubt.
        let batch = opts.rate.filter(|r| *r > 0.0).map_or(BATCH, |r| (r.ceil() as usize).clamp(1, BATCH));
        for chunk in work.chunks(batch) {
            if let Some(why) = report.stopped.clone() {
                // Never claimed: these stay `held` untouched.
                for m in chunk {
                    for r in m.recipients.iter().filter(|r| r.action.sends()) {
                        report.deferred += 1;
                        report.problem(&m.id, &r.address, ProblemKind::Deferred, format!("not attempted: {why}"));
                    }
                }
                progress.advance(chunk.len() as u64);
                continue;
            }
            let claimed = if copy {
                self.copy_targets(chunk, &mut report)
            } else {
                let start_entry = (!started).then(|| AuditEntry {
                    actor: &opts.actor,
                    action: AuditAction::ReleaseStart,
                    selection: selection.clone(),
                    counts: serde_json::to_value(plan.counts()).unwrap_or_default(),
                    reason: opts.reason.as_deref(),
                });
                started = true;
                self.claim(chunk, &tag_s, start_entry.as_ref(), &mut report, &mut retrying)?
            };

            for (m, rcpts) in chunk.iter().zip(claimed) {
                if rcpts.is_empty() {
                    progress.advance(1);
                    continue;
                }
                if report.stopped.is_none() && opts.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                    report.stopped = Some("interrupted".into());
                }
                if let Some(why) = report.stopped.clone() {
                    for a in rcpts {
                        let o = Outcome::NotSent(format!("not attempted: {why}"));
                        report.tally(&m.id, &a, &o);
                        if !copy {
                            pending.push((m.id.clone(), a, o));
                        }
                    }
                    progress.advance(1);
                    continue;
                }
                if let Some(rate) = opts.rate.filter(|r| *r > 0.0) {
                    // The CLI bounds the rate; one too small to express as a wait here waits a second, never panics.
                    let due = Duration::try_from_secs_f64(report.messages as f64 / rate)
                        .ok()
                        .and_then(|d| t0.checked_add(d))
                        .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                let original = match crate::message::checked_hash(&m.hash).and_then(|h| self.blobs.read_verified(h)) {
                    Ok(b) => b,
                    Err(e) => {
                        for a in rcpts {
                            report.not_sent += 1;
                            report.problem(&m.id, &a, ProblemKind::NotSent, format!("not sent: {e}"));
                            if !copy {
                                pending.push((m.id.clone(), a, Outcome::NotSent(format!("not sent: {e}"))));
                            }
                        }
                        progress.advance(1);
                        continue;
                    }
                };
                let header = if opts.trace_header {
                    let now = chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                    encode::trace_header(&m.id, &opts.actor, &now)
                } else {
                    Vec::new()
                };
                let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
                let outcomes = match sender.send(&m.from, &refs, &[&header, &original]) {
                    Ok(o) => {
                        for (a, o) in rcpts.iter().zip(&o) {
                            if !matches!(o, Outcome::NotSent(_)) && retrying.contains(&(m.id.clone(), a.clone())) {
                                report.retried_in_doubt += 1;
                            }
                        }
                        o
                    }
                    Err(Down(why)) => {
                        report.stopped = Some(why.clone());
                        vec![Outcome::Deferred(why); rcpts.len()]
                    }
                };
                report.messages += 1;
                for (a, o) in rcpts.into_iter().zip(outcomes) {
                    report.tally(&m.id, &a, &o);
                    if !copy {
                        pending.push((m.id.clone(), a, o));
                    }
                }
                progress.advance(1);
                if last_flush.elapsed() >= Duration::from_secs(1) {
                    self.record_outcomes(&tag_s, &mut pending, None)?;
                    last_flush = Instant::now();
                }
            }
            self.record_outcomes(&tag_s, &mut pending, None)?;
            last_flush = Instant::now();
        }
        sender.finish();
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

    /// In one write transaction: claims the recipients of a batch, marks refused addresses failed, and (first
    /// batch) writes the `release-start` audit row. Returns, per message, the addresses this run now owns.
    fn claim(
        &mut self,
        chunk: &[&PlannedMessage],
        tag: &str,
        start: Option<&AuditEntry>,
        report: &mut Report,
        retrying: &mut std::collections::HashSet<(String, String)>,
    ) -> Result<Vec<Vec<String>>> {
        let e = crate::index::sql_err(&self.index_path);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
        if let Some(entry) = start {
            audit::record(&tx, entry).map_err(&e)?;
        }
        let mut out = Vec::with_capacity(chunk.len());
        for m in chunk {
            let mut mine = Vec::new();
            for r in &m.recipients {
                match &r.action {
                    Action::Send => {
                        if journal::claim_held(&tx, &m.id, &r.address, tag).map_err(&e)? {
                            mine.push(r.address.clone());
                        } else {
                            // Changed since the plan: another release got there first, or a purge.
                            report.skipped += 1;
                            let st = journal::row_state(&tx, &m.id, &r.address).map_err(&e)?;
                            if let Some(st) = st.filter(|s| s.state == RecipientState::Releasing) {
                                let by = journal::describe(st.release_id.as_deref().unwrap_or(""));
                                report.problem(&m.id, &r.address, ProblemKind::Busy, format!("being released by {by}"));
                            }
                        }
                    }
                    Action::RetryInDoubt { previous } => {
                        if journal::claim_in_doubt(&tx, &m.id, &r.address, previous, tag).map_err(&e)? {
                            // Counted once it is actually sent (execute_release), not when claimed.
                            retrying.insert((m.id.clone(), r.address.clone()));
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
            out.push(mine);
        }
        tx.commit().map_err(&e)?;
        Ok(out)
    }

    /// `--to` copies: nothing is claimed; refusals are counted, not recorded.
    fn copy_targets(&self, chunk: &[&PlannedMessage], report: &mut Report) -> Vec<Vec<String>> {
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

    /// Commits the pending outcomes (and the final audit row, if given) in one write transaction.
    fn record_outcomes(&mut self, tag: &str, pending: &mut Pending, entry: Option<&AuditEntry>) -> Result<()> {
        if pending.is_empty() && entry.is_none() {
            return Ok(());
        }
        let e = crate::index::sql_err(&self.index_path);
        let now = now_us();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&e)?;
        for (m, a, o) in pending.iter() {
            journal::record(&tx, m, a, tag, o, now).map_err(&e)?;
        }
        if let Some(entry) = entry {
            audit::record(&tx, entry).map_err(&e)?;
        }
        tx.commit().map_err(&e)?;
        pending.clear();
        Ok(())
    }
}
