//! The per-recipient release journal: claiming recipients before sending and recording the relay's answer after.
//!
//! # The release tag
//! A claimed row (`releasing`) carries in `release_id` the tag of the run that claimed it:
//! `<release id> <host> <boot id> <pid> <process start time> <actor>`. A later run reads it back to tell two
//! situations apart that look the same in the table:
//! - the claiming process is still running (same boot, same pid, same start time): another release is sending
//!   these recipients right now; they are skipped, never touched;
//! - it is gone: it crashed or was killed between sending and recording, so the relay may or may not have the
//!   message. The recipient is *in doubt* and is sent again only with `--retry-in-doubt`.
//!
//! Every write here is guarded by the state it expects (`held` to claim, `releasing` with our tag to record), so a
//! row that changed under us is left alone rather than overwritten.
//!
//! # Several gateways
//! On PostgreSQL claim transactions of different releases run at the same time (`db` module docs, *Locking*). A
//! claim selects the one row it changes `FOR UPDATE SKIP LOCKED` ([`guarded`]) and changes it only if it got the
//! lock: two claims never wait for each other, and a row another node's claim holds is skipped (reported busy),
//! never claimed twice. Once that claim commits the row is `releasing` under its tag; if it rolled back, the row is
//! still `held`, skipped by this run and claimed by the next. Only rows in the state a claim moves them from are
//! locked, never another run's `releasing` rows, so recording outcomes never waits for a claim either.

use crate::db::Conn;
use rusqlite::{params, OptionalExtension};

use crate::ids;
use crate::state::RecipientState;
use quarantine_mail::address;

/// What happened to one recipient, as recorded in the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The relay accepted the message (2xx after the final `.`): `released`, with the reply text.
    Delivered(String),
    /// A temporary failure (4xx, or the relay could not be reached): back to `held`, attempt counted.
    Deferred(String),
    /// A permanent failure (5xx, or a refusal before sending): `failed`, with the reply.
    Failed(String),
    /// Sent, but the relay's answer never came: stays `releasing`, with the reason in `last_error`.
    InDoubt(String),
    /// Claimed but never sent (interrupted, blob unreadable): back to `held`, attempts unchanged.
    NotSent(String),
    /// Not sent because the rescan before release called it infected: back to `held` with the scanner's words in
    /// `last_error`, attempts unchanged (a later release, after the signatures change, sends it).
    Infected(String),
}

/// The identity of a release run, stored in `recipients.release_id` while it holds a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    pub release: String,
    pub host: String,
    pub boot: String,
    pub pid: u32,
    pub start: u64,
    pub actor: String,
}

impl Tag {
    /// A fresh tag for this process.
    pub fn current(actor: &str) -> Tag {
        let pid = std::process::id();
        Tag {
            release: ids::new_id(),
            host: token(&read_trim("/proc/sys/kernel/hostname").unwrap_or_else(|| "localhost".into())),
            boot: boot_id(),
            pid,
            start: process_start(pid).unwrap_or(0),
            actor: actor.chars().map(|c| if c.is_control() { '?' } else { c }).collect(),
        }
    }

    pub fn encode(&self) -> String {
        format!("{} {} {} {} {} {}", self.release, self.host, self.boot, self.pid, self.start, self.actor)
    }

    pub fn parse(s: &str) -> Option<Tag> {
        let mut it = s.splitn(6, ' ');
        Some(Tag {
            release: it.next()?.to_string(),
            host: it.next()?.to_string(),
            boot: it.next()?.to_string(),
            pid: it.next()?.parse().ok()?,
            start: it.next()?.parse().ok()?,
            actor: it.next().unwrap_or("").to_string(),
        })
    }

    /// True if the process that made this tag is still running on this machine. An unreadable tag (or one from
    /// another machine or boot) is not alive: its claims can only be in doubt.
    pub fn is_alive(&self) -> bool {
        let here = Tag::current("");
        self.host == here.host
            && self.boot == here.boot
            && self.start != 0
            && process_start(self.pid) == Some(self.start)
    }

    /// For messages: `release 7K2M9ABCDE by alice (pid 4242 on mx1)`.
    pub fn describe(&self) -> String {
        format!("release {} by {} (pid {} on {})", self.release, self.actor, self.pid, self.host)
    }
}

