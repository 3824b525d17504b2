//! Best-effort header extraction for the index. Never blocks a hold: the raw bytes are already staged when this
//! runs, and whatever does not parse is simply left out, with a note saying why.

use mail_parser::{Address, MessageParser, MimeHeaders};

/// Messages up to this size are parsed whole (attachment names included); larger ones only by their header
/// block, so a 20 MB hold stays well under its memory budget.
pub const FULL_PARSE_LIMIT: usize = 8 * 1024 * 1024;

/// Index fields longer than this are cut: a hostile 1 MB Subject must not bloat every search result.
const FIELD_LIMIT: usize = 4096;

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HeaderFields {
    pub from: Option<String>,
    pub to: Option<String>,
    pub cc: Option<String>,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    pub date: Option<String>,
    pub attachments: Vec<String>,
    /// Why some fields are missing, when parsing was partial.
    pub note: Option<String>,
}

/// Extracts the index fields from `prefix`, the first bytes of a message of `total` bytes.
pub fn extract(prefix: &[u8], total: u64) -> HeaderFields {
    let complete = prefix.len() as u64 == total;
    match std::panic::catch_unwind(|| extract_inner(prefix, complete)) {
        Ok(f) => f,
        // The parser is third-party code fed hostile input; a panic there must cost the index fields, not the mail.
        Err(_) => HeaderFields { note: Some("header parser failed on this message".into()), ..Default::default() },
    }
}

fn extract_inner(prefix: &[u8], complete: bool) -> HeaderFields {
    if prefix.is_empty() {
        return HeaderFields { note: Some("empty message".into()), ..Default::default() };
    }
    let parser = MessageParser::default();
    let parsed = if complete { parser.parse(prefix) } else { parser.parse_headers(prefix) };
    let Some(msg) = parsed else {
        return HeaderFields { note: Some("no parsable header block".into()), ..Default::default() };
    };
    let mut f = HeaderFields {
        from: msg.from().and_then(addresses),
        to: msg.to().and_then(addresses),
        cc: msg.cc().and_then(addresses),
        subject: msg.subject().map(clip),
        message_id: msg.message_id().map(clip),
        date: msg.date().map(|d| d.to_rfc3339()),
        attachments: Vec::new(),
        note: None,
    };
    if complete {
        f.attachments = msg.attachments().filter_map(|p| p.attachment_name()).map(clip).collect();
    } else {
        f.note = Some(format!("larger than {} MiB: attachments not indexed", FULL_PARSE_LIMIT >> 20));
    }
    if f.from.is_none() && f.subject.is_none() && f.message_id.is_none() && f.to.is_none() {
        f.note.get_or_insert_with(|| "no recognised header fields".into());
    }
    f
}

fn addresses(a: &Address) -> Option<String> {
    let parts: Vec<String> = a
        .iter()
        .map(|addr| match (addr.name(), addr.address()) {
            (Some(n), Some(e)) => format!("{n} <{e}>"),
            (None, Some(e)) => e.to_string(),
            (Some(n), None) => n.to_string(),
            (None, None) => String::new(),
        })
        .filter(|s| !s.is_empty())
        .collect();
    if parts.is_empty() {
        None
    } else {
        Some(clip(&parts.join(", ")))
    }
}

fn clip(s: &str) -> String {
    if s.len() <= FIELD_LIMIT {
        return s.to_string();
    }
    let mut end = FIELD_LIMIT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_message() {
        let m = b"From: Ann <ann@example.org>\r\nTo: bob@example.net, carl@example.net\r\nSubject: =?UTF-8?Q?caf=C3=A9?=\r\nMessage-ID: <x1@example.org>\r\n\r\nhello\r\n";
        let f = extract(m, m.len() as u64);
        assert_eq!(f.from.as_deref(), Some("Ann <ann@example.org>"));
        assert_eq!(f.to.as_deref(), Some("bob@example.net, carl@example.net"));
        assert_eq!(f.subject.as_deref(), Some("café"));
        assert_eq!(f.message_id.as_deref(), Some("x1@example.org"));
        assert_eq!(f.note, None);
    }

    #[test]
    fn garbage_and_empty_never_panic() {
        for m in [&b""[..], b"\0\0\0\xff\xfe", b"no header block at all", b"Subject: \xff\xfe raw 8bit\n\nbody"] {
            let f = extract(m, m.len() as u64);
            assert!(f.attachments.is_empty());
        }
        assert_eq!(extract(b"", 0).note.as_deref(), Some("empty message"));
    }

    #[test]
    fn attachment_names() {
        let m = b"From: a@b\nSubject: s\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=XX\n\n--XX\nContent-Type: text/plain\n\nhi\n--XX\nContent-Type: application/octet-stream; name=\"invoice.exe\"\nContent-Disposition: attachment; filename=\"invoice.exe\"\n\nMZ\n--XX--\n";
        let f = extract(m, m.len() as u64);
        assert_eq!(f.attachments, vec!["invoice.exe".to_string()]);
    }

    #[test]
    fn headers_only_when_truncated() {
        let m = b"Subject: big one\n\nbody...";
        let f = extract(m, 100_000_000);
        assert_eq!(f.subject.as_deref(), Some("big one"));
        assert!(f.note.unwrap().contains("attachments not indexed"));
    }
}
