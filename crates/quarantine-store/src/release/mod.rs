//! Release (DESIGN section 6): re-deliver held originals over SMTP or through a sendmail-compatible command,
//! exactly once per recipient.
//!
//! Plan, then execute: [`Store::plan_release`](crate::Store::plan_release) reads the index and decides, per
//! recipient, what a release would do (send, retry an in-doubt send, skip, refuse); `--dry-run` prints that and
//! stops. [`Store::execute_release`](crate::Store::execute_release) carries a plan out and reports per recipient.
//!
//! # The journal (exactly once)
//! Each recipient row is the journal. Before a message is sent, a write transaction claims its recipients
//! (`held` → `releasing`, stamped with this run's release tag), and only rows still `held` are claimed, so two
//! concurrent releases never both deliver. After the relay's final reply: 2xx → `released` with the reply text
//! (it carries the relay's queue id); 4xx → back to `held`, attempt counted; 5xx → `failed` with the reply. A
//! crash between sending and recording leaves `releasing`: the next run shows those recipients *in doubt* and
//! sends them again only with `--retry-in-doubt`. The tag names the claiming process (host, boot, pid, start
//! time, actor), so a later run can tell "in doubt" (that process is gone) from "another release is sending
//! these right now" (it is alive): see [`journal`].
//!
//! # Performance
//! Claims and outcomes are committed in batches (at most [`BATCH`] messages, and at least once a second), not
//! per message: with `synchronous=FULL` each commit is an fsync. A crash can leave at most one batch in doubt,
//! and every one of them is listed by the next run. One SMTP connection is reused (RSET between messages) and
//! reopened if it breaks.
//!
//! # Wire format
//! See [`encode`]: every line ending becomes CRLF, dots are stuffed, and the message goes out in one write, so no
//! body can end the DATA early or smuggle a second message. The SMTP client is our own small one (`smtp.rs` says
//! why lettre 0.11.23 is not used); the sendmail path is in `sendmail.rs`.

pub mod encode;
mod exec;
pub mod journal;
mod plan;
mod sendmail;
mod smtp;

use std::fmt;

use serde::Serialize;

use crate::error::{Error, Result};

pub use exec::{ExecOptions, Problem, ProblemKind, Report};
pub use plan::{Action, Plan, PlanCounts, PlanRequest, PlannedMessage, PlannedRecipient, Skip};

/// Messages claimed (and outcomes committed) per write transaction.
pub const BATCH: usize = 100;

/// Where released mail goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    Smtp(RelayUrl),
    /// A sendmail-compatible command, split on whitespace; run as `CMD -i -f SENDER -- RCPT...`.
    Sendmail(Vec<String>),
}

impl Transport {
    /// `CMD [ARGS]` for `--sendmail`; no shell is involved, so the command is split on whitespace.
    pub fn sendmail(cmd: &str) -> Result<Transport> {
        let argv: Vec<String> = cmd.split_whitespace().map(str::to_string).collect();
        if argv.is_empty() {
            return Err(Error::Invalid("--sendmail: empty command".into()));
        }
        Ok(Transport::Sendmail(argv))
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Smtp(u) => u.fmt(f),
            Transport::Sendmail(argv) => write!(f, "sendmail command `{}`", argv.join(" ")),
        }
    }
}

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain SMTP: for a relay on loopback or a trusted network.
    None,
    /// `smtp://` with `--tls`: STARTTLS is required; a relay that does not offer it is an error.
    StartTls,
    /// `smtps://`: TLS from the first byte (port 465).
    Implicit,
}

/// A parsed `--relay`: `smtp://HOST[:PORT]` (port 25) or `smtps://HOST[:PORT]` (port 465). An IPv6 host is
/// written in brackets: `smtp://[::1]:10025`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayUrl {
    pub host: String,
    pub port: u16,
    pub security: Security,
}

impl RelayUrl {
    pub fn parse(url: &str, starttls: bool) -> Result<RelayUrl> {
        let bad = |why: &str| {
            Error::Invalid(format!("--relay {url:?}: {why} (use smtp://HOST[:PORT] or smtps://HOST[:PORT])"))
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let (security, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "smtp" if starttls => (Security::StartTls, 25),
            "smtp" => (Security::None, 25),
            "smtps" if starttls => return Err(bad("--tls is STARTTLS; smtps:// already uses TLS")),
            "smtps" => (Security::Implicit, 465),
            _ => return Err(bad("unknown scheme")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '@', '?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("only a host and a port are allowed"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            match after {
                "" => (h.to_string(), None),
                p => (h.to_string(), Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?)),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| bad("bad port"))?,
            None => default_port,
        };
        Ok(RelayUrl { host, port, security })
    }
}

impl fmt::Display for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.security == Security::Implicit { "smtps" } else { "smtp" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)?;
        }
        if self.security == Security::StartTls {
            f.write_str(" (STARTTLS)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls() {
        let u = RelayUrl::parse("smtp://127.0.0.1:10025", false).unwrap();
        assert_eq!((u.host.as_str(), u.port, u.security), ("127.0.0.1", 10025, Security::None));
        assert_eq!(RelayUrl::parse("smtp://relay.example", false).unwrap().port, 25);
        assert_eq!(RelayUrl::parse("smtps://relay.example", false).unwrap().port, 465);
        let u = RelayUrl::parse("smtp://[::1]:2525/", true).unwrap();
        assert_eq!((u.host.as_str(), u.port, u.security), ("::1", 2525, Security::StartTls));
        assert_eq!(u.to_string(), "smtp://[::1]:2525 (STARTTLS)");
        for bad in ["127.0.0.1:25", "http://x", "smtp://", "smtp://x:0", "smtp://x:y", "smtp://u@x", "smtps://x"] {
            let tls = bad == "smtps://x";
            assert!(RelayUrl::parse(bad, tls).is_err(), "{bad}");
        }
    }

    #[test]
    fn sendmail_commands() {
        assert_eq!(
            Transport::sendmail("/usr/sbin/sendmail  -oi").unwrap(),
            Transport::Sendmail(vec!["/usr/sbin/sendmail".into(), "-oi".into()])
        );
        assert!(Transport::sendmail("  ").is_err());
    }
}
