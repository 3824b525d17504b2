//! Recovering a message's envelope from what an existing quarantine or mailbox kept of it.
//!
//! Order of precedence, first that gives an answer wins:
//! - sender: `--from`; amavis `X-Envelope-From`; the mbox `From ` separator line (`MAILER-DAEMON` is the null
//!   sender); the topmost `Return-Path`; else the null sender `<>`, noted;
//! - recipients: `--rcpt`; amavis `X-Envelope-To`; the topmost `Delivered-To`; the topmost `X-Original-To`; else
//!   the addresses of the To and Cc headers, noted (Bcc recipients are lost that way). None at all: the message
//!   is skipped, since a message nobody can be released to is not worth a row.
//!
//! Only the header block is read, from the prefix the staging step kept in memory.

use mail_parser::MessageParser;

use crate::address;

/// Where the envelope came from, for a message whose bytes do not carry it as an MTA would.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hints {
    /// `--from`, when given.
    pub from: Option<String>,
    /// `--rcpt`, when given (non-empty).
    pub rcpt: Vec<String>,
    /// Read the amavisd-new `X-Envelope-From` / `X-Envelope-To` headers.
    pub amavis: bool,
    /// The sender of an mbox `From ` line (`""` for `MAILER-DAEMON` or `<>`).
    pub mbox_sender: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guessed {
    pub from: String,
    pub recipients: Vec<String>,
    /// What a person should know about how the envelope was reconstructed (goes into the parse note).
    pub notes: Vec<String>,
    /// True when the recipients came from the To/Cc headers.
    pub from_headers: bool,
}

/// One header field as found: lower-cased name and unfolded value.
pub struct Field {
    pub name: String,
    pub value: String,
}

/// The fields of the header block at the start of `msg`, in order, unfolded. Stops at the first empty line (or
/// the end of `msg`); lines that are neither fields nor continuations (an mbox `From ` line kept at the top of a
/// file, garbage) are passed over.
pub fn header_fields(msg: &[u8]) -> Vec<Field> {
    let mut out: Vec<Field> = Vec::new();
    let mut continuing = false;
    for raw in msg.split(|&b| b == b'\n') {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() {
            break;
        }
        if matches!(line[0], b' ' | b'\t') {
            if continuing {
                if let Some(last) = out.last_mut() {
                    last.value.push(' ');
                    last.value.push_str(String::from_utf8_lossy(line).trim());
                }
            }
            continue;
        }
        continuing = false;
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = &line[..colon];
        if name.is_empty() || name.iter().any(|b| !(33..=126).contains(b)) {
            continue;
        }
        out.push(Field {
            name: String::from_utf8_lossy(name).to_ascii_lowercase(),
            value: String::from_utf8_lossy(&line[colon + 1..]).trim().to_string(),
        });
        continuing = true;
    }
    out
}

/// The first value of header `name` (lower case).
pub fn first<'a>(fields: &'a [Field], name: &str) -> Option<&'a str> {
    fields.iter().find(|f| f.name == name).map(|f| f.value.as_str())
}

/// The address in a header value such as `<a@b>`, `a@b`, `Name <a@b>` or `<a@b> (comment)`; `Some("")` for `<>`.
pub fn one_address(value: &str) -> Option<String> {
    let v = value.trim();
    if let Some(open) = v.find('<') {
        let rest = &v[open + 1..];
        let close = rest.find('>')?;
        return Some(rest[..close].trim().to_string());
    }
    let token = v.split(|c: char| c.is_whitespace() || c == '(').next()?.trim();
    if token.is_empty() {
        None
    } else {
        Some(token.to_string())
    }
}

/// A comma- or space-separated list of addresses, with or without angle brackets (amavis `X-Envelope-To`).
fn address_list(value: &str) -> Vec<String> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .map(|t| t.trim().trim_start_matches('<').trim_end_matches('>').trim())
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// The sender named by an mbox `From ` line: `From SENDER DATE`. `MAILER-DAEMON` (Postfix's and sendmail's name
/// for the null sender there) and `<>` are the null sender.
pub fn mbox_line_sender(line: &str) -> Option<String> {
    let token = line.strip_prefix("From ")?.split_whitespace().next()?;
    if token.eq_ignore_ascii_case("MAILER-DAEMON") || token == "<>" {
        return Some(String::new());
    }
    Some(token.trim_start_matches('<').trim_end_matches('>').to_string())
}

