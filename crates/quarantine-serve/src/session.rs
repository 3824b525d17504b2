//! One LMTP or ESMTP session: RFC 2033 and RFC 5321 on one state machine. The greeting command picks the dialect
//! (LHLO: LMTP, EHLO: ESMTP, HELO: SMTP); the only difference after that is the reply to the final dot: LMTP
//! answers once per accepted recipient, SMTP once. A reply 250 after the dot is sent only once every spool file of
//! the message is durable (`commit`); anything that stops it from being durable is 451. Replies are buffered and
//! flushed before the session would block reading (RFC 2920 pipelining).
//!
//! # smtp-proto 0.2.5, what is used and what is wrapped
//! Commands are parsed by `smtp_proto::Request::parse`. DATA is ours ([`DataEnd`]), not smtp-proto's
//! `DataReceiver`. Read in its source (and found by the `serve_lmtp` fuzz target), these needed care:
//! - **Line framing is ours, not `RequestReceiver`'s.** `RequestReceiver` caps a line at 4096 bytes, but on an
//!   over-long line it skips just that many bytes and parses the rest of the line as a new command, so bytes deep
//!   inside a 1 MB line could run as `RSET` or `MAIL` (command smuggling through a length limit). We cut lines at LF
//!   ourselves, with the configured `max_line_length`; an over-long line is discarded up to its LF and answered
//!   `500 5.5.2`, and only whole lines reach `Request::parse`.
//! - **Bare CR, bare LF and NUL in commands are refused** (`500 5.5.2`) before parsing: `Request::parse` ends a
//!   command at a bare LF and treats CR as whitespace, so `MAIL FROM:<a>\rRCPT TO:<b>` would not be what a
//!   CR-aware middlebox saw.
//! - **DATA's end is CRLF `.` CRLF only.** smtp-proto 0.2.5's `DataReceiver` also ends DATA at CRLF `.` CR CR
//!   LF (any run of CRs before the LF: after a CR its "after CRLF dot" state stays set), so the rest of the
//!   message would run as commands (SMTP smuggling) and the held copy would be cut short. [`DataEnd`] is a
//!   five-state machine: `\n.\r\n`, `\r.\r\n`, `\n.\n` and `\r\n.\r\r\n` are message content, never the end, and
//!   a dot is unstuffed only right after CRLF. Bare LF, bare CR and NUL inside the content are kept as they
//!   arrived (a quarantine keeps the bytes). It starts at a line start (DATA's own CRLF), so an empty message
//!   (`DATA` then `.` at once) ends at once; past the size limit it keeps finding the end but stores nothing.
//! - BDAT is not offered; a client that sends it anyway gets `554` and the connection is closed, since its chunk
//!   would otherwise be read as commands.

use std::sync::Arc;
use std::time::{Duration, Instant};

use smtp_proto::{Error as ProtoError, Request, MAIL_BODY_BINARYMIME};

use crate::config::ServeConfig;
use crate::intake::{self, Incoming};
use crate::server::{Conn, Shared};

/// How often a blocked read wakes up to check the time limits and shutdown.
const TICK: Duration = Duration::from_millis(200);
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug)]
enum Stop {
    /// The client closed or the connection broke: nothing to say.
    Gone,
    /// Say this (a 421) and close.
    Say(String),
}

pub struct Session<'a, S: Conn> {
    sh: &'a Shared,
    cfg: Arc<ServeConfig>,
    s: S,
    inb: Vec<u8>,
    pos: usize,
    out: Vec<u8>,
    lmtp: bool,
    greeted: bool,
    enhanced: bool,
    from: Option<String>,
    rcpts: Vec<String>,
    started: Instant,
    last: Instant,
    /// For the log: this session's number, and what went over it (Postfix's connection cache sends many
    /// transactions, with RSET between them, over one session).
    id: u64,
    held: u64,
    tempfailed: u64,
    rsets: u64,
    /// Why the session ended when serve ended it without a 421 (`command` returned `false`).
    ended: &'static str,
}

