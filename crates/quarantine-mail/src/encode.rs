//! What a released message looks like on the wire.
//!
//! # Line endings and transparency
//! SMTP (RFC 5321 section 4.1.1.4) ends DATA with `CRLF . CRLF` and requires a leading `.` on any line to be
//! doubled. A body with a *bare* LF or CR is the SMTP-smuggling vector: a receiver that accepts `LF . LF` or
//! `LF . CRLF` as the end of data sees the rest of the body as new commands. So every line ending is rewritten
//! to CRLF (a bare LF and a bare CR each become one CRLF) before anything else looks at the bytes.
//!
//! # Dot-stuffing
//! [`smtp_data`] then doubles a `.` at the start of every line and appends the terminator, so the bytes go to
//! the relay in one write and nothing downstream touches them. (lettre 0.11.23, the obvious client, stuffs dots
//! only after CRLF — RUSTSEC-2026-0561 — which is one of the reasons `smtp.rs` does not use it.)
//!
//! The sendmail path gets [`normalize`] with LF, the local convention for `sendmail -i`, which reads to EOF and
//! gives dots no meaning.

/// Rewrites every line ending — CRLF, a bare LF, a bare CR — to `eol`. Nothing else changes.
pub fn normalize(src: &[u8], eol: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len() + src.len() / 32 + 2);
    let mut i = 0;
    while i < src.len() {
        // Copy the run up to the next CR or LF in one go: most of a message is plain text.
        let run = memchr::memchr2(b'\r', b'\n', &src[i..]).unwrap_or(src.len() - i);
        out.extend_from_slice(&src[i..i + run]);
        i += run;
        if i >= src.len() {
            break;
        }
        if src[i] == b'\r' && src.get(i + 1) == Some(&b'\n') {
            i += 2;
        } else {
            i += 1;
        }
        out.extend_from_slice(eol);
    }
    out
}

/// The DATA payload as RFC 5321 wants it on the wire, terminator included: CRLF line endings, a `.` doubled at
/// the start of every line, a final CRLF if the message lacks one, then `.` CRLF.
pub fn smtp_data(src: &[u8]) -> Vec<u8> {
    let mut w = DataWriter::with_capacity(src.len());
    w.push(src);
    w.finish()
}

/// Builds the DATA payload from pieces (the trace header, then the original) in one pass, without first
/// concatenating or normalising into intermediate buffers: runs without CR, LF or a line-leading dot are copied
/// whole. A CR at the end of one piece followed by an LF at the start of the next is one line ending.
pub struct DataWriter {
    out: Vec<u8>,
    at_line_start: bool,
    pending_cr: bool,
}

impl DataWriter {
    pub fn with_capacity(n: usize) -> DataWriter {
        DataWriter::reusing(Vec::new(), n)
    }

    /// Writes into `buf` (emptied first) instead of a new allocation: a release encodes message after message
    /// into the same few buffers.
    pub fn reusing(mut buf: Vec<u8>, n: usize) -> DataWriter {
        buf.clear();
        buf.reserve(n + n / 32 + 8);
        DataWriter { out: buf, at_line_start: true, pending_cr: false }
    }

    pub fn push(&mut self, src: &[u8]) {
        let mut i = 0;
        if self.pending_cr && !src.is_empty() {
            self.pending_cr = false;
            if src[0] == b'\n' {
                i = 1; // the LF of a CRLF split across pieces: the CRLF is already written
            }
        }
        while i < src.len() {
            if self.at_line_start {
                if src[i] == b'.' {
                    self.out.push(b'.');
                }
                self.at_line_start = false;
            }
            let run = memchr::memchr2(b'\r', b'\n', &src[i..]).unwrap_or(src.len() - i);
            self.out.extend_from_slice(&src[i..i + run]);
            i += run;
            if i >= src.len() {
                break;
            }
            if src[i] == b'\r' {
                match src.get(i + 1) {
                    Some(b'\n') => i += 2,
                    Some(_) => i += 1,
                    None => {
                        i += 1;
                        self.pending_cr = true; // the next piece may start with its LF
                    }
                }
            } else {
                i += 1;
            }
            self.out.extend_from_slice(b"\r\n");
            self.at_line_start = true;
        }
    }

