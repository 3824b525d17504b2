//! A deterministic corpus of realistic-ish messages: spam-like header blocks (Received chain, DKIM signature,
//! Authentication-Results), a text or text+HTML body, and for most larger messages a base64 attachment. Sizes
//! follow a log-normal distribution clamped to [2 KiB, 1 MiB] with a median of ~50 KB, which is roughly what a
//! quarantine sees: many small spams, a tail of messages carrying documents and images.
//!
//! Compressibility is chosen to match real mail: text and HTML compress several times over, while most
//! attachments are already-compressed formats (PDF, JPEG, ZIP/DOCX) whose base64 only shrinks back to ~75 %.
//! Some attachments are text-like (CSV, uncompressed documents) and compress well.

use std::fmt::Write as _;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

pub const MIN_SIZE: usize = 2 * 1024;
pub const MAX_SIZE: usize = 1024 * 1024;
pub const MEDIAN_SIZE: f64 = 50_000.0;
/// Spread of ln(size): 5th to 95th percentile is then ~9.6 KB to ~260 KB.
pub const SIGMA: f64 = 1.0;

const WORDS_TEXT: &str = "\
    the of and to in a is that for it as was with be by on not he this are or his from at which but have \
    an had they you were their one all we can her has there been if more when will would who so no \
    account payment invoice offer limited please verify click below update security customer service \
    order shipping delivery package free discount exclusive winner claim prize urgent attention \
    immediately confirm details bank transfer million dollars business proposal meeting schedule report \
    attached document review regards thank team support password expire login unusual activity detected \
    subscription renewal membership reward points balance statement quarterly results project deadline \
    approval contract signature request information";

fn word(rng: &mut StdRng) -> &'static str {
    static WORDS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    let words = WORDS.get_or_init(|| WORDS_TEXT.split_whitespace().collect());
    words[rng.gen_range(0..words.len())]
}

/// The size of message `i` in a corpus drawn with `seed` (sizes are drawn before any content).
pub fn sizes(seed: u64, n: usize) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            // Box-Muller: one standard normal from two uniforms.
            let u1: f64 = 1.0 - rng.gen::<f64>(); // (0, 1]
            let u2: f64 = rng.gen::<f64>();
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            let s = (MEDIAN_SIZE.ln() + SIGMA * z).exp();
            (s.round() as usize).clamp(MIN_SIZE, MAX_SIZE)
        })
        .collect()
}

/// What kind of attachment payload a message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// Text and HTML only.
    None,
    /// Already-compressed bytes (PDF, JPEG, ZIP): incompressible before base64.
    Binary,
    /// Text-like bytes (CSV, uncompressed document).
    Textual,
}

