//! The `[serve]` table: listeners, limits and the verdict mapping of `quarantine serve`, parsed into
//! [`quarantine_serve::ServeConfig`] (defaults in `quarantine_serve::defaults`, re-exported as
//! `config::defaults::serve`). Keys are documented in docs/config.md.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use quarantine_serve::{HeaderRule, Listen, ServeConfig};
use quarantine_store::{parse_duration, parse_size};

use super::Checker;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServe {
    lmtp: Option<Spanned<String>>,
    http: Option<Spanned<String>>,
    http_token: Option<Spanned<String>>,
    hostname: Option<Spanned<String>>,
    max_message_size: Option<Spanned<String>>,
    max_recipients: Option<Spanned<i64>>,
    max_sessions: Option<Spanned<i64>>,
    max_line_length: Option<Spanned<i64>>,
    idle_timeout: Option<Spanned<String>>,
    session_timeout: Option<Spanned<String>>,
    shutdown_grace: Option<Spanned<String>>,
    commit_delay_ms: Option<Spanned<i64>>,
    /// Preset rule sets: "clamav", "spamassassin", "amavis", "rspamd".
    rules: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    rule: Vec<RawRule>,
    address_extension: Option<Spanned<bool>>,
    extension_delimiter: Option<Spanned<String>>,
    #[serde(default)]
    extension_verdicts: BTreeMap<String, Spanned<String>>,
    envelope_headers: Option<Spanned<bool>>,
    default_verdict: Option<Spanned<String>>,
    queue_id_from_received: Option<Spanned<bool>>,
    scanner_version_header: Option<Spanned<String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    header: Spanned<String>,
    #[serde(rename = "match")]
    pattern: Spanned<String>,
    verdict: Spanned<String>,
    scanner: Option<Spanned<String>>,
}

fn count(c: &mut Checker, key: &str, v: &Option<Spanned<i64>>, default: usize) -> usize {
    match v {
        None => default,
        Some(n) if *n.get_ref() >= 1 && *n.get_ref() <= 1_000_000_000 => *n.get_ref() as usize,
        Some(n) => {
            c.bad(&["serve", key], n.span(), format!("{} is not a count from 1 up", n.get_ref()));
            default
        }
    }
}