    /// Ends the data: a final CRLF if the message lacks one, then `.` CRLF.
    pub fn finish(mut self) -> Vec<u8> {
        if !self.at_line_start || self.out.is_empty() {
            self.out.extend_from_slice(b"\r\n");
        }
        self.out.extend_from_slice(b".\r\n");
        self.out
    }
}

/// A message's DATA payload, encoded ahead of the sending (on another thread than the socket's), with what the
/// envelope needs to know about it.
#[derive(Clone, Debug, Default)]
pub struct Encoded {
    /// What [`DataWriter`] made of the pieces: CRLF, dots stuffed, terminator included.
    pub wire: Vec<u8>,
    /// Whether any piece had a byte above 127 ([`is_8bit`]): `MAIL FROM` then says `BODY=8BITMIME`.
    pub eight_bit: bool,
}

impl Encoded {
    /// Encodes `parts` (in order, as one message) into this buffer, replacing what it held.
    pub fn encode(&mut self, parts: &[&[u8]]) {
        let n = parts.iter().map(|p| p.len()).sum();
        let mut w = DataWriter::reusing(std::mem::take(&mut self.wire), n);
        for p in parts {
            w.push(p);
        }
        self.wire = w.finish();
        self.eight_bit = parts.iter().any(|p| is_8bit(p));
    }
}

