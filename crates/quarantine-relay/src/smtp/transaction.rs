//! One mail transaction on an open session, in the order it happens on the wire:
//! 1. [`refuse_unencodable`]: recipients (or a sender) that need SMTPUTF8 from a relay without it fail here;
//! 2. [`envelope`]: the `MAIL FROM` / `RCPT TO` / `DATA` group;
//! 3. [`pipelined`] (one write, RFC 2920) or [`one_by_one`]: send it and read the replies;
//! 4. [`close_unwanted_data`]: a pipelining relay that said 354 to a DATA we will not follow gets an empty message;
//!    [`reused_session`]: on a session reused without RSET, a dead session or a relay that wants RSET after all
//!    sends the caller round again (nothing was accepted);
//! 5. [`envelope_outcomes`]: the replies to MAIL, each RCPT and DATA, mapped to outcomes; the recipients accepted;
//! 6. [`data`]: the message in one write and the final reply, the outcome of every accepted recipient.
//!
//! Each step either hands the next one what it needs or ends the transaction with [`End`]: by then every
//! recipient it reached has its outcome. The rule behind the outcomes: nothing can have been accepted before the
//! terminator went out (deferred), and after it only a clear reply settles it (else in doubt).

use std::io;

use quarantine_mail::encode::{self, Encoded};
use quarantine_store::Outcome;

use super::reply::Reply;
use super::session::Conn;
use super::FINAL_REPLY_TIMEOUT;

/// Why a transaction stopped before the final reply.
enum End {
    /// Every recipient it reached has its outcome; `broken`: the session cannot be reused.
    Done { broken: bool },
    /// Nothing was sent (every address needs SMTPUTF8 the relay lacks): the session is as it was.
    Unsent,
    /// See [`Again`].
    Again(Again),
}

/// Why the caller must run the transaction again; nothing of the message was accepted.
pub(super) enum Again {
    /// The session is dead (the RSET pipelined before MAIL failed, or a session reused without RSET did not
    /// answer MAIL): reconnect.
    Reconnect,
    /// MAIL, sent without RSET after a completed transaction, got 503 (bad sequence): this relay wants RSET
    /// between messages, whatever RFC 5321 section 4.1.4 allows; send it and retry on this session.
    WithRset,
}

/// How a transaction ended.
pub(super) struct Ended {
    /// One per recipient, in order.
    pub(super) outcomes: Vec<Outcome>,
    /// The session cannot be reused.
    pub(super) broken: bool,
    /// Whether the session is now between transactions, so the next MAIL needs no RSET: true only when the
    /// relay answered our final dot; `None` when nothing was sent (it is as it was).
    pub(super) clean: Option<bool>,
}

/// The message: its pieces, and the DATA payload already encoded from them when the caller has it.
pub(super) struct Body<'a> {
    pub(super) parts: &'a [&'a [u8]],
    pub(super) encoded: Option<&'a Encoded>,
}

impl Body<'_> {
    fn is_8bit(&self) -> bool {
        match self.encoded {
            Some(e) => e.eight_bit,
            None => self.parts.iter().any(|p| encode::is_8bit(p)),
        }
    }
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

/// What the session needs before this transaction's MAIL.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Before {
    /// A new session, or one whose last transaction we ended with RSET.
    Nothing,
    /// RSET, pipelined before MAIL (a pipelining relay; the caller sends a lone RSET itself otherwise).
    Rset,
    /// Nothing, but the last transaction on this session completed just before: MAIL follows it directly
    /// (RFC 5321 section 4.1.4), and a 503 to it means this relay wants RSET after all ([`Again::WithRset`]).
    AfterCompleted,
}

/// One mail transaction on an open session: the outcomes, whether the session is usable after it and whether
/// it is between transactions; or, with nothing of the message accepted, why the caller must try again.
pub(super) fn transaction(
    c: &mut Conn,
    from: &str,
    rcpts: &[&str],
    body: &Body,
    before: Before,
) -> Result<Ended, Again> {
    let mut out = Outcomes(vec![None; rcpts.len()]);
    let (broken, clean) = match run(c, from, rcpts, body, before, &mut out) {
        Ok(r) => r,
        Err(End::Done { broken }) => (broken, Some(false)),
        Err(End::Unsent) => (false, None),
        Err(End::Again(a)) => return Err(a),
    };
    Ok(Ended { outcomes: out.finish(), broken, clean })
}

