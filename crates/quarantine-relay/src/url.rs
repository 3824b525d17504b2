//! Where released mail goes: `--relay smtp://HOST[:PORT]` / `smtps://…`, or `--sendmail CMD`.

use std::fmt;

use serde::Serialize;

use crate::Error;

/// Where released mail goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Relay {
    Smtp(RelayUrl),
    /// A sendmail-compatible command, split on whitespace; run as `CMD -i -f SENDER -- RCPT...`.
    Sendmail(Vec<String>),
}

impl Relay {
    /// `CMD [ARGS]` for `--sendmail`; no shell is involved, so the command is split on whitespace.
    pub fn sendmail(cmd: &str) -> Result<Relay, Error> {
        let argv: Vec<String> = cmd.split_whitespace().map(str::to_string).collect();
        if argv.is_empty() {
            return Err(Error("--sendmail: empty command".into()));
        }
        Ok(Relay::Sendmail(argv))
    }
}

impl fmt::Display for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Relay::Smtp(u) => u.fmt(f),
            Relay::Sendmail(argv) => write!(f, "sendmail command `{}`", argv.join(" ")),
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
    pub fn parse(url: &str, starttls: bool) -> Result<RelayUrl, Error> {
        let bad = |why: &str| Error(format!("--relay {url:?}: {why} (use smtp://HOST[:PORT] or smtps://HOST[:PORT])"));
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
            Relay::sendmail("/usr/sbin/sendmail  -oi").unwrap(),
            Relay::Sendmail(vec!["/usr/sbin/sendmail".into(), "-oi".into()])
        );
        assert!(Relay::sendmail("  ").is_err());
    }
}
