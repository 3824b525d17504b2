//! Helpers for the purge benchmark (`scripts/bench-purge`).
//!
//! ```text
//! bench_purge populate --store DIR --messages N [--verdict V]   # N holds through Store::hold, real blobs
//! bench_purge probe --store DIR --stop FILE                     # holds every 20 ms until FILE exists;
//!                                                               # prints {"holds":n,"max_wait_ms":..,"p99_ms":..}
//! ```
//! `populate` is meant to run under eatmydata: the fixture's durability is not what is measured.

use std::io::Cursor;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use quarantine_store::{HoldRequest, Store};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let store = PathBuf::from(get("--store").expect("--store DIR"));
    match args.get(1).map(String::as_str) {
        Some("populate") => {
            let n: u64 = get("--messages").map(|s| s.parse().expect("--messages N")).unwrap_or(100_000);
            let verdict = get("--verdict").unwrap_or_else(|| "BENCH".into());
            let mut s = Store::open(&store, Duration::from_secs(60)).expect("open store");
            let started = Instant::now();
            for i in 0..n {
                // 2-20 KB: purge cost is per message and per blob (rows, unlink), not per byte.
                let size = 2048 + (i.wrapping_mul(2_654_435_761) % 18_432) as usize;
                let mut body = format!(
                    "From: sender{}@example.org\r\nTo: rcpt{}@example.edu\r\nSubject: bench message {i}\r\n\
                     Message-ID: <{i}@bench>\r\n\r\n",
                    i % 997,
                    i % 5003
                )
                .into_bytes();
                while body.len() < size {
                    body.extend_from_slice(format!("line {i} {} of the body text\r\n", body.len()).as_bytes());
                }
                let req = HoldRequest {
                    from: format!("sender{}@example.org", i % 997),
                    recipients: vec![format!("rcpt{}@example.edu", i % 5003)],
                    verdict: verdict.clone(),
                    ..Default::default()
                };
                s.hold(&req, &mut Cursor::new(body)).expect("hold");
            }
            eprintln!("populated {n} messages in {:.1}s", started.elapsed().as_secs_f64());
        }
        Some("probe") => {
            let stop = PathBuf::from(get("--stop").expect("--stop FILE"));
            let mut waits: Vec<f64> = Vec::new();
            let mut i = 0u64;
            while !stop.exists() {
                let started = Instant::now();
                let mut s = Store::open(&store, Duration::from_secs(60)).expect("open store");
                s.defer_checkpoints().expect("hold mode"); // as `quarantine hold` does
                let req = HoldRequest {
                    from: "probe@example.org".into(),
                    recipients: vec!["probe@example.edu".into()],
                    verdict: "PROBE".into(),
                    ..Default::default()
                };
                let body = format!("Subject: probe {i}\r\n\r\nprobe {i}\r\n");
                s.hold(&req, &mut Cursor::new(body.into_bytes())).expect("probe hold");
                waits.push(started.elapsed().as_secs_f64() * 1000.0); // acknowledged here
                s.checkpoint_after_ack();
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            waits.sort_by(|a, b| a.total_cmp(b));
            let p99 = waits.get(waits.len().saturating_sub(1) * 99 / 100).copied().unwrap_or(0.0);
            println!(
                "{{\"holds\":{},\"max_wait_ms\":{:.1},\"p99_ms\":{:.1}}}",
                waits.len(),
                waits.last().copied().unwrap_or(0.0),
                p99
            );
        }
        _ => {
            eprintln!("usage: bench_purge populate|probe --store DIR ...");
            std::process::exit(2);
        }
    }
}
