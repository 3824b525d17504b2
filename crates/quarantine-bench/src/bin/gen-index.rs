//! Bulk generator for the search benchmark (`scripts/bench-search`): builds a store whose index holds N synthetic
//! messages with a realistic spread, through the real schema (the store is created by `Store::init`, so every
//! migration, index and trigger applies), without blobs.
//!
//! ```text
//! cargo run --release -p quarantine-store --example gen_index -- --store DIR --messages 1000000 \
//!     [--recipients 50000] [--verdicts 200] [--days 30] [--seed 1]
//! ```
//!
//! Spread: received times over the last `--days` days in arrival order; verdicts and recipients drawn with a
//! Zipf-like skew (a few verdicts and mailboxes get most of the mail, as on a real gateway); 1 envelope recipient
//! for most messages, up to 5 for some, sometimes in mixed case; one sender in ten is the null sender; subjects of
//! 3 to 8 words from a 5,000-word vocabulary; one message in five has an attachment name.
//!
//! Rows go in as a writer's do (message, then its recipients and attachments), so the schema's triggers fill what
//! they fill for a real hold: the text index, the live counter, and migration 0006's copies on each recipient
//! (`received_us`, `live`) and on each message (`recipient_count`, `attachment_names`).
//!
//! Everything is inserted in one transaction with prepared statements (no journal and `synchronous=OFF` while the
//! fixture is built; it is left in WAL mode like every store).
//! On stdout, one JSON object describing the result and sample search terms the benchmark uses: a recipient with
//! a typical number of messages (and the busiest one), subject words in about 1 in 10,000 messages (a helpdesk
//! search), 1 in 100, and the most common one, and a sender and a Message-ID. Word counts are of messages whose
//! subject has the word; a substring search may find a few more (a word can occur inside another).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use quarantine_store::Store;
use rand::distributions::{Distribution, WeightedIndex};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::params;

struct Args {
    store: PathBuf,
    messages: u64,
    recipients: usize,
    verdicts: usize,
    days: u64,
    seed: u64,
}

fn parse_args() -> Args {
    let mut a = Args { store: PathBuf::new(), messages: 100_000, recipients: 50_000, verdicts: 200, days: 30, seed: 1 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--store" => a.store = PathBuf::from(val()),
            "--messages" => a.messages = val().parse().unwrap_or_else(|_| usage("--messages: a number")),
            "--recipients" => a.recipients = val().parse().unwrap_or_else(|_| usage("--recipients: a number")),
            "--verdicts" => a.verdicts = val().parse().unwrap_or_else(|_| usage("--verdicts: a number")),
            "--days" => a.days = val().parse().unwrap_or_else(|_| usage("--days: a number")),
            "--seed" => a.seed = val().parse().unwrap_or_else(|_| usage("--seed: a number")),
            _ => usage(&format!("unknown argument {flag}")),
        }
    }
    if a.store.as_os_str().is_empty() {
        usage("--store DIR is required");
    }
    if a.recipients == 0 || a.verdicts == 0 || a.days == 0 {
        usage("--recipients, --verdicts and --days must be positive");
    }
    a
}

fn usage(why: &str) -> ! {
    eprintln!("gen_index: {why}");
    eprintln!("usage: gen_index --store DIR [--messages N] [--recipients N] [--verdicts N] [--days N] [--seed N]");
    std::process::exit(2);
}

/// Zipf-like weights 1/(rank+1)^s.
fn zipf(n: usize, s: f64) -> WeightedIndex<f64> {
    WeightedIndex::new((0..n).map(|k| 1.0 / ((k + 1) as f64).powf(s))).expect("non-empty, positive")
}

/// A pronounceable pseudo-word, distinct per `n` (base-60 syllables).
fn word(mut n: usize) -> String {
    const SYL: [&str; 60] = [
        "ba", "be", "bi", "bo", "bu", "da", "de", "di", "do", "du", "fa", "fe", "fi", "fo", "fu", "ga", "ge", "gi",
        "go", "gu", "ka", "ke", "ki", "ko", "ku", "la", "le", "li", "lo", "lu", "ma", "me", "mi", "mo", "mu", "na",
        "ne", "ni", "no", "nu", "pa", "pe", "pi", "po", "pu", "ra", "re", "ri", "ro", "ru", "sa", "se", "si", "so",
        "su", "ta", "te", "ti", "to", "tu",
    ];
    let mut w = String::new();
    loop {
        w.push_str(SYL[n % 60]);
        n /= 60;
        if n == 0 {
            break;
        }
    }
    // Three syllables at least, so a word is also a 6+ character substring that few other words contain.
    while w.len() < 6 {
        w.push('x');
    }
    w
}