fn run(
    c: &mut Conn,
    from: &str,
    rcpts: &[&str],
    body: &Body,
    before: Before,
    out: &mut Outcomes,
) -> Result<(bool, Option<bool>), End> {
    let todo = refuse_unencodable(c, from, rcpts, out)?;
    let cmds = envelope(c, from, rcpts, &todo, body);
    let replies = if c.has("PIPELINING") {
        let replies = pipelined(c, &cmds, before, &todo, out)?;
        close_unwanted_data(c, &replies, &todo, out)?;
        reused_session(&replies, before)?;
        replies
    } else {
        let replies = one_by_one(c, &cmds);
        reused_session(&replies, before)?;
        replies
    };
    let accepted = envelope_outcomes(&replies, &todo, out)?;
    let (outcome, broken) = data(c, body);
    out.fill(&accepted, outcome);
    Ok((broken, Some(!broken)))
}

/// On a session reused without RSET, the reply to MAIL is where a relay shows what the RSET would have: that it
/// dropped the session (idle timeout, a limit on messages per session: no reply, or 421), so the message goes
/// out on a new one; or that it insists on RSET between transactions (503, bad sequence), so it is sent again
/// behind one. Either way no message data went out: nothing was accepted. (With pipelining the RCPTs and DATA
/// behind a refused MAIL were refused too, or an opened DATA was ended empty by [`close_unwanted_data`].)
fn reused_session(replies: &[io::Result<Reply>], before: Before) -> Result<(), End> {
    if before != Before::AfterCompleted {
        return Ok(());
    }
    match replies.first() {
        Some(Err(_)) | None => Err(End::Again(Again::Reconnect)),
        Some(Ok(r)) if r.code == 421 => Err(End::Again(Again::Reconnect)),
        Some(Ok(r)) if r.code == 503 => Err(End::Again(Again::WithRset)),
        Some(Ok(_)) => Ok(()),
    }
}

/// Step 1. Without SMTPUTF8 a non-ASCII address cannot be sent: a non-ASCII sender fails everyone, a non-ASCII
/// recipient fails alone. Returns the recipients still to try, by index.
fn refuse_unencodable(c: &Conn, from: &str, rcpts: &[&str], out: &mut Outcomes) -> Result<Vec<usize>, End> {
    let utf8 = c.has("SMTPUTF8");
    if !from.is_ascii() && !utf8 {
        let why = format!("not sent: the envelope sender <{from}> is not ASCII and the relay does not offer SMTPUTF8");
        out.0.fill(Some(Outcome::Failed(why)));
        return Err(End::Unsent);
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
        return Err(End::Unsent);
    }
    Ok(todo)
}

/// Step 2. `MAIL FROM` (with `BODY=8BITMIME` for 8-bit content when offered, `SMTPUTF8` when an address needs
/// it), one `RCPT TO` per recipient in `todo`, `DATA`.
fn envelope(c: &Conn, from: &str, rcpts: &[&str], todo: &[usize], body: &Body) -> Vec<String> {
    let mut mail = format!("MAIL FROM:<{from}>");
    if body.is_8bit() && c.has("8BITMIME") {
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

/// Step 3, PIPELINING: the whole group (behind an RSET when the session's last transaction did not complete) in
/// one write, then the replies in order (RFC 2920), stopping at the first unreadable one.
fn pipelined(
    c: &mut Conn,
    cmds: &[String],
    before: Before,
    todo: &[usize],
    out: &mut Outcomes,
) -> Result<Vec<io::Result<Reply>>, End> {
    let rset = before == Before::Rset;
    let mut group: String = if rset { "RSET\r\n".into() } else { String::new() };
    group.extend(cmds.iter().map(|l| format!("{l}\r\n")));
    if let Err(e) = c.send(group.as_bytes()) {
        if before != Before::Nothing {
            return Err(End::Again(Again::Reconnect)); // a reused session died while idle
        }
        out.fill(todo, Outcome::Deferred(format!("connection lost at MAIL FROM: {e}")));
        return Err(End::Done { broken: true });
    }
    if rset && !matches!(c.read_reply(), Ok(r) if r.code == 250) {
        // Dropping the session without sending a message ends whatever the relay made of the rest.
        return Err(End::Again(Again::Reconnect));
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
fn data(c: &mut Conn, body: &Body) -> (Outcome, bool) {
    let local;
    let wire: &[u8] = match body.encoded {
        Some(e) => &e.wire,
        None => {
            let mut w = encode::DataWriter::with_capacity(body.parts.iter().map(|p| p.len()).sum());
            for p in body.parts {
                w.push(p);
            }
            local = w.finish();
            &local
        }
    };
    if let Err(e) = c.send(wire) {
        return (Outcome::Deferred(format!("connection lost while sending the message: {e}")), true);
    }
    let final_reply = c.await_reply(FINAL_REPLY_TIMEOUT).and_then(|()| c.read_reply());
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
