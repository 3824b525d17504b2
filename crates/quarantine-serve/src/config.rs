//! The typed configuration of `serve` (the CLI parses the `[serve]` table of the config file into it and checks
//! it; `config check` reports the problems). Every default is in [`defaults`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The defaults, re-exported by the CLI as `config::defaults::serve`.
pub mod defaults {
    use std::time::Duration;
    /// 50 MiB: a message is held in memory while it arrives (the spool file is written after the final dot, when
    /// the verdict is known), so memory is bounded by `max_sessions × max_message_size`.
    pub const MAX_MESSAGE_SIZE: u64 = 50 << 20;
    pub const MAX_RECIPIENTS: usize = 1000;
    pub const MAX_SESSIONS: usize = 64;
    /// RFC 5321 section 4.5.3.1.4 says 512 octets for a command line; SMTPUTF8 and parameters make room welcome.
    pub const MAX_LINE_LENGTH: usize = 4096;
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
    pub const SESSION_TIMEOUT: Duration = Duration::from_secs(1800);
    /// How long SIGTERM lets in-flight messages finish before their sessions are tempfailed.
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
    /// The longest a group-commit leader waits for sessions that are writing their spool file (never when it is
    /// the only one).
    pub const COMMIT_DELAY: Duration = Duration::from_millis(2);
    pub const DEFAULT_VERDICT: &str = "QUARANTINE";
    pub const EXTENSION_DELIMITER: &str = "+";
}

/// Where a listener binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl Listen {
    /// `unix:/path` or `HOST:PORT` (an IP address; `localhost` means 127.0.0.1).
    pub fn parse(s: &str) -> Result<Listen, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            let p = PathBuf::from(p);
            if !p.is_absolute() {
                return Err(format!("{s:?}: a unix socket needs an absolute path (unix:/run/quarantine/lmtp.sock)"));
            }
            return Ok(Listen::Unix(p));
        }
        let t = s.strip_prefix("localhost:").map(|port| format!("127.0.0.1:{port}"));
        t.as_deref()
            .unwrap_or(s)
            .parse::<SocketAddr>()
            .map(Listen::Tcp)
            .map_err(|_| format!("{s:?} is neither unix:/PATH nor IP:PORT (e.g. 127.0.0.1:10026)"))
    }

    /// Loopback or a unix socket: reachable only from this machine.
    pub fn is_local(&self) -> bool {
        match self {
            Listen::Unix(_) => true,
            Listen::Tcp(a) => a.ip().is_loopback(),
        }
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
            Listen::Tcp(a) => write!(f, "{a}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_sessions: usize,
    pub max_line_length: usize,
    pub idle_timeout: Duration,
    pub session_timeout: Duration,
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_size: defaults::MAX_MESSAGE_SIZE,
            max_recipients: defaults::MAX_RECIPIENTS,
            max_sessions: defaults::MAX_SESSIONS,
            max_line_length: defaults::MAX_LINE_LENGTH,
            idle_timeout: defaults::IDLE_TIMEOUT,
            session_timeout: defaults::SESSION_TIMEOUT,
            shutdown_grace: defaults::SHUTDOWN_GRACE,
        }
    }
}

/// `[[serve.rule]]`: when the first `header` field of the message matches `match` (a case-insensitive glob,
/// `*` and `?`), the message gets `verdict` (and `scanner`); the reason recorded is the header as it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderRule {
    pub header: String,
    pub pattern: String,
    pub verdict: String,
    pub scanner: Option<String>,
}

/// How a verdict and an envelope are chosen (DESIGN section 10), first match wins: header rules, then the
/// recipient's address extension, then the default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub rules: Vec<HeaderRule>,
    /// `quarantine+virus@example.org` → verdict `VIRUS` (or what `extension_verdicts` maps `virus` to).
    pub address_extension: bool,
    pub extension_delimiter: String,
    /// Lower-case extension → verdict. When not empty, only these extensions are verdicts.
    pub extension_verdicts: BTreeMap<String, String>,
    /// amavis's quarantine copy: take the envelope from its `X-Envelope-From` / `X-Envelope-To` headers.
    pub envelope_headers: bool,
    pub default_verdict: String,
    /// Take the MTA's queue id from the topmost `Received:` header (`... id 4Q8Z2x1234; ...`), so a redelivery
    /// of the same bytes from the same queue file gets the same id and ingest merges it, as `hold --queue-id`.
    pub queue_id_from_received: bool,
    /// A header the filter adds with its engine / signature-database version (clamav-milter's `X-Virus-Scanned:
    /// ClamAV 1.4.1/27475/...`): its value becomes the message's scanner version. Only a header the filter adds
    /// (strip it at the border, like the verdict headers).
    pub scanner_version_header: Option<String>,
}

