//! One mail transaction on an open session, in the order it happens on the wire:
//! 1. [`refuse_unencodable`]: recipients (or a sender) that need SMTPUTF8 from a relay without it fail here;
//! 2. [`envelope`]: the `MAIL FROM` / `RCPT TO` / `DATA` group;
//! 3. [`pipelined`] (one write, RFC 2920) or [`one_by_one`]: send it and read the replies;
//! 4. [`close_unwanted_data`]: a pipelining relay that said 354 to a DATA we will not follow gets an empty message;
//! 5. [`envelope_outcomes`]: the replies to MAIL, each RCPT and DATA, mapped to outcomes; the recipients accepted;
//! 6. [`data`]: the message in one write and the final reply, the outcome of every accepted recipient.
//!
//! Each step either hands the next one what it needs or ends the transaction with [`End`]: by then every
//! recipient it reached has its outcome. The rule behind the outcomes: nothing can have been accepted before the
//! terminator went out (deferred), and after it only a clear reply settles it (else in doubt).

use std::io;
use std::time::Duration;

use quarantine_mail::encode;
use quarantine_store::Outcome;

use super::reply::Reply;
use super::session::Conn;
use super::FINAL_REPLY_TIMEOUT;

/// Why a transaction stopped before the final reply.
enum End {
    /// Every recipient it reached has its outcome; `broken`: the session cannot be reused.
    Done { broken: bool },
    /// The RSET pipelined before MAIL failed: the session is dead and nothing was accepted; reconnect and retry.
    Retry,
}

/// One outcome per recipient, filled in as the replies come; `None` for not yet known.
struct Outcomes(Vec<Option<Outcome>>);

impl Outcomes {
    fn fill(&mut self, idx: &[usize], o: Outcome) {
        for &i in idx {
            self.0[i] = Some(o.clone());
        }
    }

    /// What is left unknown when a transaction ends early was never attempted.
    fn finish(self) -> Vec<Outcome> {
        self.0
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::Deferred("not attempted: the session ended early".into())))
            .collect()
    }
}

/// One mail transaction on an open session. Returns the outcomes and whether the session is unusable after it;
/// `None` when `rset` was asked for (pipelined before MAIL) and failed: the session is dead, nothing was
/// accepted, the caller reconnects and tries again. `rset` is only for a pipelining relay: the caller sends a
/// lone RSET itself otherwise.
pub(super) fn transaction(
    c: &mut Conn,
    from: &str,
    rcpts: &[&str],
    parts: &[&[u8]],
    timeout: Duration,
    rset: bool,
) -> Option<(Vec<Outcome>, bool)> {
    let mut out = Outcomes(vec![None; rcpts.len()]);
    let broken = match run(c, from, rcpts, parts, timeout, rset, &mut out) {
        Ok(broken) | Err(End::Done { broken }) => broken,
        Err(End::Retry) => return None,
    };
    Some((out.finish(), broken))
}

fn run(
    c: &mut Conn,
    from: &str,
    rcpts: &[&str],
    parts: &[&[u8]],
    timeout: Duration,
    rset: bool,
    out: &mut Outcomes,
) -> Result<bool, End> {
    let todo = refuse_unencodable(c, from, rcpts, out)?;
    let cmds = envelope(c, from, rcpts, &todo, parts);
    let replies = if c.has("PIPELINING") {
        let replies = pipelined(c, &cmds, rset, &todo, out)?;
        close_unwanted_data(c, &replies, &todo, out)?;
        replies
    } else {
        one_by_one(c, &cmds)
    };
    let accepted = envelope_outcomes(&replies, &todo, out)?;
    let (outcome, broken) = data(c, parts, timeout);
    out.fill(&accepted, outcome);
    Ok(broken)
}

/// Step 1. Without SMTPUTF8 a non-ASCII address cannot be sent: a non-ASCII sender fails everyone, a non-ASCII
/// recipient fails alone. Returns the recipients still to try, by index.
fn refuse_unencodable(c: &Conn, from: &str, rcpts: &[&str], out: &mut Outcomes) -> Result<Vec<usize>, End> {
    let utf8 = c.has("SMTPUTF8");
    if !from.is_ascii() && !utf8 {
        let why = format!("not sent: the envelope sender <{from}> is not ASCII and the relay does not offer SMTPUTF8");
        out.0.fill(Some(Outcome::Failed(why)));
        return Err(End::Done { broken: false });
    }
    for (i, r) in rcpts.iter().enumerate() {
        if !r.is_ascii() && !utf8 {
            out.0[i] = Some(Outcome::Failed(
                "not sent: the address is not ASCII and the relay does not offer SMTPUTF8".into(),
            ));
        }
    }
    let todo: Vec<usize> = (0..rcpts.len()).filter(|&i| out.0[i].is_none()).collect();
    if todo.is_empty() {
        return Err(End::Done { broken: false });
    }
    Ok(todo)
}

