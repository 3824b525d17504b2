//! Reading one SMTP reply (RFC 5321 section 4.2) and the EHLO keywords in it.
//!
//! Strict where a mistake would change an outcome, lenient where it cannot: the code must be `2xx`–`5xx` and the
//! same on every line (a reply whose last line says 550 is never read as the 250 of its first line); a bare LF
//! ends a line like CRLF; the text keeps everything after the code, enhanced status code included (`2.0.0`, the
//! relay's queue id), with control characters replaced so the stored reply prints safely.

use std::io::{self, BufRead, Read};

/// Longest reply line we accept (RFC 5321 says 512; Postfix allows 2048 by default).
const MAX_LINE: usize = 4096;

/// One reply: its code and its text (all lines, joined by spaces, code first).
#[derive(Clone, Debug)]
pub(super) struct Reply {
    pub(super) code: u16,
    pub(super) text: String,
    pub(super) lines: Vec<String>,
}

/// Reads one reply, all its lines.
pub(super) fn read(r: &mut impl BufRead) -> io::Result<Reply> {
    let mut lines = Vec::new();
    let mut code = 0u16;
    loop {
        let mut raw = Vec::new();
        let n = r.take(MAX_LINE as u64).read_until(b'\n', &mut raw)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed by the relay"));
        }
        if !raw.ends_with(b"\n") {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "reply line too long"));
        }
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches(['\r', '\n']);
        let bytes = line.as_bytes();
        if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) || !(b'2'..=b'5').contains(&bytes[0]) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("malformed reply {line:?}")));
        }
        let this: u16 = line[..3].parse().expect("three digits");
        if code != 0 && this != code {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("reply code changed mid-reply: {line:?}")));
        }
        code = this;
        let more = bytes.get(3) == Some(&b'-');
        let text: String = line.get(4..).unwrap_or("").chars().map(|c| if c.is_control() { '?' } else { c }).collect();
        lines.push(text);
        if !more {
            break;
        }
    }
    let text = format!("{code} {}", lines.join(" ")).trim_end().to_string();
    Ok(Reply { code, text, lines })
}

/// The EHLO keywords of a 250 reply, upper case: the first word of every line after the greeting line.
pub(super) fn ehlo_keywords(r: &Reply) -> Vec<String> {
    r.lines.iter().skip(1).map(|l| l.split_whitespace().next().unwrap_or("").to_ascii_uppercase()).collect()
}
