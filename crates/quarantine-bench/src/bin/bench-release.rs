//! Fixture for the release benchmark (`scripts/bench-release`).
//!
//! ```text
//! bench_release populate --store DIR --messages N --samples DIR   # N holds through Store::hold, real blobs
//! bench_release free-port                                         # prints a free loopback TCP port
//! ```
//! `populate` holds N distinct messages in five size classes that discretise the hold benchmark's corpus
//! (log-normal, median 50 KB, σ = 1: the 10th, 30th, 50th, 70th and 90th percentiles, 14–180 KB, one fifth each).
//! Each message has a realistic header block, a pseudo-English text part and, from 30 KB up, a base64
//! attachment of random bytes; lines end in LF, as Postfix's pipe(8) hands them over (release converts them to
//! CRLF). For each class it writes one sample of exactly that size to `--samples DIR/class-SIZE.eml`, and prints
//! `SIZE COUNT PATH` per class, so `smtp-source -F` can send the same sizes and counts as the baseline.
//! Run it under eatmydata: the fixture's durability is not what is measured.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use quarantine_store::{HoldRequest, Store};
use rand::{Rng, SeedableRng};

const CLASSES: [usize; 5] = [14_000, 30_000, 50_000, 84_000, 180_000];

const WORDS: &[&str] = &[
    "invoice", "payment", "the", "of", "account", "please", "find", "attached", "regards", "meeting", "order",
    "shipment", "delivery", "and", "to", "your", "we", "have", "update", "review", "quarter", "report", "team",
    "schedule", "confirm", "details", "below", "thank", "you", "for", "a", "in", "is", "on", "with", "this",
];

/// One message of exactly `size` bytes (LF line endings), distinct by `i`.
fn message(i: u64, size: usize, rng: &mut rand::rngs::StdRng) -> Vec<u8> {
    let boundary = format!("=_bench_{i:08x}");
    let mut m = format!(
        "Return-Path: <sender{s}@example.org>\n\
         Received: from mail{s}.example.org (mail{s}.example.org [192.0.2.{h}])\n\
         \tby mx1.example.edu (Postfix) with ESMTPS id 4Q{i:08X}\n\
         \tfor <rcpt{r}@example.edu>; Thu, 14 Mar 2024 00:{mm:02}:{ss:02} +0100 (CET)\n\
         DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org; s=sel1;\n\
         \th=from:to:subject:date:message-id; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\n\
         \tb=dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZSBidXQgaXQgaXMgdGhlIHJpZ2h0IGxlbmd0aA==\n\
         From: Sender {s} <sender{s}@example.org>\n\
         To: Recipient {r} <rcpt{r}@example.edu>\n\
         Subject: Quarterly report {i}\n\
         Date: Thu, 14 Mar 2024 00:{mm:02}:{ss:02} +0100\n\
         Message-ID: <bench.{i}@example.org>\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"{boundary}\"\n\n\
         --{boundary}\n\
         Content-Type: text/plain; charset=utf-8\n\n",
        s = i % 997,
        r = i % 5003,
        h = i % 250 + 1,
        mm = (i / 60) % 60,
        ss = i % 60,
    )
    .into_bytes();
    let text_target = if size >= 30_000 { size / 4 } else { size - 200 };
    let mut line = String::new();
    while m.len() < text_target {
        let w = WORDS[rng.gen_range(0..WORDS.len())];
        if line.len() + w.len() + 1 > 72 {
            m.extend_from_slice(line.trim_end().as_bytes());
            m.push(b'\n');
            line.clear();
        }
        line.push_str(w);
        line.push(' ');
    }
    m.extend_from_slice(line.trim_end().as_bytes());
    m.push(b'\n');
    if size >= 30_000 {
        m.extend_from_slice(
            format!(
                "--{boundary}\nContent-Type: application/pdf; name=\"report-{i}.pdf\"\n\
                 Content-Disposition: attachment; filename=\"report-{i}.pdf\"\n\
                 Content-Transfer-Encoding: base64\n\n"
            )
            .as_bytes(),
        );
    }
    let tail = format!("--{boundary}--\n");
    // Fill to the exact size: base64-looking lines of random bytes (or text for the small class).
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    while m.len() + tail.len() < size {
        let room = size - tail.len() - m.len();
        let n = room.min(77) - 1;
        for _ in 0..n {
            m.push(if size >= 30_000 { B64[rng.gen_range(0..64)] } else { b"etaoinshrdlu "[rng.gen_range(0..13)] });
        }
        m.push(b'\n');
    }
    m.extend_from_slice(tail.as_bytes());
    m
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    match args.get(1).map(String::as_str) {
        Some("free-port") => {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            println!("{}", l.local_addr().expect("addr").port());
        }
        Some("populate") => {
            let store = PathBuf::from(get("--store").expect("--store DIR"));
            let samples = PathBuf::from(get("--samples").expect("--samples DIR"));
            let n: u64 = get("--messages").map(|s| s.parse().expect("--messages N")).unwrap_or(10_000);
            std::fs::create_dir_all(&samples).expect("samples dir");
            let mut s = Store::open(&store, Duration::from_secs(60)).expect("open store");
            let mut rng = rand::rngs::StdRng::seed_from_u64(20240314);
            let started = Instant::now();
            let mut counts = [0u64; CLASSES.len()];
            for i in 0..n {
                let class = (i % CLASSES.len() as u64) as usize;
                let size = CLASSES[class];
                let body = message(i, size, &mut rng);
                assert_eq!(body.len(), size);
                if counts[class] == 0 {
                    write_sample(&samples, size, &body);
                }
                counts[class] += 1;
                let req = HoldRequest {
                    from: format!("sender{}@example.org", i % 997),
                    recipients: vec![format!("rcpt{}@example.edu", i % 5003)],
                    verdict: "BENCH".into(),
                    ..Default::default()
                };
                s.hold(&req, &mut Cursor::new(body)).expect("hold");
            }
            eprintln!("populated {n} messages in {:.1}s", started.elapsed().as_secs_f64());
            for (size, count) in CLASSES.iter().zip(counts) {
                println!("{size} {count} {}", samples.join(format!("class-{size}.eml")).display());
            }
        }
        _ => {
            eprintln!("usage: bench_release populate --store DIR --messages N --samples DIR | free-port");
            std::process::exit(2);
        }
    }
}

fn write_sample(dir: &Path, size: usize, body: &[u8]) {
    let mut f = std::fs::File::create(dir.join(format!("class-{size}.eml"))).expect("sample");
    f.write_all(body).expect("write sample");
}