/// Step 2. `MAIL FROM` (with `BODY=8BITMIME` for 8-bit content when offered, `SMTPUTF8` when an address needs
/// it), one `RCPT TO` per recipient in `todo`, `DATA`.
fn envelope(c: &Conn, from: &str, rcpts: &[&str], todo: &[usize], parts: &[&[u8]]) -> Vec<String> {
    let mut mail = format!("MAIL FROM:<{from}>");
    if parts.iter().any(|p| encode::is_8bit(p)) && c.has("8BITMIME") {
        mail.push_str(" BODY=8BITMIME");
    }
    if !from.is_ascii() || todo.iter().any(|&i| !rcpts[i].is_ascii()) {
        mail.push_str(" SMTPUTF8");
    }
    let mut cmds = vec![mail];
    cmds.extend(todo.iter().map(|&i| format!("RCPT TO:<{}>", rcpts[i])));
    cmds.push("DATA".into());
    cmds
}

/// Step 3, PIPELINING: the whole group (behind an RSET when the session was used before) in one write, then the
/// replies in order (RFC 2920), stopping at the first unreadable one.
fn pipelined(
    c: &mut Conn,
    cmds: &[String],
    rset: bool,
    todo: &[usize],
    out: &mut Outcomes,
) -> Result<Vec<io::Result<Reply>>, End> {
    let mut group: String = if rset { "RSET\r\n".into() } else { String::new() };
    group.extend(cmds.iter().map(|l| format!("{l}\r\n")));
    if let Err(e) = c.send(group.as_bytes()) {
        if rset {
            return Err(End::Retry);
        }
        out.fill(todo, Outcome::Deferred(format!("connection lost at MAIL FROM: {e}")));
        return Err(End::Done { broken: true });
    }
    if rset && !matches!(c.read_reply(), Ok(r) if r.code == 250) {
        // Dropping the session without sending a message ends whatever the relay made of the rest.
        return Err(End::Retry);
    }
    let mut replies = Vec::with_capacity(cmds.len());
    for _ in cmds {
        let r = c.read_reply();
        let stop = r.is_err();
        replies.push(r);
        if stop {
            break;
        }
    }
    Ok(replies)
}

/// Step 3, no PIPELINING: one command at a time, stopping at a refused MAIL or a lost connection, and no DATA
/// when no recipient was accepted.
fn one_by_one(c: &mut Conn, cmds: &[String]) -> Vec<io::Result<Reply>> {
    let mut replies: Vec<io::Result<Reply>> = Vec::with_capacity(cmds.len());
    for (n, l) in cmds.iter().enumerate() {
        if n == cmds.len() - 1 && !replies[1..].iter().any(|r| matches!(r, Ok(r) if r.code < 300)) {
            break; // no recipient accepted: no DATA
        }
        let r = c.command(l);
        let stop = match &r {
            Err(_) => true,
            Ok(r) => n == 0 && r.code >= 300,
        };
        replies.push(r);
        if stop {
            break;
        }
    }
    replies
}

/// Step 4. A pipelining relay that answered 354 to a DATA we are not going to follow with a message (MAIL or
/// every RCPT refused) is waiting for data: end it empty, so nothing half-done is left in the session.
fn close_unwanted_data(
    c: &mut Conn,
    replies: &[io::Result<Reply>],
    todo: &[usize],
    out: &mut Outcomes,
) -> Result<(), End> {
    let ok = |r: Option<&io::Result<Reply>>| matches!(r, Some(Ok(r)) if r.code < 300);
    let data_open = matches!(replies.get(1 + todo.len()), Some(Ok(r)) if r.code == 354);
    let mail_ok = ok(replies.first());
    let any_rcpt = (1..=todo.len()).any(|n| ok(replies.get(n)));
    if data_open && !(mail_ok && any_rcpt) {
        let ended = c.send(b".\r\n").is_ok() && c.read_reply().is_ok();
        if !ended {
            out.fill(todo, Outcome::Deferred("relay accepted DATA with no valid recipient".into()));
            return Err(End::Done { broken: true });
        }
    }
    Ok(())
}

