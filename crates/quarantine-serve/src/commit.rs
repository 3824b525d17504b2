//! Group commit of the `spool/` directory (DESIGN section 10, PostgreSQL's `commit_delay`): each session writes,
//! fsyncs and renames its own spool file in parallel ([`quarantine_store::Spool::stage`]), then asks for a
//! commit. The first to ask becomes the leader and fsyncs `spool/` once for every file renamed before that fsync
//! began; whoever asks while it runs waits for the next round, led by one of them. A leader waits for others
//! (at most `delay`) only while other sessions are still writing their file, so a lone session never waits.
//!
//! A round whose directory fsync fails fails every session in it (each discards its file and answers 451); the
//! next round fsyncs again for its own files: a file fsynced and renamed after the failure is in a directory
//! whose entries are written again by the next successful fsync.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use quarantine_store::Spool;

pub struct GroupCommit {
    spool: Spool,
    delay: Duration,
    state: Mutex<State>,
    cv: Condvar,
}

#[derive(Default)]
struct State {
    /// Tickets handed out (one per commit request).
    issued: u64,
    /// Every ticket up to this one is settled (durable, or failed if listed in `failed`).
    settled: u64,
    leading: bool,
    /// Sessions between "message complete" and "asked for a commit": a leader waits for them, briefly.
    writing: usize,
    /// Recent failed rounds: (first ticket, last ticket, error).
    failed: VecDeque<(u64, u64, String)>,
    /// Counters for the figures: rounds and tickets.
    rounds: u64,
}

/// Statistics, for the benchmark and the log.
#[derive(Clone, Copy, Debug, Default)]
pub struct CommitStats {
    pub rounds: u64,
    pub commits: u64,
}

impl GroupCommit {
    pub fn new(spool: Spool, delay: Duration) -> GroupCommit {
        GroupCommit { spool, delay, state: Mutex::new(State::default()), cv: Condvar::new() }
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// A session starts writing a spool file; pair with [`GroupCommit::commit`] or [`GroupCommit::abandon`].
    pub fn writing(&self) {
        self.state.lock().expect("commit state").writing += 1;
    }

    /// A session that called [`GroupCommit::writing`] will not commit after all.
    pub fn abandon(&self) {
        let mut s = self.state.lock().expect("commit state");
        s.writing = s.writing.saturating_sub(1);
        drop(s);
        self.cv.notify_all();
    }

    /// Returns once every spool file this thread renamed before the call is durable (`Ok`), or its round's
    /// directory fsync failed (`Err`, one line). Call after [`GroupCommit::writing`].
    pub fn commit(&self) -> Result<(), String> {
        let mut s = self.state.lock().expect("commit state");
        s.writing = s.writing.saturating_sub(1);
        s.issued += 1;
        let ticket = s.issued;
        self.cv.notify_all();
        loop {
            if s.settled >= ticket {
                return match s.failed.iter().find(|(lo, hi, _)| (*lo..=*hi).contains(&ticket)) {
                    Some((_, _, e)) => Err(e.clone()),
                    None => Ok(()),
                };
            }
            if !s.leading {
                s.leading = true;
                // Let sessions that are writing their file right now join this round, briefly.
                let until = Instant::now() + self.delay;
                while s.writing > 0 {
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    s = self.cv.wait_timeout(s, until - now).expect("commit state").0;
                }
                let (lo, hi) = (s.settled + 1, s.issued);
                drop(s);
                let r = self.spool.sync_dir().map_err(|e| e.to_string());
                s = self.state.lock().expect("commit state");
                if let Err(e) = r {
                    s.failed.push_back((lo, hi, e));
                    while s.failed.len() > 64 {
                        s.failed.pop_front();
                    }
                }
                s.settled = hi;
                s.leading = false;
                s.rounds += 1;
                self.cv.notify_all();
                continue;
            }
            s = self.cv.wait(s).expect("commit state");
        }
    }

    pub fn stats(&self) -> CommitStats {
        let s = self.state.lock().expect("commit state");
        CommitStats { rounds: s.rounds, commits: s.settled }
    }
}
