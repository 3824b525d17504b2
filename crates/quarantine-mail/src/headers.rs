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
    let decoded = decode_8bit_header_lines(prefix);
    let prefix: &[u8] = decoded.as_deref().unwrap_or(prefix);
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
        let mut names = msg.attachments().filter_map(|p| p.attachment_name());
        f.attachments = names.by_ref().take(MAX_ATTACHMENT_NAMES).map(clip).collect();
        let more = names.count();
        if more > 0 {
            f.note = Some(format!("{more} more attachment names not indexed (the first {MAX_ATTACHMENT_NAMES} are)"));
        }
    } else {
        f.note = Some(format!("larger than {} MiB: attachments not indexed", FULL_PARSE_LIMIT >> 20));
    }
    if f.from.is_none() && f.subject.is_none() && f.message_id.is_none() && f.to.is_none() {
        f.note.get_or_insert_with(|| "no recognised header fields".into());
    }
    f
}

/// Attachment names indexed per message. The index keeps a message's names beside its row (schema 6), rewritten
/// per name written, so n names cost n²: a hostile message of 20,000 tiny parts would stall the ingest batch it
/// is in for a minute. Real mail has a handful; the message itself is always held whole.
pub const MAX_ATTACHMENT_NAMES: usize = 1000;

/// Windows-1252's characters for 0x80..=0x9F (the rest of the high half is Latin-1, i.e. the same code point);
/// the five undefined bytes map to the C1 control of the same value, as WHATWG's decoder does.
const CP1252_HIGH: [char; 32] = [
    '\u{20AC}', '\u{81}', '\u{201A}', '\u{0192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}', '\u{02C6}',
    '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\u{8D}', '\u{017D}', '\u{8F}', '\u{90}', '\u{2018}', '\u{2019}',
    '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}', '\u{02DC}', '\u{2122}', '\u{0161}', '\u{203A}',
    '\u{0153}', '\u{9D}', '\u{017E}', '\u{0178}',
];

/// Raw 8-bit header lines (no RFC 2047 encoding) that are not UTF-8 are Latin-1 / Windows-1252 in practice, and
/// mail clients show them so. The parser would index them as U+FFFD, so such lines of the header block are
/// transcoded to UTF-8 first (for the index only: the held bytes never change). `None` when nothing needed it.
fn decode_8bit_header_lines(msg: &[u8]) -> Option<Vec<u8>> {
    let end = memchr::memmem::find(msg, b"\n\r\n")
        .map(|i| i + 1)
        .into_iter()
        .chain(memchr::memmem::find(msg, b"\n\n").map(|i| i + 1))
        .min()
        .unwrap_or(msg.len());
    let header = &msg[..end];
    if std::str::from_utf8(header).is_ok() {
        return None;
    }
    let mut out = Vec::with_capacity(msg.len() + 64);
    for line in header.split_inclusive(|&b| b == b'\n') {
        if std::str::from_utf8(line).is_ok() {
            out.extend_from_slice(line);
        } else {
            let text: String = line
                .iter()
                .map(|&b| if (0x80..0xA0).contains(&b) { CP1252_HIGH[b as usize - 0x80] } else { b as char })
                .collect();
            out.extend_from_slice(text.as_bytes());
        }
    }
    out.extend_from_slice(&msg[end..]);
    Some(out)
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
    fn raw_latin1_and_cp1252_headers_are_decoded() {
        let f =
            extract(b"Subject: Gr\xfc\xdfe \x80 \x93ok\x94\r\nFrom: J\xf6rg <j@x.example>\r\n\r\nbody \xff\r\n", 60);
        assert_eq!(f.subject.as_deref(), Some("Grüße € “ok”"));
        assert_eq!(f.from.as_deref(), Some("Jörg <j@x.example>"));
        // UTF-8 headers are untouched, also beside a Latin-1 line.
        let f = extract(b"Subject: Gr\xc3\xbc\xc3\x9fe\r\nFrom: J\xf6rg <j@x.example>\r\n\r\nx", 100);
        assert_eq!(f.subject.as_deref(), Some("Grüße"));
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
    fn attachment_names_are_capped_with_a_note() {
        let mut m = String::from("Subject: parts\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=XX\n\n");
        for i in 0..MAX_ATTACHMENT_NAMES + 7 {
            m.push_str(&format!("--XX\nContent-Disposition: attachment; filename=\"f{i}.txt\"\n\nx\n"));
        }
        m.push_str("--XX--\n");
        let f = extract(m.as_bytes(), m.len() as u64);
        assert_eq!(f.attachments.len(), MAX_ATTACHMENT_NAMES);
        assert_eq!(f.attachments[0], "f0.txt");
        assert_eq!(f.note.as_deref(), Some("7 more attachment names not indexed (the first 1000 are)"));
    }

    #[test]
    fn headers_only_when_truncated() {
        let m = b"Subject: big one\n\nbody...";
        let f = extract(m, 100_000_000);
        assert_eq!(f.subject.as_deref(), Some("big one"));
        assert!(f.note.unwrap().contains("attachments not indexed"));
    }
}