/// Checks and converts the table (problems go to `c`).
pub(super) fn from_raw(raw: Option<&RawServe>, c: &mut Checker) -> ServeConfig {
    let mut cfg = ServeConfig::default();
    let Some(r) = raw else { return cfg };
    let listen = |c: &mut Checker, key: &str, v: &Option<Spanned<String>>| {
        v.as_ref().and_then(|v| Listen::parse(v.get_ref()).map_err(|e| c.bad(&["serve", key], v.span(), e)).ok())
    };
    cfg.lmtp = listen(c, "lmtp", &r.lmtp);
    cfg.http = listen(c, "http", &r.http);
    cfg.http_token = r.http_token.as_ref().map(|t| t.get_ref().clone());
    if let Some(h) = &r.hostname {
        cfg.hostname = h.get_ref().clone();
    }
    let l = &mut cfg.limits;
    if let Some(v) = &r.max_message_size {
        match parse_size(v.get_ref()) {
            Ok(n) if n > 0 => l.max_message_size = n,
            Ok(_) => c.bad(&["serve", "max_message_size"], v.span(), "must be more than 0".into()),
            Err(e) => c.bad(&["serve", "max_message_size"], v.span(), e.to_string()),
        }
    }
    l.max_recipients = count(c, "max_recipients", &r.max_recipients, l.max_recipients);
    l.max_sessions = count(c, "max_sessions", &r.max_sessions, l.max_sessions);
    l.max_line_length = count(c, "max_line_length", &r.max_line_length, l.max_line_length);
    if let Some(v) = &r.max_line_length {
        if *v.get_ref() < 512 {
            c.bad(&["serve", "max_line_length"], v.span(), "must be at least 512 (RFC 5321)".into());
        }
    }
    for (key, v, slot) in [
        ("idle_timeout", &r.idle_timeout, &mut l.idle_timeout),
        ("session_timeout", &r.session_timeout, &mut l.session_timeout),
        ("shutdown_grace", &r.shutdown_grace, &mut l.shutdown_grace),
    ] {
        if let Some(v) = v {
            match parse_duration(v.get_ref()) {
                Ok(d) if !d.is_zero() => *slot = d,
                Ok(_) => c.bad(&["serve", key], v.span(), "must be more than 0".into()),
                Err(e) => c.bad(&["serve", key], v.span(), e.to_string()),
            }
        }
    }
    if let Some(v) = &r.commit_delay_ms {
        match *v.get_ref() {
            n @ 0..=100 => cfg.commit_delay = std::time::Duration::from_millis(n as u64),
            n => c.bad(&["serve", "commit_delay_ms"], v.span(), format!("{n} is not 0..=100 milliseconds")),
        }
    }
    let m = &mut cfg.mapping;
    if let Some(p) = &r.rules {
        for name in p.get_ref() {
            match quarantine_serve::config::preset(name) {
                Some(rules) => m.rules.extend(rules),
                None => c.bad(
                    &["serve", "rules"],
                    p.span(),
                    format!("unknown rule preset {name:?} (known: {})", quarantine_serve::config::PRESETS.join(", ")),
                ),
            }
        }
    }
    // Written rules come first: an admin's rule overrides a preset for the same header.
    let mut written = Vec::new();
    for rr in &r.rule {
        let header = rr.header.get_ref().trim().to_string();
        if header.is_empty() || !header.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            c.bad(&["serve", "rule", "header"], rr.header.span(), format!("{header:?} is not a header field name"));
            continue;
        }
        if rr.verdict.get_ref().trim().is_empty() {
            c.bad(&["serve", "rule", "verdict"], rr.verdict.span(), "empty verdict".into());
            continue;
        }
        if rr.pattern.get_ref().is_empty() {
            c.bad(&["serve", "rule", "match"], rr.pattern.span(), "empty pattern (use \"*\" for any value)".into());
            continue;
        }
        written.push(HeaderRule {
            header,
            pattern: rr.pattern.get_ref().clone(),
            verdict: rr.verdict.get_ref().trim().to_string(),
            scanner: rr.scanner.as_ref().map(|s| s.get_ref().clone()),
        });
    }
    written.append(&mut m.rules);
    m.rules = written;
    if let Some(v) = &r.address_extension {
        m.address_extension = *v.get_ref();
    }
    if let Some(v) = &r.extension_delimiter {
        if v.get_ref().is_empty() || v.get_ref().contains('@') {
            c.bad(&["serve", "extension_delimiter"], v.span(), "must be a character such as \"+\"".into());
        } else {
            m.extension_delimiter = v.get_ref().clone();
        }
    }
    for (ext, v) in &r.extension_verdicts {
        if v.get_ref().trim().is_empty() {
            c.bad(&["serve", "extension_verdicts", ext], v.span(), "empty verdict".into());
        }
        m.extension_verdicts.insert(ext.to_lowercase(), v.get_ref().trim().to_string());
    }
    if let Some(v) = &r.envelope_headers {
        m.envelope_headers = *v.get_ref();
    }
    if let Some(v) = &r.default_verdict {
        if v.get_ref().trim().is_empty() {
            c.bad(&["serve", "default_verdict"], v.span(), "empty verdict".into());
        } else {
            m.default_verdict = v.get_ref().trim().to_string();
        }
    }
    if let Some(v) = &r.queue_id_from_received {
        m.queue_id_from_received = *v.get_ref();
    }
    if let Some(v) = &r.scanner_version_header {
        let h = v.get_ref().trim();
        if h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            c.bad(&["serve", "scanner_version_header"], v.span(), format!("{h:?} is not a header name"));
        } else {
            m.scanner_version_header = Some(h.to_string());
        }
    }
    if let (Some(h), Some(v)) = (&cfg.http, &r.http) {
        if !h.is_local() && cfg.http_token.as_deref().is_none_or(str::is_empty) {
            c.bad(&["serve", "http"], v.span(), format!("{h} is not loopback or a unix socket: set serve.http_token"));
        }
    }
    cfg
}
