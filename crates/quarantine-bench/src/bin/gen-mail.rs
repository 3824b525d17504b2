//! Helpers for `scripts/bench-import`:
//!
//! - `gen_mail corpus --out DIR --messages N [--seed S]` writes N distinct messages as `DIR/NNNNNN.eml`: sizes
//!   log-normal with a median of 50 KB (σ = 1), clamped to 2 KiB–1 MiB, like the hold benchmark's corpus; a
//!   realistic spam header block with `Return-Path` and `Delivered-To` (so `import` finds the envelope); a text
//!   body; above 12 KB mostly a base64 attachment, three quarters of them incompressible bytes.
//! - `gen_mail deliver DIR -- CMD ARGS...` runs CMD once per file of DIR, in name order, the file on its stdin
//!   through a pipe (as Postfix's pipe(8) does), one process at a time; prints `messages seconds msgs/s`. Any
//!   failure stops it with exit 1.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "account",
    "payment",
    "invoice",
    "offer",
    "limited",
    "please",
    "verify",
    "click",
    "below",
    "update",
    "security",
    "customer",
    "order",
    "shipping",
    "delivery",
    "free",
    "discount",
    "exclusive",
    "winner",
    "claim",
    "prize",
    "urgent",
    "confirm",
    "bank",
    "transfer",
    "meeting",
    "report",
    "attached",
    "document",
    "review",
    "regards",
    "password",
    "login",
    "statement",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("corpus") => corpus(&args[1..]),
        Some("deliver") => deliver(&args[1..]),
        _ => {
            eprintln!(
                "usage: gen_mail corpus --out DIR --messages N [--seed S]\n       gen_mail deliver DIR -- CMD ARGS..."
            );
            std::process::exit(2);
        }
    }
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn corpus(args: &[String]) {
    let out = PathBuf::from(flag(args, "--out").expect("--out DIR"));
    let n: usize = flag(args, "--messages").map(|v| v.parse().expect("a number")).unwrap_or(10_000);
    let seed: u64 = flag(args, "--seed").map(|v| v.parse().expect("a number")).unwrap_or(20250114);
    fs::create_dir_all(&out).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut total = 0usize;
    let mut sizes = Vec::with_capacity(n);
    for i in 0..n {
        let u1: f64 = 1.0 - rng.gen::<f64>();
        let u2: f64 = rng.gen::<f64>();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        let size = ((50_000f64.ln() + z).exp().round() as usize).clamp(2048, 1 << 20);
        let m = message(&mut rng, i, size);
        total += m.len();
        sizes.push(m.len());
        fs::write(out.join(format!("{i:06}.eml")), &m).unwrap();
    }
    sizes.sort_unstable();
    println!(
        "{n} messages, {:.1} MB, median {:.1} KB, min {:.1} KB, max {:.1} KB",
        total as f64 / 1e6,
        sizes[n / 2] as f64 / 1e3,
        sizes[0] as f64 / 1e3,
        sizes[n - 1] as f64 / 1e3
    );
}

fn words(rng: &mut StdRng, m: &mut String, len: usize) {
    let start = m.len();
    let mut col = 0;
    while m.len() - start < len {
        let w = WORDS[rng.gen_range(0..WORDS.len())];
        m.push_str(w);
        col += w.len() + 1;
        if col > 72 {
            m.push('\n');
            col = 0;
        } else {
            m.push(' ');
        }
    }
    m.push('\n');
}

