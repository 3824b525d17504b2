//! One SMTP session to the relay, reused across messages, with a reply per recipient.
//!
//! # Why not lettre
//! The obvious client, lettre 0.11.23 (the newest served here), has three problems for release: its `send_raw`
//! does not dot-stuff after a bare LF or CR (RUSTSEC-2026-0561, fixed in 0.11.24); it never sets `TCP_NODELAY`,
//! and it writes the final `CRLF . CRLF` as a second small write after the body, so Nagle's algorithm holds it
//! until the relay's delayed ACK — 40 ms per message, measured here at 36 messages/s against smtp-sink on
//! loopback (lettre's pull request 1159, merged upstream, sets it; 0.11.23 does not have it); and it has no
//! PIPELINING. Release needs 1,000 messages/s, a reply per RCPT, the text of the final reply, RSET between
//! messages, and a sharp line between "the relay said no" and "the connection died after the final dot". So this
//! module speaks the little SMTP release needs itself (RFC 5321 client side, RFC 2920 PIPELINING, RFC 3207
//! STARTTLS, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8) over `std::net::TcpStream` with `TCP_NODELAY`, and TLS through
//! rustls (webpki roots plus the system CA bundle). The DATA payload is built by [`encode::smtp_data`](quarantine_mail::encode::smtp_data): CRLF
//! everywhere, dot-stuffed, terminator included, written in one piece.
//!
//! # Why not smtp-proto for replies and EHLO
//! `smtp-proto` 0.2.5 (Stalwart's sans-IO SMTP/LMTP parser) was evaluated for the client side and is not used.
//! What it gets right: multi-line replies, a bare LF ends a line, a reply is bounded (4,096 bytes,
//! `ResponseTooLong`), and `EhloResponse::parse` finds PIPELINING, 8BITMIME, SMTPUTF8, STARTTLS and SIZE in any
//! case. Why it cannot replace [`reply`]:
//! - `ResponseReceiver` accepts any three digits (`199`, `650`) and takes the code of the first line only:
//!   `250-a` / `550 b` parses as a 250. Our mapping reads 2xx after the final dot as *delivered*; a malformed
//!   reply must be an error (in doubt), never a success. The continuation lines' codes are not exposed, so this
//!   cannot be checked on top of it.
//! - It moves the enhanced status code out of the text (`esc`) on every line and keeps only the last line's:
//!   `550-5.1.1 …` / `550 5.7.26 …` leaves `5.7.26`; the reply text we store in the journal (and its `2.0.0`)
//!   could not be kept as the relay sent it. It also deletes a bare CR inside a line and keeps other control
//!   characters (we replace both before storing).
//! - `EhloResponse::parse` is sound for our keywords, but it needs the reply's raw bytes, which the receiver
//!   does not return, and on a non-250 EHLO (our HELO fallback) it stops after the code without consuming the
//!   reply: the reply would be delimited twice. Our keyword list is five lines.
//!
//! [`reply`] keeps our parser, with the one bound it lacked (the whole reply, 64 KiB, not just each line).
//! Revisit if the server side (`quarantine serve`) adopts smtp-proto's request parser.
//!
//! # Layout
//! [`session`] opens the connection (TCP, TLS, greeting, EHLO, STARTTLS); [`reply`] reads replies;
//! [`transaction`] runs one MAIL…DATA transaction in named steps; this file keeps the session across messages
//! (RSET between them, reconnect when the relay dropped it) and implements [`Transport`].
//!
//! # Outcomes
//! Per recipient: a 2xx to the final dot is delivered; 4xx deferred; 5xx failed; a write that fails before the
//! terminator is out is deferred (the relay cannot have accepted a message it never saw end); no readable reply
//! after the terminator went out is *in doubt*.

mod reply;
mod session;
#[cfg(test)]
mod tests;
mod transaction;

use std::time::Duration;

use crate::url::RelayUrl;
use quarantine_store::{Down, Outcome, Transport};
use session::{Conn, Dialer};

/// How long the relay may take to answer the final `.` (RFC 5321 section 4.5.3.2.6 suggests 10 minutes).
const FINAL_REPLY_TIMEOUT: Duration = Duration::from_secs(600);

pub struct Smtp {
    dial: Dialer,
    conn: Option<Conn>,
    /// True until the first transaction on the current connection: no RSET needed before it.
    fresh: bool,
}

impl Smtp {
    pub fn new(url: RelayUrl, timeout: Duration) -> Smtp {
        Smtp { dial: Dialer::new(url, timeout), conn: None, fresh: false }
    }

    fn connect(&mut self) -> Result<(), Down> {
        self.conn = Some(self.dial.open()?);
        self.fresh = true;
        Ok(())
    }

    /// Ends the session politely.
    fn quit(&mut self) {
        if let Some(mut c) = self.conn.take() {
            let _ = c.command("QUIT");
        }
    }

    /// Sends one message (`parts`: its bytes in pieces, e.g. the trace header and the original, any line
    /// endings) from `from` (empty: the null sender) to `rcpts`, returning one outcome per recipient, in order.
    /// `Err` only when the relay cannot be reached at all; then nothing of this message was sent.
    fn send_message(&mut self, from: &str, rcpts: &[&str], parts: &[&[u8]]) -> Result<Vec<Outcome>, Down> {
        // A reused connection gets RSET first: in the same write as the next MAIL group when the relay pipelines,
        // else on its own. If RSET fails the relay dropped the session (idle timeout, a limit on messages per
        // session): open a new one and send there. Nothing of the message can have been accepted by then.
        let mut rset = !self.fresh && self.conn.is_some();
        if rset && !self.conn.as_ref().is_some_and(|c| c.has("PIPELINING")) {
            let c = self.conn.as_mut().expect("checked");
            if !matches!(c.command("RSET"), Ok(r) if r.code == 250) {
                self.conn = None;
            }
            rset = false;
        }
        for attempt in 0..2 {
            if self.conn.is_none() {
                self.connect()?;
                rset = false;
            }
            self.fresh = false;
            let conn = self.conn.as_mut().expect("connected above");
            match transaction::transaction(conn, from, rcpts, parts, self.dial.timeout, rset) {
                Some((out, broken)) => {
                    if broken {
                        self.conn = None;
                    }
                    return Ok(out);
                }
                None if attempt == 0 => self.conn = None,
                None => break,
            }
        }
        unreachable!("a fresh connection never needs RSET")
    }
}

impl Transport for Smtp {
    fn send(&mut self, from: &str, rcpts: &[&str], parts: &[&[u8]]) -> Result<Vec<Outcome>, Down> {
        self.send_message(from, rcpts, parts)
    }

    fn finish(&mut self) {
        self.quit();
    }

    fn describe(&self) -> String {
        self.dial.url.to_string()
    }
}
