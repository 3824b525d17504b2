//! Planning a release: which recipients of the selected messages would be sent, retried, skipped or refused.
//! Reads only; the journal is written by execution.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::journal::{self, Tag};
use crate::error::Result;
use crate::select::Selector;
use crate::state::RecipientState;
use crate::store::Store;
use quarantine_mail::address;

/// What to plan.
#[derive(Clone, Debug, Default)]
pub struct PlanRequest {
    /// The messages. Its `rcpts`, when given, are also the recipients to release (`--rcpt` picks a subset).
    pub selector: Selector,
    /// `--to`: send one copy of each selected message to this address instead, changing no recipient's state.
    pub copy_to: Option<String>,
    /// Send again to recipients left in doubt by a release that did not finish.
    pub retry_in_doubt: bool,
    /// Send again to recipients a relay refused permanently (5xx), e.g. after fixing the relay's configuration.
    pub retry_failed: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub selector: Selector,
    pub copy_to: Option<String>,
    pub retry_in_doubt: bool,
    pub retry_failed: bool,
    pub messages: Vec<PlannedMessage>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PlannedMessage {
    pub id: String,
    pub hash: String,
    /// Original size in bytes (before the trace header and line-ending normalisation).
    pub size: u64,
    /// Envelope sender; empty for the null sender.
    pub from: String,
    pub received: String,
    pub verdict: String,
    pub subject: Option<String>,
    pub recipients: Vec<PlannedRecipient>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PlannedRecipient {
    pub address: String,
    pub action: Action,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// `held`: claim and send.
    Send,
    /// In doubt and `--retry-in-doubt` was given: take over the old claim and send again.
    RetryInDoubt { previous: String },
    /// `--retry-failed`: a recipient the relay refused permanently before, claimed from `failed`.
    RetryFailed,
    /// `--to`: a copy; no journal change.
    Copy,
    /// Can never be put on an SMTP line: marked `failed`, never sent.
    Refuse { why: String },
    /// Nothing to do for this recipient.
    Skip { skip: Skip },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Skip {
    Released,
    Failed,
    Purged,
    /// Claimed by a release that is gone; sent only with `--retry-in-doubt`.
    InDoubt {
        previous: String,
    },
    /// Claimed by a release that is running now.
    Busy {
        by: String,
    },
}

impl Action {
    pub fn sends(&self) -> bool {
        matches!(self, Action::Send | Action::RetryInDoubt { .. } | Action::RetryFailed | Action::Copy)
    }
}

/// Totals over a plan, per recipient unless named otherwise.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PlanCounts {
    /// Messages with at least one recipient to send.
    pub messages: u64,
    pub recipients: u64,
    /// Original bytes of those messages.
    pub bytes: u64,
    pub retry_in_doubt: u64,
    pub refused: u64,
    pub already_released: u64,
    pub already_failed: u64,
    pub purged: u64,
    pub in_doubt: u64,
    pub busy: u64,
}

impl PlannedMessage {
    pub fn sends(&self) -> bool {
        self.recipients.iter().any(|r| r.action.sends() || matches!(r.action, Action::Refuse { .. }))
    }
}

impl Plan {
    pub fn counts(&self) -> PlanCounts {
        let mut c = PlanCounts::default();
        for m in &self.messages {
            if m.recipients.iter().any(|r| r.action.sends()) {
                c.messages += 1;
                c.bytes += m.size;
            }
            for r in &m.recipients {
                match &r.action {
                    Action::Send | Action::Copy | Action::RetryFailed => c.recipients += 1,
                    Action::RetryInDoubt { .. } => {
                        c.recipients += 1;
                        c.retry_in_doubt += 1;
                    }
                    Action::Refuse { .. } => c.refused += 1,
                    Action::Skip { skip } => match skip {
                        Skip::Released => c.already_released += 1,
                        Skip::Failed => c.already_failed += 1,
                        Skip::Purged => c.purged += 1,
                        Skip::InDoubt { .. } => c.in_doubt += 1,
                        Skip::Busy { .. } => c.busy += 1,
                    },
                }
            }
        }
        c
    }
}

/// Why an address must not be sent, if it must not.
pub(crate) fn refusal(addr: &str) -> Option<String> {
    address::check(addr).err().map(|e| format!("refused, never sent: {e}"))
}

impl Store {
    /// Plans a release of the messages `req.selector` matches (oldest first, so a long release goes out in the
    /// order the mail came in). Writes nothing.
    pub fn plan_release(&self, req: &PlanRequest) -> Result<Plan> {
        req.selector.validate()?;
        if let Some(to) = &req.copy_to {
            address::envelope_recipient(to)?;
        }
        let mut records = self.select(&req.selector, None)?;
        records.reverse();
        let subset: HashSet<String> = req
            .selector
            .rcpts
            .iter()
            .map(|a| address::fold(a.trim().trim_start_matches('<').trim_end_matches('>')))
            .collect();
        let mut alive: HashMap<String, bool> = HashMap::new();
        let mut messages = Vec::with_capacity(records.len());
        for rec in records {
            let sender_refusal =
                if rec.from.is_empty() { None } else { refusal(&rec.from).map(|w| format!("envelope sender {w}")) };
            let mut recipients = Vec::new();
            if let Some(to) = &req.copy_to {
                let action = match &sender_refusal {
                    Some(why) => Action::Refuse { why: why.clone() },
                    None => Action::Copy,
                };
                recipients.push(PlannedRecipient { address: address::envelope_recipient(to)?, action });
            } else {
                for r in &rec.recipients {
                    if !subset.is_empty() && !subset.contains(&address::fold(&r.address)) {
                        continue;
                    }
                    let action = match r.state {
                        RecipientState::Held => match sender_refusal.clone().or_else(|| refusal(&r.address)) {
                            Some(why) => Action::Refuse { why },
                            None => Action::Send,
                        },
                        RecipientState::Released => Action::Skip { skip: Skip::Released },
                        RecipientState::Failed if req.retry_failed => {
                            match sender_refusal.clone().or_else(|| refusal(&r.address)) {
                                Some(why) => Action::Refuse { why },
                                None => Action::RetryFailed,
                            }
                        }
                        RecipientState::Failed => Action::Skip { skip: Skip::Failed },
                        RecipientState::Purged => Action::Skip { skip: Skip::Purged },
                        RecipientState::Releasing => {
                            // fill_details does not read release_id; ask the journal.
                            let stored = journal::row_state(&self.conn, &rec.id, &r.address)
                                .map_err(self.sql_err())?
                                .and_then(|s| s.release_id)
                                .unwrap_or_default();
                            let live = match alive.get(&stored) {
                                Some(&live) => live,
                                None => {
                                    let live = match Tag::parse(&stored) {
                                        Some(t) => {
                                            t.is_alive()
                                                || journal::running_elsewhere(&self.conn, &t.release)
                                                    .map_err(self.sql_err())?
                                        }
                                        None => false,
                                    };
                                    alive.insert(stored.clone(), live);
                                    live
                                }
                            };
                            if live {
                                Action::Skip { skip: Skip::Busy { by: stored } }
                            } else if req.retry_in_doubt {
                                Action::RetryInDoubt { previous: stored }
                            } else {
                                Action::Skip { skip: Skip::InDoubt { previous: stored } }
                            }
                        }
                    };
                    recipients.push(PlannedRecipient { address: r.address.clone(), action });
                }
            }
            if recipients.is_empty() {
                continue; // --rcpt matched none of this message's recipients (it matched by another kind)
            }
            messages.push(PlannedMessage {
                id: rec.id,
                hash: rec.hash,
                size: rec.size,
                from: rec.from,
                received: rec.received,
                verdict: rec.verdict,
                subject: rec.subject,
                recipients,
            });
        }
        Ok(Plan {
            selector: req.selector.clone(),
            copy_to: req.copy_to.clone(),
            retry_in_doubt: req.retry_in_doubt,
            retry_failed: req.retry_failed,
            messages,
        })
    }
}