impl<'a, S: Conn> Session<'a, S> {
    pub fn new(sh: &'a Shared, s: S) -> Session<'a, S> {
        let now = Instant::now();
        Session {
            cfg: sh.config(),
            sh,
            s,
            inb: Vec::with_capacity(8192),
            pos: 0,
            out: Vec::with_capacity(1024),
            lmtp: false,
            greeted: false,
            enhanced: false,
            from: None,
            rcpts: Vec::new(),
            started: now,
            last: now,
            id: sh.next_session(),
            held: 0,
            tempfailed: 0,
            rsets: 0,
            ended: "quit",
        }
    }

    /// Runs the session to its end; errors are the client's problem (logged by nobody: the MTA logs them).
    pub fn run(mut self) {
        let _ = self.s.set_read_timeout(Some(TICK));
        let _ = self.s.set_write_timeout(Some(self.cfg.limits.idle_timeout));
        let host = self.cfg.hostname.clone();
        self.reply(&format!("220 {host} LMTP/ESMTP quarantine ready"));
        let end = match self.serve() {
            Ok(()) => self.ended.to_string(),
            Err(Stop::Gone) => "closed by the client".to_string(),
            Err(Stop::Say(msg)) => {
                self.reply(&msg);
                msg
            }
        };
        let _ = self.flush();
        // One line per session beside the one per message: which messages shared a connection, and why it ended
        // (an idle or time limit, a shutdown), is what an admin asks when an MTA's connection cache misbehaves.
        eprintln!(
            "quarantine serve: session={} closed ({}), via={}, held={}, tempfailed={}, rsets={}",
            self.id,
            crate::intake::printable(&end),
            match (self.greeted, self.lmtp) {
                (false, _) => "none",
                (true, true) => "lmtp",
                (true, false) => "smtp",
            },
            self.held,
            self.tempfailed,
            self.rsets
        );
    }

    fn serve(&mut self) -> Result<(), Stop> {
        loop {
            let line = match self.next_line()? {
                Some(l) => l,
                None => {
                    self.reply("500 5.5.2 Line too long");
                    continue;
                }
            };
            if !self.command(&line)? {
                return Ok(());
            }
        }
    }

    fn reply(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// `code`, then the enhanced status code when the client said EHLO/LHLO, then the text.
    fn say(&mut self, code: u16, enhanced: &str, text: &str) {
        let text: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        if self.enhanced {
            self.reply(&format!("{code} {enhanced} {text}"));
        } else {
            self.reply(&format!("{code} {text}"));
        }
    }

    fn flush(&mut self) -> Result<(), Stop> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = self.s.write_all(&self.out).and_then(|()| self.s.flush());
        self.out.clear();
        r.map_err(|_| Stop::Gone)
    }

    /// Reads more input. `command` says the session waits for a command (shutdown may end it there).
    fn fill(&mut self, command: bool) -> Result<(), Stop> {
        self.flush()?;
        if self.pos > 0 {
            self.inb.drain(..self.pos);
            self.pos = 0;
        }
        let lim = &self.cfg.limits;
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            if self.started.elapsed() >= lim.session_timeout {
                return Err(Stop::Say("421 4.4.2 Session time limit reached, closing".into()));
            }
            if self.last.elapsed() >= lim.idle_timeout {
                return Err(Stop::Say("421 4.4.2 Idle too long, closing".into()));
            }
            if (command && self.sh.stopping()) || self.sh.past_grace() {
                return Err(Stop::Say("421 4.3.2 Service shutting down, try again later".into()));
            }
            match crate::server::read_into(&mut self.s, &mut chunk, &mut self.inb) {
                crate::server::ReadOutcome::Data => {
                    self.last = Instant::now();
                    return Ok(());
                }
                crate::server::ReadOutcome::Gone => return Err(Stop::Gone),
                crate::server::ReadOutcome::Again => {}
            }
        }
    }

    /// The next command line with its line ending; `None` for one longer than the limit (discarded to its LF).
    fn next_line(&mut self) -> Result<Option<Vec<u8>>, Stop> {
        let max = self.cfg.limits.max_line_length;
        let mut discarding = false;
        loop {
            let rest = &self.inb[self.pos..];
            if let Some(i) = rest.iter().position(|&b| b == b'\n') {
                let line = rest[..=i].to_vec();
                self.pos += i + 1;
                if discarding || line.len() > max {
                    return Ok(None);
                }
                return Ok(Some(line));
            }
            if rest.len() > max {
                discarding = true;
                self.pos = self.inb.len();
            }
            self.fill(true)?;
        }
    }

