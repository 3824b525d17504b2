//! The mboxrd writer (export's `--format mbox`): the reader is `source::mbox`.

/// One mboxrd entry: the `From ` separator line, the message with `^>*From ` lines quoted, a final newline if the
/// message lacks one, and the blank line that ends the entry.
pub fn entry(envelope_from: &str, received_us: i64, raw: &[u8], out: &mut Vec<u8>) {
    let sender = if envelope_from.is_empty() { "MAILER-DAEMON" } else { envelope_from };
    // The separator must stay one line whatever the sender holds (addresses are checked at hold, but be sure).
    let sender: String = sender.chars().map(|c| if c.is_whitespace() || c.is_control() { '_' } else { c }).collect();
    let when = chrono::DateTime::from_timestamp_micros(received_us).unwrap_or_default();
    out.extend_from_slice(format!("From {sender} {}\n", when.format("%a %b %e %H:%M:%S %Y")).as_bytes());
    quote(raw, out);
    if !raw.is_empty() && !raw.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// Appends `raw` to `out`, quoting every line that matches `^>*From ` with one more `>` (mboxrd), so a reader
/// that removes one `>` from such lines gets the original back exactly.
pub fn quote(raw: &[u8], out: &mut Vec<u8>) {
    for line in raw.split_inclusive(|&b| b == b'\n') {
        let rest = &line[line.iter().take_while(|&&b| b == b'>').count()..];
        if rest.starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unquote(mbox_body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in mbox_body.split_inclusive(|&b| b == b'\n') {
            let n = line.iter().take_while(|&&b| b == b'>').count();
            if n > 0 && line[n..].starts_with(b"From ") {
                out.extend_from_slice(&line[1..]);
            } else {
                out.extend_from_slice(line);
            }
        }
        out
    }

    #[test]
    fn mboxrd_quotes_from_lines_reversibly() {
        let raw =
            b"From: a@b\r\nSubject: x\r\n\r\nFrom here\r\n>From there\r\n>>From afar\r\nFromage\r\n From x\r\nFrom";
        let mut out = Vec::new();
        quote(raw, &mut out);
        assert_eq!(
            out,
            b"From: a@b\r\nSubject: x\r\n\r\n>From here\r\n>>From there\r\n>>>From afar\r\nFromage\r\n From x\r\nFrom"
        );
        assert_eq!(unquote(&out), raw);
    }

    #[test]
    fn entry_has_separator_and_blank_line() {
        let mut out = Vec::new();
        entry("", 1_700_000_000_000_000, b"Subject: s\n\nFrom me", &mut out);
        assert_eq!(out, b"From MAILER-DAEMON Tue Nov 14 22:13:20 2023\nSubject: s\n\n>From me\n\n");
    }
}
