//! Verdict and envelope mapping (DESIGN section 10): header rules, then the recipient's address extension, then
//! the default verdict; amavis's `X-Envelope-From`/`X-Envelope-To` for a quarantine copy; the MTA's queue id from
//! the topmost `Received:` header. Header rules trust headers only because the filter that adds them runs after
//! the border strips them (docs/integration/postfix-lmtp.md shows the `header_checks`).

use crate::config::Mapping;

/// At most this much of a message is searched for its header block.
const HEAD_LIMIT: usize = 256 * 1024;

/// The header fields of a message (unfolded, in order), or `None` for bytes with no header block at all.
pub fn header_fields(msg: &[u8]) -> Vec<(String, String)> {
    let head = &msg[..msg.len().min(HEAD_LIMIT)];
    let mut out: Vec<(String, String)> = Vec::new();
    for raw in head.split(|&b| b == b'\n') {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() {
            break; // the blank line ends the header block
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some((_, v)) = out.last_mut() {
                v.push(' ');
                v.push_str(String::from_utf8_lossy(line).trim());
                continue;
            }
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else { break };
        let name = String::from_utf8_lossy(&line[..colon]).trim().to_string();
        let value = String::from_utf8_lossy(&line[colon + 1..]).trim().to_string();
        out.push((name, value));
    }
    out
}

fn first<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Case-insensitive glob: `*` any run, `?` one character.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// What one message becomes: its envelope as stored and one group of recipients per verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub from: String,
    pub groups: Vec<Group>,
    pub queue_id: Option<String>,
    /// The value of the configured scanner-version header, one printable line.
    pub scanner_version: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub verdict: String,
    pub scanner: Option<String>,
    pub reason: Option<String>,
    pub recipients: Vec<String>,
}

/// Applies `m` to a message with envelope `from` / `rcpts`. `extra` are fields the intake knows from its own
/// trusted source (rspamd's metadata as `X-Rspamd-Action` etc. for HTTP): looked up before the message's own.
pub fn decide(m: &Mapping, from: &str, rcpts: &[String], msg: &[u8], extra: &[(String, String)]) -> Decision {
    let mut fields = extra.to_vec();
    fields.extend(header_fields(msg));
    let (mut from, mut rcpts) = (from.to_string(), rcpts.to_vec());
    if m.envelope_headers {
        if let Some(f) = first(&fields, "X-Envelope-From") {
            from = strip_angle(f).to_string();
        }
        if let Some(t) = first(&fields, "X-Envelope-To") {
            let list: Vec<String> =
                t.split(',').map(|a| strip_angle(a.trim()).to_string()).filter(|a| !a.is_empty()).collect();
            if !list.is_empty() {
                rcpts = list;
            }
        }
    }
    let queue_id = if m.queue_id_from_received { first(&fields, "Received").and_then(received_id) } else { None };
    let rule = m.rules.iter().find_map(|r| {
        let v = first(&fields, &r.header)?;
        glob(&r.pattern, v).then(|| (r, format!("{}: {v}", r.header)))
    });
    let mut groups: Vec<Group> = Vec::new();
    for rcpt in rcpts {
        let (verdict, scanner, reason) = match &rule {
            Some((r, why)) => (r.verdict.clone(), r.scanner.clone(), Some(why.clone())),
            None => match extension_verdict(m, &rcpt) {
                Some(v) => (v, None, Some(format!("address extension of {rcpt}"))),
                None => (m.default_verdict.clone(), None, None),
            },
        };
        match groups.iter_mut().find(|g| g.verdict == verdict) {
            Some(g) => g.recipients.push(rcpt),
            None => groups.push(Group { verdict, scanner, reason, recipients: vec![rcpt] }),
        }
    }
    let scanner_version = m.scanner_version_header.as_deref().and_then(|h| first(&fields, h)).map(|v| {
        v.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().trim().chars().take(200).collect()
    });
    let scanner_version = scanner_version.filter(|v: &String| !v.is_empty());
    Decision { from, groups, queue_id, scanner_version }
}

fn strip_angle(a: &str) -> &str {
    let a = a.trim();
    a.strip_prefix('<').and_then(|x| x.strip_suffix('>')).unwrap_or(a)
}