fn message(rng: &mut StdRng, i: usize, size: usize) -> Vec<u8> {
    let dom = format!("{}-{}.example", WORDS[rng.gen_range(0..WORDS.len())], rng.gen_range(0..1000));
    let mut m = String::with_capacity(size + 512);
    m.push_str(&format!("Return-Path: <bounce-{i}@{dom}>\nDelivered-To: user{}@example.org\n", i % 97));
    for hop in 0..rng.gen_range(2..5) {
        m.push_str(&format!(
            "Received: from mx{hop}.{dom} (mx{hop}.{dom} [192.0.2.{}])\n\tby mail.example.org (Postfix) with ESMTPS id {:012X}\n\tfor <user{}@example.org>; Tue, 14 Jan 2025 10:{:02}:{:02} +0000\n",
            rng.gen_range(1..255),
            rng.next_u64() & 0xFFFF_FFFF_FFFF,
            i % 97,
            rng.gen_range(0..60),
            rng.gen_range(0..60)
        ));
    }
    let sig: String = (0..344).map(|_| b64(rng.gen_range(0..64))).collect();
    m.push_str(&format!(
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={dom}; s=s1;\n\tb={}\n\t{}\n",
        &sig[..172],
        &sig[172..]
    ));
    m.push_str(&format!(
        "Authentication-Results: mail.example.org; spf=softfail smtp.mailfrom={dom}; dkim=fail\n\
         From: \"Offers\" <offers@{dom}>\nTo: user{}@example.org\nSubject: {} {} #{i}\n\
         Message-ID: <{:016x}@{dom}>\nDate: Tue, 14 Jan 2025 10:00:00 +0000\nMIME-Version: 1.0\n",
        i % 97,
        WORDS[rng.gen_range(0..WORDS.len())],
        WORDS[rng.gen_range(0..WORDS.len())],
        rng.next_u64()
    ));
    let attach = size > 12 * 1024 && rng.gen_bool(0.85);
    if !attach {
        m.push_str("Content-Type: text/plain; charset=utf-8\n\n");
        let left = size.saturating_sub(m.len());
        words(rng, &mut m, left);
        return m.into_bytes();
    }
    let boundary = format!("=_b{:016x}", rng.next_u64());
    m.push_str(&format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\n\n--{boundary}\n"));
    m.push_str("Content-Type: text/plain; charset=utf-8\n\n");
    let body = rng.gen_range(600..3000).min(size / 4);
    words(rng, &mut m, body);
    let binary = rng.gen_bool(0.75);
    let (ctype, name) = if binary { ("application/pdf", "invoice.pdf") } else { ("text/csv", "statement.csv") };
    m.push_str(&format!(
        "\n--{boundary}\nContent-Type: {ctype}; name=\"{name}\"\nContent-Transfer-Encoding: base64\n\
         Content-Disposition: attachment; filename=\"{name}\"\n\n"
    ));
    let closing = format!("--{boundary}--\n");
    let b64_len = size.saturating_sub(m.len() + closing.len()).max(77);
    let mut line = 0;
    for _ in 0..b64_len {
        if line == 76 {
            m.push('\n');
            line = 0;
            continue;
        }
        // CSV-like payloads repeat a small alphabet (compressible); binary ones are uniform (not).
        let v = if binary { rng.gen_range(0..64) } else { [26, 27, 28, 52, 53, 54, 55][rng.gen_range(0..7)] };
        m.push(b64(v));
        line += 1;
    }
    m.push('\n');
    m.push_str(&closing);
    m.into_bytes()
}

fn b64(v: u32) -> char {
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[v as usize] as char
}

fn deliver(args: &[String]) {
    let dir = Path::new(args.first().expect("DIR"));
    let dash = args.iter().position(|a| a == "--").expect("-- CMD");
    let cmd = &args[dash + 1..];
    let mut files: Vec<PathBuf> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    // Read everything first: the clock measures deliveries, not our reads.
    let bodies: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
    let start = Instant::now();
    for (f, body) in files.iter().zip(&bodies) {
        let mut child = Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(body).unwrap();
        drop(stdin);
        let st = child.wait().unwrap();
        if !st.success() {
            eprintln!("{}: {:?} exited {st}", f.display(), cmd);
            std::process::exit(1);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{} {secs:.3} {:.1}", files.len(), files.len() as f64 / secs);
}