/// Works out the envelope of one message from the hints and its header block. `Err` is the reason to skip it.
pub fn guess(hints: &Hints, prefix: &[u8]) -> Result<Guessed, String> {
    let fields = header_fields(prefix);
    let mut notes = Vec::new();

    let (from, from_source) = if let Some(f) = &hints.from {
        (Some(f.clone()), "--from")
    } else if let Some(v) = hints.amavis.then(|| first(&fields, "x-envelope-from")).flatten() {
        (one_address(v).or(Some(String::new())), "X-Envelope-From")
    } else if hints.mbox_sender.as_deref().is_some_and(|s| !s.is_empty()) {
        (hints.mbox_sender.clone(), "the mbox From line")
    } else if let Some(v) = first(&fields, "return-path") {
        (one_address(v), "Return-Path")
    } else if let Some(s) = &hints.mbox_sender {
        (Some(s.clone()), "the mbox From line")
    } else {
        (None, "")
    };
    let from = match from.map(|f| address::envelope_sender(&f).map_err(|e| (f, e))) {
        Some(Ok(f)) => f,
        Some(Err((raw, e))) => {
            notes.push(format!("envelope sender {raw:?} from {from_source} is unusable ({e}): held as <>"));
            String::new()
        }
        None => {
            notes.push("envelope sender unknown (no Return-Path): held as <>".into());
            String::new()
        }
    };

    let mut from_headers = false;
    let candidates: Vec<String> = if !hints.rcpt.is_empty() {
        hints.rcpt.clone()
    } else if let Some(list) = hints.amavis.then(|| amavis_recipients(&fields)).filter(|l| !l.is_empty()) {
        list
    } else if let Some(a) = first(&fields, "delivered-to").and_then(one_address) {
        vec![a]
    } else if let Some(a) = first(&fields, "x-original-to").and_then(one_address) {
        vec![a]
    } else {
        from_headers = true;
        to_cc(prefix)
    };
    let mut recipients: Vec<String> = Vec::new();
    let mut bad = Vec::new();
    for c in candidates {
        match address::envelope_recipient(&c) {
            Ok(r) => {
                if !recipients.iter().any(|x| address::fold(x) == address::fold(&r)) {
                    recipients.push(r)
                }
            }
            Err(_) => bad.push(c),
        }
    }
    if recipients.is_empty() {
        let mut why = String::from(if hints.amavis {
            "no envelope recipient (no X-Envelope-To, Delivered-To, X-Original-To, To or Cc header; give --rcpt)"
        } else {
            "no envelope recipient (no Delivered-To, X-Original-To, To or Cc header; give --rcpt)"
        });
        if !bad.is_empty() {
            why = format!("no usable envelope recipient ({} unusable: {:?}; give --rcpt)", bad.len(), bad);
        }
        return Err(why);
    }
    if from_headers {
        notes.push(
            "envelope recipients taken from the To/Cc headers (no envelope header kept): Bcc recipients unknown".into(),
        );
    }
    if !bad.is_empty() {
        notes.push(format!("unusable recipient(s) left out: {bad:?}"));
    }
    Ok(Guessed { from, recipients, notes, from_headers })
}

/// Every address of every `X-Envelope-To` field (amavisd-new writes one, folded, comma-separated).
fn amavis_recipients(fields: &[Field]) -> Vec<String> {
    fields.iter().filter(|f| f.name == "x-envelope-to").flat_map(|f| address_list(&f.value)).collect()
}