const VERDICT_STEMS: [&str; 8] =
    ["PMX:VIRUS", "SPAM", "Heuristics.Phishing", "Win.Trojan.Agent", "PMX:PHISH", "BULK", "Doc.Macro", "Js.Downloader"];

fn verdict_name(i: usize) -> String {
    let stem = VERDICT_STEMS[i % VERDICT_STEMS.len()];
    if i < VERDICT_STEMS.len() {
        stem.to_string()
    } else {
        format!("{stem}-{}", i / VERDICT_STEMS.len())
    }
}

fn main() {
    let a = parse_args();
    let started = Instant::now();
    let (store, _) = Store::init(&a.store).unwrap_or_else(|e| {
        eprintln!("gen_index: {e}");
        std::process::exit(1)
    });
    let index_path = store.index_path().to_path_buf();
    drop(store);

    let mut conn = rusqlite::Connection::open(&index_path).expect("open index");
    // A fixture, not a store anyone relies on: no journal and no fsync while it is built (a crash means
    // generating it again), back to WAL at the end, as every store is.
    conn.query_row("PRAGMA journal_mode=OFF", [], |_| Ok(())).expect("journal_mode");
    conn.execute_batch("PRAGMA synchronous=OFF; PRAGMA foreign_keys=ON; PRAGMA cache_size=-262144;").expect("pragmas");
    let mut rng = StdRng::seed_from_u64(a.seed);
    let verdicts: Vec<String> = (0..a.verdicts).map(verdict_name).collect();
    let verdict_dist = zipf(a.verdicts, 1.1);
    let rcpt_dist = zipf(a.recipients, 0.7);
    let vocab = 5000usize;
    let word_dist = zipf(vocab, 1.0);
    let senders = 100_000usize;
    let sender_dist = zipf(senders, 0.9);
    let now_us = chrono::Utc::now().timestamp_micros();
    let span_us = (a.days * 86_400 * 1_000_000) as i64;
    let start_us = now_us - span_us;
    let step = span_us as f64 / a.messages.max(1) as f64;
    let mut rcpt_counts = vec![0u32; a.recipients];
    let mut word_counts = vec![0u32; vocab];
    let mut sample_message_id = String::new();
    let mut sender_counts = vec![0u32; senders];

    let tx = conn.transaction().expect("begin");
    {
        let mut msg = tx
            .prepare(
                "INSERT INTO messages (id, hash, size, received_us, env_from, env_from_lc, verdict, scanner, reason,
                     queue_id, hdr_from, hdr_to, hdr_cc, subject, message_id, hdr_date, parse_note)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, NULL, ?13, ?14, ?15, NULL)",
            )
            .expect("prepare messages");
        let mut rcpt = tx
            .prepare("INSERT OR IGNORE INTO recipients (message, address, address_lc) VALUES (?1, ?2, ?3)")
            .expect("prepare recipients");
        let mut att = tx.prepare("INSERT INTO attachments (message, name) VALUES (?1, ?2)").expect("prepare att");
        let mut seen_ids = std::collections::HashSet::with_capacity(a.messages as usize);
        for n in 0..a.messages {
            let id = loop {
                let id = quarantine_store::new_id();
                if seen_ids.insert(id.clone()) {
                    break id;
                }
            };
            let received = start_us + (n as f64 * step) as i64 + rng.gen_range(0..(step.max(1.0) as i64).max(1));
            let received = received.min(now_us - 1);
            let hash: String = (0..4).map(|_| format!("{:016x}", rng.gen::<u64>())).collect();
            let size = (2048.0 * (rng.gen::<f64>() * 7.0).exp()) as i64; // 2 KB .. ~2 MB, skewed small
            let verdict = &verdicts[verdict_dist.sample(&mut rng)];
            let scanner = match verdict.split([':', '.', '-']).next() {
                Some("PMX") => "pmx",
                Some("SPAM") | Some("BULK") => "rspamd",
                _ => "clamav",
            };
            let s = sender_dist.sample(&mut rng);
            sender_counts[s] += 1;
            let from =
                if rng.gen_ratio(1, 10) { String::new() } else { format!("news{s}@sender{}.example.com", s % 997) };
            let nrcpt = if rng.gen_ratio(85, 100) { 1 } else { rng.gen_range(2..=5) };
            let mut rcpts = Vec::with_capacity(nrcpt);
            for _ in 0..nrcpt {
                let r = rcpt_dist.sample(&mut rng);
                rcpt_counts[r] += 1;
                let addr = format!("user{r}@dept{}.example.edu", r % 50);
                rcpts.push(if rng.gen_ratio(1, 20) { addr.to_uppercase() } else { addr });
            }
            let nwords = rng.gen_range(3..=8);
            let mut words: Vec<usize> = Vec::with_capacity(nwords);
            for _ in 0..nwords {
                let w = word_dist.sample(&mut rng);
                if !words.contains(&w) {
                    words.push(w);
                }
            }
            for &w in &words {
                word_counts[w] += 1;
            }
            let mut subject = words.iter().map(|&w| word(w)).collect::<Vec<_>>().join(" ");
            if let Some(first) = subject.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            let queue_id = format!("{:010X}", rng.gen::<u64>() & 0xff_ffff_ffff);
            let hdr_from = if from.is_empty() {
                "Mail Delivery System <MAILER-DAEMON@mx.example.edu>".to_string()
            } else {
                format!("Sender {s} <{from}>")
            };
            let message_id = format!("{:016x}.{n}@mx{}.example.com", rng.gen::<u64>(), s % 13);
            if n == a.messages / 2 {
                sample_message_id = message_id.clone();
            }
            let date = chrono::DateTime::from_timestamp_micros(received).expect("in range").to_rfc3339();
            msg.execute(params![
                id,
                hash,
                size,
                received,
                from,
                from.to_lowercase(),
                verdict,
                scanner,
                format!("score {:.1}", rng.gen_range(5.0..30.0)),
                queue_id,
                hdr_from,
                rcpts.join(", "),
                subject,
                message_id,
                date,
            ])
            .expect("insert message");
            for r in &rcpts {
                rcpt.execute(params![id, r, r.to_lowercase()]).expect("insert recipient");
            }
            if rng.gen_ratio(1, 5) {
                let ext = ["pdf", "zip", "docm", "exe", "html"][rng.gen_range(0..5)];
                att.execute(params![id, format!("{}_{}.{ext}", word(rng.gen_range(0..vocab)), n % 10_000)])
                    .expect("insert attachment");
            }
        }
    }
    tx.commit().expect("commit");
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).expect("journal_mode");
    let elapsed = started.elapsed();

    // Sample terms: the recipient at the median of those with mail, a rare word (~1 in 10,000 messages) and a
    // common one.
    let mut by_count: Vec<(u32, usize)> =
        rcpt_counts.iter().enumerate().filter(|(_, &c)| c > 0).map(|(i, &c)| (c, i)).collect();
    by_count.sort_unstable();
    let (median_count, median_rcpt) = by_count[by_count.len() / 2];
    let (top_count, top_rcpt) = *by_count.last().expect("some recipients");
    // The sender at the median of those with mail (counted whether or not a message got the null sender instead,
    // so its count is an upper bound), in upper case: sender search is case-insensitive.
    let mut senders_by_count: Vec<(u32, usize)> =
        sender_counts.iter().enumerate().filter(|(_, &c)| c > 0).map(|(i, &c)| (c, i)).collect();
    senders_by_count.sort_unstable();
    let median_sender = senders_by_count[senders_by_count.len() / 2].1;
    let target = (a.messages / 10_000).max(1) as u32;
    let rare = (0..vocab).min_by_key(|&w| word_counts[w].abs_diff(target)).expect("vocabulary");
    let one_percent = (a.messages / 100).max(1) as u32;
    let medium = (0..vocab).min_by_key(|&w| word_counts[w].abs_diff(one_percent)).expect("vocabulary");
    let common = (0..vocab).max_by_key(|&w| word_counts[w]).expect("vocabulary");
    let out = serde_json::json!({
        "store": a.store,
        "messages": a.messages,
        "seconds": round(elapsed),
        "rcpt": format!("user{median_rcpt}@dept{}.example.edu", median_rcpt % 50),
        "rcpt_messages": median_count,
        "top_rcpt": format!("user{top_rcpt}@dept{}.example.edu", top_rcpt % 50),
        "top_rcpt_messages": top_count,
        "rare_word": word(rare),
        "rare_word_messages": word_counts[rare],
        "medium_word": word(medium),
        "medium_word_messages": word_counts[medium],
        "common_word": word(common),
        "common_word_messages": word_counts[common],
        "sender": format!("NEWS{median_sender}@SENDER{}.EXAMPLE.COM", median_sender % 997),
        "sender_messages": sender_counts[median_sender],
        "message_id": sample_message_id,
        "index_bytes": std::fs::metadata(&index_path).map(|m| m.len()).unwrap_or(0),
    });
    println!("{out}");
}

fn round(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}