/// Builds message `index` of about `size` bytes (exact for sizes above a few KB). Deterministic in
/// (`seed`, `index`, `size`). `attachment` forces the payload kind; `None` lets the generator choose.
pub fn message(seed: u64, index: usize, size: usize, attachment: Option<Attachment>) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let attachment = attachment.unwrap_or_else(|| {
        if size < 12 * 1024 || rng.gen_bool(0.15) {
            Attachment::None
        } else if rng.gen_bool(0.75) {
            Attachment::Binary
        } else {
            Attachment::Textual
        }
    });
    let boundary = format!("=_b{:016x}", rng.gen::<u64>());
    let mut m = String::with_capacity(size + 1024);
    headers(&mut rng, &mut m, index, &boundary, attachment != Attachment::None);

    if attachment == Attachment::None {
        // multipart/alternative: a text part and an HTML part sharing what is left.
        let _ = write!(m, "This is a multi-part message in MIME format.\n\n--{boundary}\n");
        m.push_str("Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n");
        let closing = format!("\n--{boundary}--\n");
        let html_head = format!(
            "\n--{boundary}\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n\
             <html><body>\n"
        );
        let html_tail = "</body></html>\n";
        let left = size.saturating_sub(m.len() + closing.len() + html_head.len() + html_tail.len());
        let text_len = left * 2 / 5;
        text(&mut rng, &mut m, text_len, "", "");
        m.push_str(&html_head);
        let target = size.saturating_sub(closing.len() + html_tail.len());
        let html_len = target.saturating_sub(m.len());
        text(&mut rng, &mut m, html_len, "<p>", "</p>");
        m.push_str(html_tail);
        m.push_str(&closing);
    } else {
        let _ = write!(m, "This is a multi-part message in MIME format.\n\n--{boundary}\n");
        m.push_str("Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n");
        let body_len = rng.gen_range(600..3000).min(size / 4);
        text(&mut rng, &mut m, body_len, "", "");
        let (ctype, name) = match attachment {
            Attachment::Binary => match rng.gen_range(0..3) {
                0 => ("application/pdf", "invoice.pdf"),
                1 => ("image/jpeg", "photo.jpg"),
                _ => ("application/zip", "documents.zip"),
            },
            _ => ("text/csv", "statement.csv"),
        };
        let _ = write!(
            m,
            "\n--{boundary}\nContent-Type: {ctype}; name=\"{name}\"\nContent-Transfer-Encoding: base64\n\
             Content-Disposition: attachment; filename=\"{name}\"\n\n"
        );
        let closing = format!("--{boundary}--\n");
        let target = size.saturating_sub(closing.len()).max(m.len() + 77);
        let b64_len = target - m.len();
        base64_body(&mut rng, &mut m, b64_len, attachment);
        m.push_str(&closing);
    }
    m.into_bytes()
}

fn headers(rng: &mut StdRng, m: &mut String, index: usize, boundary: &str, mixed: bool) {
    let ip = |rng: &mut StdRng| {
        format!("{}.{}.{}.{}", rng.gen_range(1..224), rng.gen::<u8>(), rng.gen::<u8>(), rng.gen_range(1..255))
    };
    let (hh, mm, ss) = (rng.gen_range(0..24), rng.gen_range(0..60), rng.gen_range(0..60));
    let date = format!("Tue, 14 Jan 2025 {hh:02}:{mm:02}:{ss:02} +0000");
    let sender_dom = format!("{}-{}.example", word(rng), word(rng));
    let _ = writeln!(m, "Return-Path: <bounce-{index}@{sender_dom}>");
    for hop in 0..rng.gen_range(2..5) {
        let a = ip(rng);
        let _ = writeln!(
            m,
            "Received: from mx{hop}.{sender_dom} (mx{hop}.{sender_dom} [{a}])\n\tby mail.example.org (Postfix) \
             with ESMTPS id {:012X}\n\tfor <user{}@example.org>; {date}",
            rng.gen::<u64>() & 0xFFFF_FFFF_FFFF,
            rng.gen_range(0..500)
        );
    }
    let _ = writeln!(
        m,
        "Authentication-Results: mail.example.org;\n\tdkim=pass header.d={sender_dom};\n\tspf=softfail \
         smtp.mailfrom={sender_dom};\n\tdmarc=fail header.from={sender_dom}"
    );
    let mut sig = String::new();
    b64_line(rng, &mut sig, 192);
    let _ = writeln!(
        m,
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={sender_dom}; s=s1;\n\th=from:to:subject:date;\n\t\
         bh={};\n\tb={}",
        &sig[..44],
        &sig[44..]
    );
    let _ = writeln!(m, "From: \"{} {}\" <news@{sender_dom}>", word(rng), word(rng));
    let _ = writeln!(m, "To: <user{}@example.org>", rng.gen_range(0..500));
    let _ = writeln!(m, "Subject: {} {} {} #{index}", word(rng), word(rng), word(rng));
    let _ = writeln!(m, "Date: {date}");
    let _ = writeln!(m, "Message-ID: <{index}.{:016x}@{sender_dom}>", rng.gen::<u64>());
    let _ = writeln!(m, "X-Spam-Score: {}.{}", rng.gen_range(5..30), rng.gen_range(0..10));
    m.push_str("MIME-Version: 1.0\n");
    let kind = if mixed { "mixed" } else { "alternative" };
    let _ = write!(m, "Content-Type: multipart/{kind}; boundary=\"{boundary}\"\n\n");
}