/// The addresses of the To and Cc headers, parsed by mail-parser (groups, encoded names and all).
fn to_cc(prefix: &[u8]) -> Vec<String> {
    let parsed = std::panic::catch_unwind(|| {
        let Some(msg) = MessageParser::default().parse_headers(prefix) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for a in [msg.to(), msg.cc()].into_iter().flatten() {
            out.extend(a.iter().filter_map(|x| x.address()).map(str::to_string));
        }
        out
    });
    parsed.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hints() -> Hints {
        Hints::default()
    }

    #[test]
    fn folded_fields_and_stop_at_body() {
        let f = header_fields(
            b"From x Mon Jan  1 00:00:00 2024\nX-Envelope-To: <a@b>,\n <c@d>\r\nSubject: s\n\nDelivered-To: no@x\n",
        );
        let names: Vec<&str> = f.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["x-envelope-to", "subject"]);
        assert_eq!(f[0].value, "<a@b>, <c@d>");
    }

    #[test]
    fn addresses() {
        assert_eq!(one_address("<>").as_deref(), Some(""));
        assert_eq!(one_address(" <a@b.c> ").as_deref(), Some("a@b.c"));
        assert_eq!(one_address("Ann <a@b.c>").as_deref(), Some("a@b.c"));
        assert_eq!(one_address("a@b.c (comment)").as_deref(), Some("a@b.c"));
        assert_eq!(address_list("<a@b>, <c@d>\t e@f"), ["a@b", "c@d", "e@f"]);
        assert_eq!(mbox_line_sender("From MAILER-DAEMON Thu Jan  1 00:00:00 2025").as_deref(), Some(""));
        assert_eq!(mbox_line_sender("From a@b.c Thu Jan  1 00:00:00 2025").as_deref(), Some("a@b.c"));
    }

    #[test]
    fn precedence() {
        let m = b"Return-Path: <rp@x.org>\nDelivered-To: final@y.org\nX-Original-To: orig@y.org\nTo: t@y.org\n\nbody";
        let g = guess(&hints(), m).unwrap();
        assert_eq!((g.from.as_str(), g.recipients.clone()), ("rp@x.org", vec!["final@y.org".to_string()]));
        assert!(g.notes.is_empty() && !g.from_headers);

        let h = Hints { from: Some("<>".into()), rcpt: vec!["r@z.org".into()], ..hints() };
        let g = guess(&h, m).unwrap();
        assert_eq!((g.from.as_str(), g.recipients), ("", vec!["r@z.org".to_string()]));

        let h = Hints { mbox_sender: Some("mb@x.org".into()), ..hints() };
        assert_eq!(guess(&h, m).unwrap().from, "mb@x.org");
        // MAILER-DAEMON in the From line: Return-Path, if any, says more.
        let h = Hints { mbox_sender: Some(String::new()), ..hints() };
        assert_eq!(guess(&h, m).unwrap().from, "rp@x.org");
        assert_eq!(guess(&h, b"To: a@b.c\n\nx").unwrap().from, "");
    }

    #[test]
    fn amavis_headers() {
        let m = b"X-Envelope-From: <>\nX-Envelope-To: <a@x.org>,\n <B@x.org>, <a@X.org>\nReturn-Path: <no@x>\nDelivered-To: no@x\n\nbody";
        let g = guess(&Hints { amavis: true, ..hints() }, m).unwrap();
        assert_eq!(g.from, "");
        assert_eq!(g.recipients, ["a@x.org", "B@x.org"]);
    }

    #[test]
    fn to_cc_fallback_is_noted_and_none_is_an_error() {
        let m = b"From: f@x.org\nTo: Ann <ann@y.org>, bob@y.org\nCc: undisclosed-recipients:;\nCc: carl@y.org\n\nx";
        let g = guess(&hints(), m).unwrap();
        assert!(g.from_headers);
        assert!(g.recipients.contains(&"ann@y.org".to_string()) && g.recipients.contains(&"bob@y.org".to_string()));
        assert!(g.notes.iter().any(|n| n.contains("To/Cc")), "{:?}", g.notes);
        assert!(g.notes.iter().any(|n| n.contains("sender unknown")), "{:?}", g.notes);
        assert!(guess(&hints(), b"Subject: nobody\n\nx").unwrap_err().contains("no envelope recipient"));
        assert!(guess(&hints(), b"").is_err());
    }
}
