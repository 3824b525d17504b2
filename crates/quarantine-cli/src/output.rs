//! Printing helpers shared by the commands: safe text for terminals, and progress bars.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use quarantine_store::MessageRecord;

/// Makes untrusted text (headers of hostile mail) safe to print on a terminal: control characters (C0, DEL, C1)
/// and bidirectional overrides become visible escapes, so no header can clear the screen, set the title or reverse
/// the text around it.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let cp = c as u32;
        let dangerous = c.is_control() || (0x202A..=0x202E).contains(&cp) || (0x2066..=0x2069).contains(&cp);
        if dangerous {
            match c {
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                _ if cp < 0x100 => out.push_str(&format!("\\x{cp:02x}")),
                _ => out.push_str(&format!("\\u{{{cp:04x}}}")),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// indicatif on a terminal, silence in cron. The bar is created on `start`, when the total is known.
pub struct TermProgress {
    /// The current bar: each `start` replaces it (purge runs two: rows, then blobs).
    bar: std::sync::Mutex<Option<ProgressBar>>,
    enabled: bool,
}

impl TermProgress {
    pub fn new() -> TermProgress {
        TermProgress { bar: std::sync::Mutex::new(None), enabled: std::io::stderr().is_terminal() }
    }

    fn bar(&self) -> std::sync::MutexGuard<'_, Option<ProgressBar>> {
        self.bar.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl quarantine_store::Progress for TermProgress {
    fn start(&self, what: &str, total: u64) {
        if !self.enabled {
            return;
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {human_pos}/{human_len} {per_sec} eta {eta}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        if let Some(old) = self.bar().replace(bar) {
            old.finish_and_clear();
        }
    }
    fn advance(&self, n: u64) {
        if let Some(b) = self.bar().as_ref() {
            b.inc(n);
        }
    }
    fn finish(&self) {
        if let Some(b) = self.bar().as_ref() {
            b.finish_and_clear();
        }
    }
}

/// Asks a yes/no question on the terminal. Only called when stdin is a terminal: cron never waits on a prompt.
pub fn confirm(question: &str) -> std::io::Result<bool> {
    use std::io::Write;
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// True when a person is at the keyboard (stdin and stderr are terminals).
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Bytes for people: 1.2 MiB.
pub use quarantine_store::human_bytes;

/// Counts for people: 14212 → "14,212".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Appends `rec` as one line of `search --json` (without the newline): the bytes `serde_json::to_writer` gives for
/// it, in the struct's field order (`json_line_is_serde_json` checks them against each other).
///
/// # Performance
/// serde_json spent ~11,000 instructions on a typical line, most in escaping ~50 strings one byte at a time
/// (keys included); here the keys are constants and a value needing no escape is copied whole, which made the JSON
/// a small part of a large `search --json`.
pub fn json_line(rec: &MessageRecord, out: &mut Vec<u8>) {
    let opt = |out: &mut Vec<u8>, key: &str, v: &Option<String>| {
        out.extend_from_slice(key.as_bytes());
        match v {
            Some(s) => json_str(out, s),
            None => out.extend_from_slice(b"null"),
        }
    };
    out.extend_from_slice(b"{\"id\":");
    json_str(out, &rec.id);
    out.extend_from_slice(b",\"received\":");
    json_str(out, &rec.received);
    out.extend_from_slice(b",\"hash\":");
    json_str(out, &rec.hash);
    out.extend_from_slice(b",\"size\":");
    out.extend_from_slice(rec.size.to_string().as_bytes());
    out.extend_from_slice(b",\"from\":");
    json_str(out, &rec.from);
    out.extend_from_slice(b",\"recipients\":[");
    for (i, r) in rec.recipients.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"address\":");
        json_str(out, &r.address);
        out.extend_from_slice(b",\"state\":\"");
        out.extend_from_slice(r.state.as_str().as_bytes());
        out.extend_from_slice(b"\",\"attempts\":");
        out.extend_from_slice(r.attempts.to_string().as_bytes());
        opt(out, ",\"released_at\":", &r.released_at);
        opt(out, ",\"reply\":", &r.reply);
        opt(out, ",\"last_error\":", &r.last_error);
        out.push(b'}');
    }
    out.push(b']');
    out.extend_from_slice(b",\"verdict\":");
    json_str(out, &rec.verdict);
    opt(out, ",\"scanner\":", &rec.scanner);
    opt(out, ",\"scanner_version\":", &rec.scanner_version);
    opt(out, ",\"reason\":", &rec.reason);
    opt(out, ",\"queue_id\":", &rec.queue_id);
    opt(out, ",\"header_from\":", &rec.header_from);
    opt(out, ",\"header_to\":", &rec.header_to);
    opt(out, ",\"header_cc\":", &rec.header_cc);
    opt(out, ",\"subject\":", &rec.subject);
    opt(out, ",\"message_id\":", &rec.message_id);
    opt(out, ",\"date\":", &rec.date);
    out.extend_from_slice(b",\"attachments\":[");
    for (i, a) in rec.attachments.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(out, a);
    }
    out.push(b']');
    opt(out, ",\"parse_note\":", &rec.parse_note);
    out.extend_from_slice(b",\"state\":");
    json_str(out, &rec.state);
    opt(out, ",\"purged_at\":", &rec.purged_at);
    opt(out, ",\"purged_by\":", &rec.purged_by);
    opt(out, ",\"purge_reason\":", &rec.purge_reason);
    opt(out, ",\"requarantined_from\":", &rec.requarantined_from);
    out.extend_from_slice(b",\"scan\":");
    match &rec.scan {
        // Rare (serve's rspamd intake) and holding arbitrary JSON and floats: serde_json writes it.
        Some(scan) => serde_json::to_writer(&mut *out, scan).expect("writing JSON into a Vec cannot fail"),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}

/// `s` as a JSON string, escaped exactly as serde_json does: `"`, `\\` and C0 controls (`\n` and the like by
/// name, the rest as `\u00xx`); everything else, DEL and non-ASCII included, as it is. Eight bytes at a time
/// while none needs escaping, which is nearly all of them.
fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + 8) {
            if !any_needs_escape(u64::from_le_bytes(chunk.try_into().expect("eight bytes"))) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 0xf) as usize]]);
        } else {
            out.extend_from_slice(esc);
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Whether any of the eight bytes of `w` is below 0x20, `"` or `\\` (the classic "has a byte less than n" and
/// "has a zero byte" bit tricks, exact as yes/no answers).
fn any_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let q = w ^ (ONES * b'"' as u64);
    let quote = q.wrapping_sub(ONES) & !q & HIGH;
    let bs = w ^ (ONES * b'\\' as u64);
    let backslash = bs.wrapping_sub(ONES) & !bs & HIGH;
    below_space | quote | backslash != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written JSON line is byte for byte what serde_json writes for the record, with every kind of
    /// value: nulls and not, no recipients and several, escapes (quotes, backslashes, every C0 control, DEL,
    /// non-ASCII, bidi overrides), and a filter's scan with a float and nested JSON.
    #[test]
    fn json_line_is_serde_json() {
        use quarantine_store::{Recipient, RecipientState, ScanMeta};
        let nasty: String = (0u8..0x20).map(char::from).collect::<String>() + "\"\\/\u{7f}é日\u{202e}x";
        let full = MessageRecord {
            id: "ABCDEFGH12".into(),
            received: "2026-12-01T23:12:00Z".into(),
            received_us: 1,
            hash: "ab".repeat(32),
            size: u64::MAX,
            from: nasty.clone(),
            recipients: vec![
                Recipient {
                    address: "a@x".into(),
                    state: RecipientState::Released,
                    attempts: -3,
                    released_at: Some("2026-12-02T00:00:00+01:00".into()),
                    reply: Some("250 2.0.0 Ok: queued as \"X\"".into()),
                    last_error: Some(nasty.clone()),
                },
                Recipient {
                    address: "B@X".into(),
                    state: RecipientState::Held,
                    attempts: 0,
                    released_at: None,
                    reply: None,
                    last_error: None,
                },
            ],
            verdict: "PMX:VIRUS".into(),
            scanner: Some("pmx".into()),
            scanner_version: Some("1.2/3".into()),
            reason: Some(nasty.clone()),
            queue_id: Some("Q1".into()),
            header_from: Some("\"Bank\" <b@x>".into()),
            header_to: Some("c@x".into()),
            header_cc: Some("d@x".into()),
            subject: Some(nasty.clone()),
            message_id: Some("m@x".into()),
            date: Some("Mon, 1 Dec 2026".into()),
            attachments: vec!["a.pdf".into(), nasty.clone()],
            parse_note: Some("bad header".into()),
            state: "mixed".into(),
            purged_at: Some("t".into()),
            purged_by: Some("root".into()),
            purge_reason: Some("r".into()),
            requarantined_from: Some("OTHER".into()),
            scan: Some(ScanMeta {
                action: Some("reject".into()),
                score: Some(15.25),
                symbols: Some(serde_json::json!([{"name": "X", "score": 1e-7, "options": ["a\u{1}"]}])),
            }),
        };
        let empty = MessageRecord {
            from: String::new(),
            recipients: Vec::new(),
            scanner: None,
            scanner_version: None,
            reason: None,
            queue_id: None,
            header_from: None,
            header_to: None,
            header_cc: None,
            subject: None,
            message_id: None,
            date: None,
            attachments: Vec::new(),
            parse_note: None,
            purged_at: None,
            purged_by: None,
            purge_reason: None,
            requarantined_from: None,
            scan: None,
            ..full.clone()
        };
        let partial_scan = MessageRecord { scan: Some(ScanMeta::default()), ..empty.clone() };
        let mut recs = vec![full, empty.clone(), partial_scan];
        // Each character that needs escaping, and some that do not, at every offset around the eight-byte steps.
        for special in ["\"", "\\", "\n", "\u{1}", "\u{1f}", " ", "!", "#", "[", "]", "\u{7f}", "é", "日"] {
            for at in 0..20 {
                let subject = format!("{}{special}{}", "a".repeat(at), "b".repeat(at % 9));
                recs.push(MessageRecord { subject: Some(subject), ..empty.clone() });
            }
        }
        for rec in recs {
            let mut ours = Vec::new();
            json_line(&rec, &mut ours);
            let theirs = serde_json::to_vec(&rec).unwrap();
            assert_eq!(String::from_utf8(ours).unwrap(), String::from_utf8(theirs).unwrap());
        }
    }

    #[test]
    fn escapes_terminal_controls() {
        assert_eq!(escape("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(escape("\x1b]0;title\x07"), "\\x1b]0;title\\x07");
        assert_eq!(escape("x\0y"), "x\\x00y");
        assert_eq!(escape("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(escape("\u{9b}31m"), "\\x9b31m");
        assert_eq!(escape("café ünï"), "café ünï");
    }

    #[test]
    fn numbers_and_sizes() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(14212), "14,212");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
    }
}