    fn reset(&mut self) {
        self.from = None;
        self.rcpts.clear();
    }

    /// Handles one command line; `false` ends the session.
    fn command(&mut self, line: &[u8]) -> Result<bool, Stop> {
        let body = &line[..line.len() - 1];
        if body.last() != Some(&b'\r') || body[..body.len() - 1].iter().any(|&b| b == b'\r' || b == 0) {
            self.say(500, "5.5.2", "Syntax error: bare CR, bare LF or NUL in a command line (end lines with CRLF)");
            return Ok(true);
        }
        // The parser turns bytes that are not UTF-8 into U+FFFD: held that way, an address would later be released
        // to one the MTA never gave. Refused like any other address that cannot be delivered to as written.
        if std::str::from_utf8(body).is_err() {
            let verb = body.get(..4).map(|v| v.to_ascii_uppercase());
            match verb.as_deref() {
                Some(b"MAIL") => self.say(553, "5.1.7", "Bad sender: the address is not valid UTF-8"),
                Some(b"RCPT") => self.say(553, "5.1.3", "Bad recipient: the address is not valid UTF-8"),
                _ => self.say(500, "5.5.2", "Syntax error: a command line that is not valid UTF-8"),
            }
            return Ok(true);
        }
        let req = match Request::parse(&mut line.iter()) {
            Ok(r) => r,
            Err(e) => {
                let (code, ext, text) = match e {
                    ProtoError::UnknownCommand => (500, "5.5.1", "Unknown command".to_string()),
                    ProtoError::SyntaxError { syntax } => (501, "5.5.4", format!("Syntax: {syntax}")),
                    ProtoError::InvalidSenderAddress => (501, "5.1.7", "Bad sender address syntax".into()),
                    ProtoError::InvalidRecipientAddress => (501, "5.1.3", "Bad recipient address syntax".into()),
                    ProtoError::InvalidParameter { param } => (501, "5.5.4", format!("Invalid parameter {param}")),
                    ProtoError::UnsupportedParameter { param } => {
                        (555, "5.5.4", format!("Unsupported parameter {}", intake::printable(&param)))
                    }
                    _ => (500, "5.5.2", "Syntax error".into()),
                };
                self.say(code, ext, &text);
                return Ok(true);
            }
        };
        let cfg = self.cfg.clone();
        let host = cfg.hostname.as_str();
        match req {
            Request::Lhlo { .. } | Request::Ehlo { .. } => {
                self.lmtp = matches!(req, Request::Lhlo { .. });
                self.greeted = true;
                self.enhanced = true;
                self.reset();
                let size = cfg.limits.max_message_size;
                for l in [
                    format!("250-{host}"),
                    "250-PIPELINING".into(),
                    "250-8BITMIME".into(),
                    "250-SMTPUTF8".into(),
                    format!("250-SIZE {size}"),
                    "250 ENHANCEDSTATUSCODES".into(),
                ] {
                    self.reply(&l);
                }
            }
            Request::Helo { .. } => {
                self.lmtp = false;
                self.greeted = true;
                self.enhanced = false;
                self.reset();
                self.reply(&format!("250 {host}"));
            }
            Request::Mail { from } => {
                if !self.greeted {
                    self.say(503, "5.5.1", "Say LHLO or EHLO first");
                } else if self.from.is_some() {
                    self.say(503, "5.5.1", "Nested MAIL command");
                } else if from.flags & MAIL_BODY_BINARYMIME != 0 {
                    self.say(555, "5.5.4", "BODY=BINARYMIME is not offered");
                } else if from.size as u64 > cfg.limits.max_message_size && from.size != usize::MAX {
                    self.say(
                        552,
                        "5.3.4",
                        &format!("Message size exceeds the limit of {} bytes", cfg.limits.max_message_size),
                    );
                } else {
                    match quarantine_mail::address::envelope_sender(&quarantine_mail::address::requote(&from.address)) {
                        Ok(a) => {
                            self.from = Some(a);
                            self.say(250, "2.1.0", "Sender OK");
                        }
                        Err(e) => self.say(553, "5.1.7", &format!("Bad sender: {e}")),
                    }
                }
            }
            Request::Rcpt { to } => {
                if self.from.is_none() {
                    self.say(503, "5.5.1", "Need MAIL before RCPT");
                } else if self.rcpts.len() >= cfg.limits.max_recipients {
                    self.say(452, "4.5.3", "Too many recipients");
                } else {
                    // The parser hands over a quoted local part without its quotes: they are put back.
                    match quarantine_mail::address::envelope_recipient(&quarantine_mail::address::requote(&to.address))
                    {
                        Ok(a) => {
                            self.rcpts.push(a);
                            self.say(250, "2.1.5", "Recipient OK");
                        }
                        Err(e) => self.say(553, "5.1.3", &format!("Bad recipient: {e}")),
                    }
                }
            }
            Request::Data => {
                if self.from.is_none() {
                    self.say(503, "5.5.1", "Need MAIL before DATA");
                } else if self.rcpts.is_empty() {
                    self.say(503, "5.5.1", "No valid recipients");
                } else {
                    self.reply("354 End data with <CR><LF>.<CR><LF>");
                    self.data()?;
                }
            }
            Request::Rset => {
                self.rsets += 1;
                self.reset();
                self.say(250, "2.0.0", "Reset OK");
            }
            Request::Noop { .. } => self.say(250, "2.0.0", "OK"),
            Request::Quit => {
                self.say(221, "2.0.0", "Bye");
                return Ok(false);
            }
            Request::Vrfy { .. } => self.say(252, "2.5.0", "Cannot VRFY"),
            Request::Help { .. } => self.say(214, "2.0.0", "See docs/integration/postfix-lmtp.md"),
            Request::Bdat { .. } => {
                self.say(554, "5.5.1", "BDAT is not offered; closing");
                self.ended = "BDAT refused";
                return Ok(false);
            }
            Request::StartTls | Request::Auth { .. } => self.say(502, "5.5.1", "Not offered on this local listener"),
            _ => self.say(502, "5.5.1", "Command not implemented"),
        }
        Ok(true)
    }

