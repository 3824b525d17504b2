//! Reading one SMTP reply (RFC 5321 section 4.2) and the EHLO keywords in it.
//!
//! Strict where a mistake would change an outcome, lenient where it cannot: the code must be `2xx`–`5xx` and the
//! same on every line (a reply whose last line says 550 is never read as the 250 of its first line); a bare LF
//! ends a line like CRLF; the text keeps everything after the code, enhanced status code included (`2.0.0`, the
//! relay's queue id), with control characters replaced so the stored reply prints safely.

use std::io::{self, BufRead, Read};

/// Longest reply line we accept (RFC 5321 says 512; Postfix allows 2048 by default).
const MAX_LINE: usize = 4096;

/// Longest whole reply we accept: a relay streaming `250-` lines forever must not grow our memory without bound
/// (each read restarts the socket's timeout). A long EHLO reply is 1 KB.
const MAX_REPLY: usize = 64 * 1024;

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
    let mut total = 0usize;
    loop {
        let mut raw = Vec::new();
        let n = r.take(MAX_LINE as u64).read_until(b'\n', &mut raw)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed by the relay"));
        }
        if !raw.ends_with(b"\n") {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "reply line too long"));
        }
        total += n;
        if total > MAX_REPLY {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "reply too long"));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> io::Result<Reply> {
        read(&mut io::BufReader::new(bytes))
    }

    /// The properties smtp-proto was checked against (see `smtp/mod.rs`), on our parser.
    #[test]
    fn replies() {
        // Multi-line, enhanced status codes kept in the text, every line's.
        let r = parse(b"550-5.1.1 first\r\n550-5.1.2 second\r\n550 5.7.26 third\r\n").unwrap();
        assert_eq!((r.code, r.text.as_str()), (550, "550 5.1.1 first 5.1.2 second 5.7.26 third"));
        let r = parse(b"250 2.0.0 Ok: queued as 4ABC\r\n").unwrap();
        assert_eq!(r.text, "250 2.0.0 Ok: queued as 4ABC");
        // A bare LF ends a line; the next reply is left for the next read.
        let mut two = io::BufReader::new(&b"250 ok\n221 bye\r\n"[..]);
        assert_eq!(read(&mut two).unwrap().text, "250 ok");
        assert_eq!(read(&mut two).unwrap().text, "221 bye");
        // Control characters are replaced, so the stored reply prints safely.
        assert_eq!(parse(b"250 a\x1b[2Jb\rc\r\n").unwrap().text, "250 a?[2Jb?c");
        // A code outside 2xx-5xx, a code that changes mid-reply, no code: malformed, never an outcome.
        for bad in [&b"199 x\r\n"[..], b"650 x\r\n", b"250-a\r\n550 b\r\n", b"25 x\r\n", b"hello\r\n"] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{:?}", String::from_utf8_lossy(bad));
        }
        // Bounded: one line, and the whole reply.
        let mut long = b"250 ".to_vec();
        long.extend(vec![b'a'; MAX_LINE]);
        assert!(parse(&long).unwrap_err().to_string().contains("line too long"));
        let endless = b"250-x\r\n".repeat(MAX_REPLY / 7 + 1);
        assert!(parse(&endless).unwrap_err().to_string().contains("reply too long"));
        assert_eq!(parse(b"250-x\r\n").unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn ehlo_keywords_are_upper_case_first_words() {
        let r = parse(b"250-relay.example Hello\r\n250-pipelining\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n250-SmtpUtf8\r\n250 STARTTLS\r\n").unwrap();
        assert_eq!(ehlo_keywords(&r), ["PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "STARTTLS"]);
    }
}