/// Appends about `len` bytes of wrapped pseudo-English paragraphs, each wrapped in `open`/`close`.
fn text(rng: &mut StdRng, m: &mut String, len: usize, open: &str, close: &str) {
    let end = m.len() + len;
    while m.len() + open.len() + close.len() + 2 < end {
        m.push_str(open);
        let para_end = (m.len() + rng.gen_range(200..900)).min(end.saturating_sub(close.len() + 2));
        let mut line = 0;
        let mut first = true;
        while m.len() < para_end {
            let w = word(rng);
            if line + w.len() + 1 > 72 {
                m.push('\n');
                line = 0;
            } else if !first {
                m.push(' ');
                line += 1;
            }
            m.push_str(w);
            line += w.len();
            first = false;
        }
        m.push_str(close);
        m.push_str("\n\n");
    }
    while m.len() < end {
        m.push('\n');
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Appends `len` bytes of base64 lines (76 characters + LF) encoding either random or text-like bytes.
fn base64_body(rng: &mut StdRng, m: &mut String, len: usize, kind: Attachment) {
    let end = m.len() + len;
    let mut raw = [0u8; 57];
    let mut csv = String::new();
    while m.len() < end {
        let room = end - m.len();
        let chars = room.saturating_sub(1).min(76) / 4 * 4;
        if chars == 0 {
            m.push('\n');
            continue;
        }
        let nraw = chars / 4 * 3;
        if kind == Attachment::Textual {
            while csv.len() < nraw {
                let _ = writeln!(
                    csv,
                    "{},{},{}.{:02},{}",
                    rng.gen_range(1..100_000),
                    word(rng),
                    rng.gen_range(0..5000),
                    rng.gen_range(0..100),
                    word(rng)
                );
            }
            raw[..nraw].copy_from_slice(&csv.as_bytes()[..nraw]);
            csv.drain(..nraw);
        } else {
            rng.fill_bytes(&mut raw[..nraw]);
        }
        encode(&raw[..nraw], m);
        m.push('\n');
    }
}

fn b64_line(rng: &mut StdRng, m: &mut String, chars: usize) {
    let mut raw = vec![0u8; chars / 4 * 3];
    rng.fill_bytes(&mut raw);
    encode(&raw, m);
}

/// Standard base64 of a multiple of 3 bytes (no padding needed).
fn encode(raw: &[u8], out: &mut String) {
    for c in raw.chunks_exact(3) {
        let v = (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8) | u32::from(c[2]);
        for shift in [18, 12, 6, 0] {
            out.push(B64[((v >> shift) & 63) as usize] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_deterministic_and_bounded() {
        let a = sizes(7, 2000);
        assert_eq!(a, sizes(7, 2000));
        assert!(a.iter().all(|&s| (MIN_SIZE..=MAX_SIZE).contains(&s)));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2] as f64;
        assert!((40_000.0..62_000.0).contains(&median), "median {median}");
    }

    #[test]
    fn messages_hit_their_size_and_differ() {
        for (i, &size) in sizes(3, 200).iter().enumerate() {
            let m = message(3, i, size, None);
            let diff = m.len() as i64 - size as i64;
            assert!(diff.abs() <= 80, "message {i}: wanted {size}, got {}", m.len());
            assert!(std::str::from_utf8(&m).is_ok());
        }
        assert_ne!(message(3, 0, 50_000, None), message(3, 1, 50_000, None));
        assert_eq!(message(3, 5, 50_000, None), message(3, 5, 50_000, None));
    }

    #[test]
    fn base64_is_standard() {
        let mut s = String::new();
        encode(b"Man", &mut s);
        assert_eq!(s, "TWFu");
    }
}