impl Default for Mapping {
    fn default() -> Mapping {
        Mapping {
            rules: Vec::new(),
            address_extension: true,
            extension_delimiter: defaults::EXTENSION_DELIMITER.into(),
            extension_verdicts: BTreeMap::new(),
            envelope_headers: false,
            default_verdict: defaults::DEFAULT_VERDICT.into(),
            queue_id_from_received: true,
            scanner_version_header: None,
        }
    }
}

/// The header rules a preset name stands for (`rules = ["clamav", "spamassassin", "amavis", "rspamd"]`).
pub fn preset(name: &str) -> Option<Vec<HeaderRule>> {
    let r = |header: &str, pattern: &str, verdict: &str, scanner: &str| HeaderRule {
        header: header.into(),
        pattern: pattern.into(),
        verdict: verdict.into(),
        scanner: Some(scanner.into()),
    };
    Some(match name {
        "clamav" => vec![r("X-Virus-Status", "Infected*", "VIRUS", "clamav")],
        "spamassassin" => {
            vec![r("X-Spam-Flag", "YES", "SPAM", "spamassassin"), r("X-Spam-Status", "Yes,*", "SPAM", "spamassassin")]
        }
        "amavis" => vec![
            r("X-Amavis-Alert", "INFECTED*", "VIRUS", "amavis"),
            r("X-Amavis-Alert", "BANNED*", "BANNED", "amavis"),
            r("X-Amavis-Alert", "BAD HEADER*", "BAD-HEADER", "amavis"),
        ],
        "rspamd" => vec![
            r("X-Rspamd-Action", "reject", "SPAM", "rspamd"),
            r("X-Rspamd-Action", "add header", "SPAM", "rspamd"),
            r("X-Rspamd-Action", "rewrite subject", "SPAM", "rspamd"),
        ],
        _ => return None,
    })
}

pub const PRESETS: &[&str] = &["clamav", "spamassassin", "amavis", "rspamd"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeConfig {
    pub lmtp: Option<Listen>,
    pub http: Option<Listen>,
    /// Required on an HTTP listener that is not loopback or a unix socket.
    pub http_token: Option<String>,
    pub limits: Limits,
    pub mapping: Mapping,
    pub commit_delay: Duration,
    /// The name in the greeting and in replies.
    pub hostname: String,
    /// Free bytes the spool's filesystem keeps ([`quarantine_store::Spool::set_reserve`], as for `hold`): a message
    /// that would take it below is tempfailed and nothing of it stays (the CLI sets `min_free_space`, else hold's
    /// default). 0: none.
    pub reserve: u64,
}

impl Default for ServeConfig {
    fn default() -> ServeConfig {
        ServeConfig {
            lmtp: None,
            http: None,
            http_token: None,
            limits: Limits::default(),
            mapping: Mapping::default(),
            commit_delay: defaults::COMMIT_DELAY,
            hostname: hostname(),
            reserve: 0,
        }
    }
}

impl ServeConfig {
    /// What makes this config unusable for `serve` (also `config check`'s findings), one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(h) = &self.http {
            if !h.is_local() && self.http_token.as_deref().is_none_or(str::is_empty) {
                out.push(format!("serve.http {h} is not loopback or a unix socket: set serve.http_token"));
            }
        }
        let l = &self.limits;
        for (k, v) in [
            ("max_recipients", l.max_recipients),
            ("max_sessions", l.max_sessions),
            ("max_line_length", l.max_line_length),
        ] {
            if v == 0 {
                out.push(format!("serve.{k} must be at least 1"));
            }
        }
        if l.max_line_length < 512 {
            out.push("serve.max_line_length must be at least 512 (RFC 5321)".into());
        }
        if l.max_message_size == 0 {
            out.push("serve.max_message_size must be at least 1".into());
        }
        for r in &self.mapping.rules {
            if r.header.is_empty() || !r.header.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                out.push(format!("serve.rule: {:?} is not a header field name", r.header));
            }
            if r.verdict.trim().is_empty() {
                out.push(format!("serve.rule for {}: empty verdict", r.header));
            }
        }
        if self.mapping.default_verdict.trim().is_empty() {
            out.push("serve.default_verdict cannot be empty".into());
        }
        if self.mapping.address_extension && self.mapping.extension_delimiter.is_empty() {
            out.push("serve.extension_delimiter cannot be empty".into());
        }
        out
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "localhost".into())
}