/// Reverses [`smtp_data`] the way a receiver does: strips the terminator and one leading `.` from every line.
/// Tests and fuzz targets check round trips with it.
pub fn smtp_undata(wire: &[u8]) -> Option<Vec<u8>> {
    let body = wire.strip_suffix(b".\r\n")?;
    let mut out = Vec::with_capacity(body.len());
    for line in body.split_inclusive(|&b| b == b'\n') {
        if line == b".\r\n" {
            return None; // an unstuffed terminator inside the body: the data would have ended here
        }
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    Some(out)
}

/// True if the bytes need `BODY=8BITMIME`.
pub fn is_8bit(src: &[u8]) -> bool {
    !src.is_ascii()
}

/// The one header a release may add, with its CRLF: `X-Quarantine-Released: <id>; by <actor>; <time>`.
/// Control characters in the actor (it comes from `--actor` or the environment) become `?`, so it cannot end the
/// header or start a new one.
pub fn trace_header(message_id: &str, actor: &str, rfc3339: &str) -> Vec<u8> {
    let clean = |s: &str| s.chars().map(|c| if c.is_control() { '?' } else { c }).collect::<String>();
    format!("X-Quarantine-Released: {}; by {}; {}\r\n", clean(message_id), clean(actor), clean(rfc3339)).into_bytes()
}

/// True when `b` holds a CR not followed by LF or an LF not preceded by CR: what must never reach the wire.
pub fn has_bare_cr_or_lf(b: &[u8]) -> bool {
    b.iter()
        .enumerate()
        .any(|(i, &c)| (c == b'\r' && b.get(i + 1) != Some(&b'\n')) || (c == b'\n' && (i == 0 || b[i - 1] != b'\r')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_ending_becomes_crlf() {
        assert_eq!(normalize(b"a\nb\r\nc\rd", b"\r\n"), b"a\r\nb\r\nc\r\nd");
        assert_eq!(normalize(b"\r\r\n\n\n\r", b"\r\n"), b"\r\n\r\n\r\n\r\n\r\n");
        assert_eq!(normalize(b"x\r\n", b"\n"), b"x\n");
        assert_eq!(normalize(b"no newline", b"\r\n"), b"no newline");
        assert_eq!(normalize(b"", b"\r\n"), b"");
        // 8-bit and NUL bytes pass through untouched.
        assert_eq!(normalize(b"\xff\x00\xc3\xa9\n", b"\r\n"), b"\xff\x00\xc3\xa9\r\n");
    }

    #[test]
    fn dots_are_stuffed_at_every_line_start() {
        assert_eq!(smtp_data(b".a\r\n"), b"..a\r\n.\r\n");
        assert_eq!(smtp_data(b"a\n.\nb\n"), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(smtp_data(b"a\r\n.\r\n"), b"a\r\n..\r\n.\r\n");
        assert_eq!(smtp_data(b"a.b\r\n"), b"a.b\r\n.\r\n");
        assert_eq!(smtp_data(b"no final newline"), b"no final newline\r\n.\r\n");
        assert_eq!(smtp_data(b""), b"\r\n.\r\n");
    }

    /// The smuggling payloads: each must stay inside one message, so the wire form may contain `CRLF . CRLF`
    /// only as its terminator, and must carry no bare CR or LF at all.
    #[test]
    fn smuggling_payloads_cannot_end_data_early() {
        let tail = b"MAIL FROM:<evil@example.net>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nsmuggled\r\n.\r\n";
        for sep in [&b"\n.\n"[..], b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r\n", b"\r.\r", b"\n.\r"] {
            let mut msg = b"Subject: x\r\n\r\nbody".to_vec();
            msg.extend_from_slice(sep);
            msg.extend_from_slice(tail);
            let wire = smtp_data(&msg);
            let first_end = wire.windows(5).position(|w| w == b"\r\n.\r\n").unwrap();
            assert_eq!(first_end + 5, wire.len(), "terminator inside the data for {sep:?}");
            assert!(!has_bare_cr_or_lf(&wire), "bare CR/LF on the wire for {sep:?}");
            assert_eq!(smtp_undata(&wire).unwrap(), normalize(&msg, b"\r\n"), "round trip for {sep:?}");
        }
    }

    #[test]
    fn pieces_encode_like_the_whole() {
        let msg: &[u8] = b".a\r\nb\rc\nd\r\n.\r\n\r";
        for cut in 0..=msg.len() {
            let mut w = DataWriter::with_capacity(msg.len());
            w.push(&msg[..cut]);
            w.push(b"");
            w.push(&msg[cut..]);
            assert_eq!(w.finish(), smtp_data(msg), "cut at {cut}");
        }
    }

    #[test]
    fn a_reused_buffer_encodes_like_a_new_one() {
        let mut e = Encoded::default();
        e.encode(&[b"X-A: 1\r\n", b".long first message\n\xff"]);
        assert!(e.eight_bit);
        e.encode(&[b"", b".b\nc"]);
        assert_eq!(e.wire, smtp_data(b".b\nc"));
        assert!(!e.eight_bit);
    }

    #[test]
    fn trace_header_cannot_be_split() {
        let h = trace_header("Q7K2M9ABCD", "eve\r\nBcc: x@y", "2026-01-01T00:00:00Z");
        assert_eq!(h, b"X-Quarantine-Released: Q7K2M9ABCD; by eve??Bcc: x@y; 2026-01-01T00:00:00Z\r\n");
    }

    #[test]
    fn round_trip_on_random_bytes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet = b".\r\na\xff ";
        for _ in 0..5000 {
            let len = rng.gen_range(0..40);
            let msg: Vec<u8> = (0..len).map(|_| alphabet[rng.gen_range(0..alphabet.len())]).collect();
            let wire = smtp_data(&msg);
            assert!(!has_bare_cr_or_lf(&wire), "{msg:?}");
            let back = smtp_undata(&wire).unwrap_or_else(|| panic!("early terminator for {msg:?}"));
            let mut want = normalize(&msg, b"\r\n");
            if !want.ends_with(b"\r\n") {
                want.extend_from_slice(b"\r\n");
            }
            assert_eq!(back, want, "{msg:?}");
        }
    }
}