/// The class of the session-level advisory lock a release holds on a shared (PostgreSQL) index for as long as its
/// connection lives, keyed by the `hashtext` of its release id ('QRNU'; the writers' lock is the single key 'QRNT').
/// [`Tag::is_alive`] can only see processes on this machine: a release running on another gateway would look dead
/// there, its claims "in doubt", and `--retry-in-doubt` would send them a second time while it is still sending.
const RUNNING_CLASS: i32 = 0x5152_4e55;

/// On a shared index, holds this release's running lock until the connection closes (the process exits, however it
/// ends, or the server drops the session). Nothing to do on SQLite: every release is on this machine.
pub(crate) fn announce_running(conn: &Conn, release: &str) -> rusqlite::Result<()> {
    if conn.is_postgres() {
        conn.query_row(
            &format!("SELECT 1 FROM (SELECT pg_advisory_lock({RUNNING_CLASS}, hashtext(?1))) AS l"),
            [release],
            |_| Ok(()),
        )?;
    }
    Ok(())
}

/// Whether `release` still runs on some gateway's connection to the shared index: its running lock is held. A
/// hash collision can only make a finished release look busy (its claims wait), never a running one look done.
pub(crate) fn running_elsewhere(conn: &Conn, release: &str) -> rusqlite::Result<bool> {
    if !conn.is_postgres() {
        return Ok(false);
    }
    let free: i64 = conn.query_row(
        &format!("SELECT CASE WHEN pg_try_advisory_lock({RUNNING_CLASS}, hashtext(?1)) THEN 1 ELSE 0 END"),
        [release],
        |r| r.get(0),
    )?;
    if free == 1 {
        conn.query_row(
            &format!("SELECT CASE WHEN pg_advisory_unlock({RUNNING_CLASS}, hashtext(?1)) THEN 1 ELSE 0 END"),
            [release],
            |r| r.get::<_, i64>(0),
        )?;
    }
    Ok(free == 0)
}

