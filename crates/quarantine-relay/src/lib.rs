//! `quarantine-relay`: how released mail leaves the store.
//!
//! The store's release journal ([`quarantine_store::Transport`]) needs one outcome per recipient and a clear
//! line between "the relay answered" and "the relay cannot be used". This crate provides the two transports an
//! admin configures:
//! - [`Smtp`]: one session to the relay, reused across messages (RSET only where needed), PIPELINING, STARTTLS or
//!   implicit TLS (rustls), 8BITMIME and SMTPUTF8, a reply per RCPT and the text of the final reply (it carries
//!   the relay's queue id). `smtp.rs` says why this is not lettre.
//! - [`Sendmail`]: `CMD -i -f SENDER -- RCPT...` with the message on stdin and a time limit (killed at it:
//!   deferred if it had not read the whole message, else in doubt).
//!
//! [`Relay`] is what `--relay` / `--sendmail` (or the config's `relay`) parse into; [`Relay::open`] gives the
//! transport. Every byte sent goes through `quarantine_mail::encode` (CRLF everywhere, dots stuffed).

mod sendmail;
mod smtp;
mod url;

use std::time::Duration;

pub use sendmail::Sendmail;
pub use smtp::Smtp;
pub use url::{Relay, RelayUrl, Security};

/// A `--relay` or `--sendmail` value that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(pub String);

impl Relay {
    /// The transport for this destination; `timeout` bounds connecting and each SMTP command (the reply to the
    /// final dot gets 10 minutes), and a sendmail command's whole run.
    pub fn open(&self, timeout: Duration) -> Box<dyn quarantine_store::Transport> {
        match self {
            Relay::Smtp(url) => Box::new(Smtp::new(url.clone(), timeout)),
            Relay::Sendmail(argv) => Box::new(Sendmail::new(argv.clone(), timeout)),
        }
    }
}