    /// Receives the message after 354, then answers the dot (once per recipient in LMTP).
    fn data(&mut self) -> Result<(), Stop> {
        let max = self.cfg.limits.max_message_size;
        let mut rx = DataEnd::default();
        let mut body: Vec<u8> = Vec::new();
        let mut over = false;
        loop {
            let rest = &self.inb[self.pos..];
            let (used, done) = rx.ingest(rest, if over { None } else { Some(&mut body) });
            self.pos += used;
            if !over && body.len() as u64 > max {
                over = true;
                body = Vec::new();
            }
            if done {
                break;
            }
            // A broken connection or a time limit mid-DATA: nothing was stored, the MTA defers.
            self.fill(false)?;
        }
        let started = Instant::now(); // the log's ms: from the final dot to the reply
        let rcpts = std::mem::take(&mut self.rcpts);
        let from = self.from.take().unwrap_or_default();
        if over {
            let text = format!("Message size exceeds the limit of {max} bytes");
            for _ in 0..if self.lmtp { rcpts.len() } else { 1 } {
                self.say(552, "5.3.4", &text);
            }
            return Ok(());
        }
        let via = if self.lmtp { "lmtp" } else { "smtp" };
        let cfg = self.cfg.clone();
        let m = Incoming {
            via,
            from: &from,
            rcpts: &rcpts,
            bytes: &body,
            scan: None,
            queue_id: None,
            extra: Vec::new(),
            started,
            session: Some(self.id),
        };
        let outcome = intake::deliver(self.sh, &cfg, m);
        if outcome.is_ok() {
            self.held += 1;
        } else {
            self.tempfailed += 1;
        }
        match outcome {
            Ok(ids) if self.lmtp => {
                for r in &rcpts {
                    self.say(250, "2.0.0", &format!("<{r}> held as {}", ids.join(",")));
                }
            }
            Ok(ids) => self.say(250, "2.0.0", &format!("Held as {}", ids.join(","))),
            Err(e) if self.lmtp => {
                for r in &rcpts {
                    self.say(451, "4.3.0", &format!("<{r}> not held, try again later: {e}"));
                }
            }
            Err(e) => self.say(451, "4.3.0", &format!("Not held, try again later: {e}")),
        }
        Ok(())
    }
}