/// Describes a stored tag, readable or not.
pub fn describe(stored: &str) -> String {
    Tag::parse(stored).map(|t| t.describe()).unwrap_or_else(|| format!("release {stored}"))
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn token(s: &str) -> String {
    s.chars().map(|c| if c.is_whitespace() || c.is_control() { '_' } else { c }).collect()
}

fn boot_id() -> String {
    read_trim("/proc/sys/kernel/random/boot_id")
        .map(|b| b.chars().filter(|c| c.is_ascii_hexdigit()).take(12).collect())
        .unwrap_or_else(|| "noboot".into())
}

/// Field 22 of `/proc/PID/stat`: the process start time in clock ticks since boot. With the boot id it names
/// one process, even after its pid is reused.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: count fields after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// A recipient row's journal columns.
#[derive(Clone, Debug)]
pub struct RowState {
    pub state: RecipientState,
    pub release_id: Option<String>,
}

pub(crate) fn row_state(conn: &Conn, message: &str, address: &str) -> rusqlite::Result<Option<RowState>> {
    conn.prepare_cached("SELECT state, release_id FROM recipients WHERE message = ?1 AND address_lc = ?2")?
        .query_row(params![message, address::fold(address)], |r| {
            Ok(RowState { state: r.get(0)?, release_id: r.get(1)? })
        })
        .optional()
}

/// Claims a `held` recipient of a live message for `tag`. False if it was not `held` any more.
pub(crate) fn claim_held(conn: &Conn, message: &str, address: &str, tag: &str) -> rusqlite::Result<bool> {
    claim_from(conn, RecipientState::Held, message, address, tag)
}

/// Claims a `failed` recipient of a live message for `tag`, for `--retry-failed`. False if it changed.
pub(crate) fn claim_failed(conn: &Conn, message: &str, address: &str, tag: &str) -> rusqlite::Result<bool> {
    claim_from(conn, RecipientState::Failed, message, address, tag)
}

/// `from` → `releasing` under `tag`, guarded by the state the plan saw, for a message that is still live.
fn claim_from(conn: &Conn, from: RecipientState, message: &str, address: &str, tag: &str) -> rusqlite::Result<bool> {
    let sql = guarded(
        conn,
        "UPDATE recipients SET state = 'releasing', release_id = ?3",
        "message = ?1 AND address_lc = ?2 AND state = ?4
           AND EXISTS (SELECT 1 FROM messages WHERE id = ?1 AND purged_us IS NULL)",
    );
    let n = conn.prepare_cached(&sql)?.execute(params![message, address::fold(address), tag, from])?;
    Ok(n == 1)
}

/// `update WHERE guard`, and on PostgreSQL the row chosen by `guard` only if no other transaction has it locked
/// (module docs, *Several gateways*): a claim skips a row another gateway is claiming instead of waiting for it.
fn guarded(conn: &Conn, update: &str, guard: &str) -> String {
    if conn.is_postgres() {
        format!("{update} WHERE rowid = (SELECT rowid FROM recipients WHERE {guard} FOR UPDATE SKIP LOCKED)")
    } else {
        format!("{update} WHERE {guard}")
    }
}

/// Takes over an in-doubt recipient (still `releasing` under `old`) for `tag`, for `--retry-in-doubt`.
pub(crate) fn claim_in_doubt(
    conn: &Conn,
    message: &str,
    address: &str,
    old: &str,
    tag: &str,
) -> rusqlite::Result<bool> {
    let sql = guarded(
        conn,
        "UPDATE recipients SET release_id = ?4",
        "message = ?1 AND address_lc = ?2 AND state = 'releasing' AND release_id = ?3",
    );
    let n = conn.prepare_cached(&sql)?.execute(params![message, address::fold(address), old, tag])?;
    Ok(n == 1)
}

/// Marks a `held` recipient `failed` without sending (an address that can never go on an SMTP line).
pub(crate) fn refuse(conn: &Conn, message: &str, address: &str, why: &str) -> rusqlite::Result<bool> {
    let sql = guarded(
        conn,
        "UPDATE recipients SET state = 'failed', reply = ?3, last_error = ?3",
        "message = ?1 AND address_lc = ?2 AND state = 'held'",
    );
    let n = conn.prepare_cached(&sql)?.execute(params![message, address::fold(address), why])?;
    Ok(n == 1)
}

/// Records what happened to a recipient claimed under `tag`. A row no longer claimed by us is left alone.
pub(crate) fn record(
    conn: &Conn,
    message: &str,
    address: &str,
    tag: &str,
    outcome: &Outcome,
    now_us: i64,
) -> rusqlite::Result<bool> {
    let lc = address::fold(address);
    let guard = "WHERE message = ?1 AND address_lc = ?2 AND state = 'releasing' AND release_id = ?3";
    let (sql, text) = match outcome {
        Outcome::Delivered(reply) => {
            (format!("UPDATE recipients SET state = 'released', released_us = ?5, reply = ?4 {guard}"), reply)
        }
        Outcome::Deferred(err) => {
            (format!("UPDATE recipients SET state = 'held', attempts = attempts + 1, last_error = ?4 {guard}"), err)
        }
        Outcome::Failed(reply) => (
            format!(
                "UPDATE recipients SET state = 'failed', attempts = attempts + 1, reply = ?4, last_error = ?4 {guard}"
            ),
            reply,
        ),
        Outcome::InDoubt(why) => (format!("UPDATE recipients SET last_error = ?4 {guard}"), why),
        Outcome::NotSent(why) | Outcome::Infected(why) => {
            (format!("UPDATE recipients SET state = 'held', last_error = ?4 {guard}"), why)
        }
    };
    let mut stmt = conn.prepare_cached(&sql)?;
    let n = if matches!(outcome, Outcome::Delivered(_)) {
        stmt.execute(params![message, lc, tag, text, now_us])?
    } else {
        stmt.execute(params![message, lc, tag, text])?
    };
    Ok(n == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_round_trip_and_liveness() {
        let t = Tag::current("alice admin");
        let back = Tag::parse(&t.encode()).unwrap();
        assert_eq!(back, t);
        assert!(t.is_alive(), "this process is running: {t:?}");
        let dead = Tag { start: t.start + 1, ..t.clone() };
        assert!(!dead.is_alive());
        let other_boot = Tag { boot: "000000000000".into(), ..t.clone() };
        assert!(!other_boot.is_alive());
        assert!(Tag::parse("garbage").is_none());
        assert!(describe("garbage").contains("garbage"));
    }

    #[test]
    fn start_time_of_a_command_with_spaces_and_parens() {
        // Our own stat line parses; the parser skips the command field however odd it is.
        assert!(process_start(std::process::id()).is_some());
    }
}