/// Step 5. The replies to MAIL, to each RCPT (recipient `todo[n]` got reply `1 + n`) and to DATA, as outcomes.
/// Returns the recipients the relay accepted, when it is ready for the message (354).
fn envelope_outcomes(replies: &[io::Result<Reply>], todo: &[usize], out: &mut Outcomes) -> Result<Vec<usize>, End> {
    // MAIL FROM.
    match replies.first() {
        Some(Ok(r)) if r.code < 300 => {}
        Some(Ok(r)) => {
            out.fill(todo, negative(r.code, format!("MAIL FROM: {}", r.text)));
            // Without pipelining nothing more was sent; with it, the RCPTs and DATA were refused too (503).
            return Err(End::Done { broken: r.code == 421 });
        }
        Some(Err(e)) => {
            out.fill(todo, Outcome::Deferred(format!("connection lost at MAIL FROM: {e}")));
            return Err(End::Done { broken: true });
        }
        None => unreachable!("at least one reply was read"),
    }
    // RCPT TO, one per recipient.
    let mut accepted: Vec<usize> = Vec::new();
    for (n, &i) in todo.iter().enumerate() {
        match replies.get(1 + n) {
            Some(Ok(r)) if r.code < 300 => accepted.push(i),
            Some(Ok(r)) => {
                out.0[i] = Some(negative(r.code, format!("RCPT TO: {}", r.text)));
                if r.code == 421 {
                    out.fill(&todo[n + 1..], Outcome::Deferred(format!("relay closed the session: {}", r.text)));
                    return Err(End::Done { broken: true });
                }
            }
            Some(Err(e)) => {
                out.fill(&todo[n..], Outcome::Deferred(format!("connection lost at RCPT TO: {e}")));
                return Err(End::Done { broken: true });
            }
            None => {
                out.fill(&todo[n..], Outcome::Deferred("connection lost at RCPT TO".into()));
                return Err(End::Done { broken: true });
            }
        }
    }
    // DATA. Without pipelining, DATA is only sent when a recipient was accepted.
    match replies.get(1 + todo.len()) {
        None if accepted.is_empty() => Err(End::Done { broken: false }),
        None => {
            out.fill(&accepted, Outcome::Deferred("connection lost at DATA".into()));
            Err(End::Done { broken: true })
        }
        Some(Ok(r)) if r.code == 354 => {
            if accepted.is_empty() {
                return Err(End::Done { broken: false }); // the empty DATA was ended in step 4
            }
            Ok(accepted)
        }
        Some(Ok(r)) => {
            if !accepted.is_empty() {
                out.fill(&accepted, negative(r.code, format!("DATA: {}", r.text)));
            }
            Err(End::Done { broken: r.code == 421 || r.code < 400 })
        }
        Some(Err(e)) => {
            out.fill(&accepted, Outcome::Deferred(format!("connection lost at DATA: {e}")));
            Err(End::Done { broken: true })
        }
    }
}

/// Step 6. The message, dot-stuffed and terminated, in one write, and the reply to it: the outcome of every
/// accepted recipient, and whether the session is unusable after it. A failed write means the terminator never
/// went out: the relay cannot have accepted the message. After it did, anything but a clear reply is in doubt.
fn data(c: &mut Conn, parts: &[&[u8]], timeout: Duration) -> (Outcome, bool) {
    let mut w = encode::DataWriter::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        w.push(p);
    }
    let wire = w.finish();
    if let Err(e) = c.send(&wire) {
        return (Outcome::Deferred(format!("connection lost while sending the message: {e}")), true);
    }
    c.set_read_timeout(FINAL_REPLY_TIMEOUT);
    let final_reply = c.read_reply();
    c.set_read_timeout(timeout);
    match final_reply {
        Ok(r) if r.code < 300 => (Outcome::Delivered(r.text), false),
        Ok(r) if r.code >= 400 => (negative(r.code, r.text.clone()), r.code == 421),
        Ok(r) => (Outcome::InDoubt(format!("in doubt: unexpected reply to the final '.': {}", r.text)), true),
        Err(e) => (Outcome::InDoubt(format!("in doubt: no reply to the final '.' ({e})")), true),
    }
}

/// 4xx → deferred, 5xx → failed.
fn negative(code: u16, text: String) -> Outcome {
    if code >= 500 {
        Outcome::Failed(text)
    } else {
        Outcome::Deferred(text)
    }
}