fn extension_verdict(m: &Mapping, rcpt: &str) -> Option<String> {
    if !m.address_extension || m.extension_delimiter.is_empty() {
        return None;
    }
    let local = rcpt.rsplit_once('@').map_or(rcpt, |(l, _)| l);
    let (_, ext) = local.split_once(m.extension_delimiter.as_str())?;
    if ext.is_empty() {
        return None;
    }
    if m.extension_verdicts.is_empty() {
        Some(ext.to_uppercase())
    } else {
        m.extension_verdicts.get(&ext.to_lowercase()).cloned()
    }
}

/// The queue id in a `Received:` value: the word after ` id ` (Postfix, Sendmail and Exim all write one).
pub fn received_id(v: &str) -> Option<String> {
    let words: Vec<&str> = v.split(|c: char| c.is_whitespace() || c == ';').filter(|w| !w.is_empty()).collect();
    let i = words.iter().position(|w| w.eq_ignore_ascii_case("id"))?;
    let id = words.get(i + 1)?;
    (id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{preset, Mapping};

    #[test]
    fn globs() {
        assert!(glob("Infected*", "infected (Eicar-Signature)"));
        assert!(glob("YES", "yes"));
        assert!(!glob("YES", "yes please"));
        assert!(glob("a?c*", "abcdef"));
        assert!(glob("*", ""));
        assert!(!glob("Yes,*", "No, score=1"));
    }

    #[test]
    fn the_configured_header_gives_the_scanner_version() {
        let msg = b"X-Virus-Scanned: ClamAV 1.4.1/27475/Mon Dec  1 09:31:28 2026\r\n\tat mx.example\r\nSubject: s\r\n\r\nX-Virus-Scanned: forged in the body\r\n";
        let m = Mapping::default();
        assert_eq!(decide(&m, "s@x", &["a@b".into()], msg, &[]).scanner_version, None, "off unless configured");
        let m = Mapping { scanner_version_header: Some("x-virus-scanned".into()), ..Default::default() };
        let v = decide(&m, "s@x", &["a@b".into()], msg, &[]).scanner_version.unwrap();
        assert!(v.starts_with("ClamAV 1.4.1/27475/") && !v.contains('\n') && !v.contains("forged"), "{v:?}");
        let none = decide(&m, "s@x", &["a@b".into()], b"Subject: s\r\n\r\nbody", &[]);
        assert_eq!(none.scanner_version, None);
    }

    #[test]
    fn rules_extension_default_and_amavis_envelope() {
        let rules = ["clamav", "spamassassin", "amavis"].iter().flat_map(|p| preset(p).unwrap()).collect();
        let mut m = Mapping { rules, ..Default::default() };
        let msg = b"Received: from x\r\n\tby mx (Postfix) with ESMTP id 4Q8Z2x1234\r\n\tfor <a@b>; Mon\r\nX-Virus-Status: Infected (Eicar-Test-Signature)\r\n\r\nbody\r\nX-Spam-Flag: YES\r\n";
        let d = decide(&m, "s@x", &["a@b".into(), "c@d".into()], msg, &[]);
        assert_eq!(d.queue_id.as_deref(), Some("4Q8Z2x1234"));
        assert_eq!(d.groups.len(), 1);
        assert_eq!(d.groups[0].verdict, "VIRUS");
        assert_eq!(d.groups[0].reason.as_deref(), Some("X-Virus-Status: Infected (Eicar-Test-Signature)"));
        // Headers in the body are not headers.
        let d = decide(&m, "s@x", &["q+spam@b".into(), "c@d".into()], b"Subject: x\r\n\r\nX-Spam-Flag: YES\r\n", &[]);
        assert_eq!(d.groups.iter().map(|g| g.verdict.as_str()).collect::<Vec<_>>(), ["SPAM", "QUARANTINE"]);
        m.envelope_headers = true;
        let amavis = b"X-Envelope-From: <orig@sender.example>\r\nX-Envelope-To: <r1@x.example>,\r\n <r2@x.example>\r\nX-Amavis-Alert: INFECTED, message contains virus: Eicar-Signature\r\n\r\nx";
        let d = decide(&m, "", &["virus-quarantine@q".into()], amavis, &[]);
        assert_eq!(d.from, "orig@sender.example");
        assert_eq!(d.groups[0].recipients, ["r1@x.example", "r2@x.example"]);
        assert_eq!(d.groups[0].verdict, "VIRUS");
    }
}