/// Where DATA ends (RFC 5321 section 4.5.2): at CRLF `.` CRLF and nowhere else, with the leading dot of a line
/// (after CRLF) removed. Starts at a line start: the CRLF of the `DATA` command counts.
#[derive(Debug, Default)]
pub struct DataEnd {
    state: DotState,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum DotState {
    /// After CRLF (or at the start).
    #[default]
    LineStart,
    /// Inside a line.
    Mid,
    /// After a CR inside a line.
    Cr,
    /// After CRLF `.` (the dot not kept).
    Dot,
    /// After CRLF `.` CR (the CR not kept yet).
    DotCr,
}

impl DataEnd {
    /// Takes bytes of `input` up to and including the end of DATA; appends the content (unstuffed) to `out`
    /// when given. Returns how many bytes it used and whether DATA ended.
    pub fn ingest(&mut self, input: &[u8], mut out: Option<&mut Vec<u8>>) -> (usize, bool) {
        use DotState::*;
        let mut i = 0;
        while i < input.len() {
            if self.state == Mid {
                // The common case: copy up to the next CR at once.
                let n = input[i..].iter().position(|&b| b == b'\r').unwrap_or(input.len() - i);
                if let Some(o) = out.as_deref_mut() {
                    o.extend_from_slice(&input[i..i + n]);
                }
                i += n;
                if i == input.len() {
                    break;
                }
            }
            let b = input[i];
            i += 1;
            let (keep, next): (&[u8], DotState) = match (self.state, b) {
                (DotCr, b'\n') => {
                    self.state = LineStart;
                    return (i, true);
                }
                (LineStart, b'.') => (b"", Dot),
                (DotCr, b'\r') => (b"\r\r", Cr),
                (DotCr, _) => {
                    if let Some(o) = out.as_deref_mut() {
                        o.extend_from_slice(b"\r");
                    }
                    (std::slice::from_ref(&input[i - 1]), Mid)
                }
                (Dot, b'\r') => (b"", DotCr),
                (Cr, b'\n') => (b"\n", LineStart),
                (_, b'\r') => (b"\r", Cr),
                (_, _) => (std::slice::from_ref(&input[i - 1]), Mid),
            };
            if let Some(o) = out.as_deref_mut() {
                o.extend_from_slice(keep);
            }
            self.state = next;
        }
        (i, false)
    }
}

#[cfg(test)]
mod tests {
    use super::DataEnd;

    /// The content and the bytes used, fed in pieces of `step` bytes.
    fn run(wire: &[u8], step: usize) -> (Vec<u8>, Option<usize>) {
        let mut rx = DataEnd::default();
        let mut out = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            let end = (at + step).min(wire.len());
            let (used, done) = rx.ingest(&wire[at..end], Some(&mut out));
            at += used;
            if done {
                return (out, Some(at));
            }
        }
        (out, None)
    }

    #[test]
    fn data_ends_at_crlf_dot_crlf_only() {
        for step in [1, 2, 3, 7, 1 << 20] {
            // The serve_lmtp fuzz target's finding: smtp-proto's DataReceiver ended DATA at CRLF . CR CR LF.
            let wire = b"a\r\n.\r\r\nMAIL FROM:<evil@x>\r\n.\r\n";
            assert_eq!(run(wire, step), (b"a\r\n\r\r\nMAIL FROM:<evil@x>\r\n".to_vec(), Some(wire.len())));
            let wire = b"x\r\n.\r\r\r\n.\r\n";
            assert_eq!(run(wire, step), (b"x\r\n\r\r\r\n".to_vec(), Some(wire.len())));
            // The smuggling shapes are content.
            let wire = b"a\n.\r\nb\r.\r\nc\n.\nd\r\n.\r\n";
            assert_eq!(run(wire, step), (b"a\n.\r\nb\r.\r\nc\n.\nd\r\n".to_vec(), Some(wire.len())));
            // Unstuffing only after CRLF; an empty message; stuffed CR and LF after a dot.
            assert_eq!(run(b".\r\n", step), (Vec::new(), Some(3)));
            assert_eq!(
                run(b"..x\r\n.a\r\n.\rb\r\n.\n\r\n.\r\nMORE", step),
                (b".x\r\na\r\n\rb\r\n\n\r\n".to_vec(), Some(21))
            );
            assert_eq!(run(b"no end\r\n.\r", step), (b"no end\r\n".to_vec(), None));
        }
    }
}
