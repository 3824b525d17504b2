//! One SMTP session to the relay, reused across messages, with a reply per recipient.
//!
//! # Why not lettre
//! The obvious client, lettre 0.11.23 (the newest served here), has three problems for release: its `send_raw`
//! does not dot-stuff after a bare LF or CR (RUSTSEC-2026-0561, fixed in 0.11.24); it never sets `TCP_NODELAY`,
//! and it writes the final `CRLF . CRLF` as a second small write after the body, so Nagle's algorithm holds it
//! until the relay's delayed ACK — 40 ms per message, measured here at 36 messages/s against smtp-sink on
//! loopback (lettre's pull request 1159, merged upstream, sets it; 0.11.23 does not have it); and it has no
//! PIPELINING. Release needs 1,000 messages/s, a reply per RCPT, the text of the final reply, session reuse across
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
//! (MAIL directly after a completed transaction, RFC 5321 section 4.1.4, RSET after one that did not or for a
//! relay that answers 503 without it; reconnect when the relay dropped it) and implements [`Transport`].
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
use quarantine_mail::encode::Encoded;
use quarantine_store::{Down, Outcome, Transport};
use session::{Conn, Dialer};
use transaction::{Again, Before, Body};

/// How long the relay may take to answer the final `.` (RFC 5321 section 4.5.3.2.6 suggests 10 minutes).
const FINAL_REPLY_TIMEOUT: Duration = Duration::from_secs(600);

pub struct Smtp {
    dial: Dialer,
    conn: Option<Conn>,
    /// The current session is between transactions: just opened, or its last transaction ended with the
    /// relay's reply to our final dot. Then the next MAIL goes without RSET (RFC 5321 section 4.1.4: MAIL may
    /// follow a completed transaction); after anything else, RSET first.
    clean: bool,
    /// At least one transaction has run on the current session.
    used: bool,
    /// This relay answered such a MAIL with 503: RSET before every message on this session.
    rset_always: bool,
}

impl Smtp {
    pub fn new(url: RelayUrl, timeout: Duration) -> Smtp {
        Smtp { dial: Dialer::new(url, timeout), conn: None, clean: false, used: false, rset_always: false }
    }

    fn connect(&mut self) -> Result<(), Down> {
        self.conn = Some(self.dial.open()?);
        (self.clean, self.used, self.rset_always) = (true, false, false);
        Ok(())
    }

    /// Ends the session politely.
    fn quit(&mut self) {
        if let Some(mut c) = self.conn.take() {
            let _ = c.command("QUIT");
        }
    }

    /// Sends one message (`body`: its bytes in pieces, e.g. the trace header and the original, any line
    /// endings, and maybe already encoded) from `from` (empty: the null sender) to `rcpts`, returning one
    /// outcome per recipient, in order. `Err` only when the relay cannot be reached at all; then nothing of this
    /// message was sent.
    fn send_message(&mut self, from: &str, rcpts: &[&str], body: &Body) -> Result<Vec<Outcome>, Down> {
        // At most: a 503 without RSET (retry behind one), a failed RSET (the relay dropped the session: idle
        // timeout, a limit on messages per session; reconnect), then a new session, which needs neither.
        for _ in 0..3 {
            if self.conn.is_none() {
                self.connect()?;
            }
            let conn = self.conn.as_mut().expect("connected above");
            let mut before = if !self.clean || self.rset_always {
                Before::Rset
            } else if self.used {
                Before::AfterCompleted
            } else {
                Before::Nothing
            };
            if before == Before::Rset && !conn.has("PIPELINING") {
                // Without pipelining RSET goes alone; nothing of the message can have been accepted if it fails.
                if !matches!(conn.command("RSET"), Ok(r) if r.code == 250) {
                    self.conn = None;
                    continue;
                }
                before = Before::Nothing;
            }
            match transaction::transaction(conn, from, rcpts, body, before) {
                Ok(ended) => {
                    if ended.broken {
                        self.conn = None;
                    }
                    if let Some(clean) = ended.clean {
                        (self.clean, self.used) = (clean, true);
                    }
                    return Ok(ended.outcomes);
                }
                Err(Again::Reconnect) => self.conn = None,
                Err(Again::WithRset) => (self.clean, self.rset_always) = (false, true),
            }
        }
        unreachable!("a new session needs no RSET")
    }
}

impl Transport for Smtp {
    fn send(&mut self, from: &str, rcpts: &[&str], parts: &[&[u8]]) -> Result<Vec<Outcome>, Down> {
        self.send_message(from, rcpts, &Body { parts, encoded: None })
    }

    fn wants_smtp_data(&self) -> bool {
        true
    }

    fn send_encoded(
        &mut self,
        from: &str,
        rcpts: &[&str],
        parts: &[&[u8]],
        data: &Encoded,
    ) -> Result<Vec<Outcome>, Down> {
        self.send_message(from, rcpts, &Body { parts, encoded: Some(data) })
    }

    fn finish(&mut self) {
        self.quit();
    }

    fn describe(&self) -> String {
        self.dial.url.to_string()
    }
}
