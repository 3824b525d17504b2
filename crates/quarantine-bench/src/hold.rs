//! The hold benchmark: `quarantine hold` against `maildir-deliver`, one process per message, the message written
//! to the child's stdin through a pipe as Postfix's pipe(8) does. Both sides do a complete durable delivery of
//! the same corpus to the same filesystem; rounds alternate which side goes first.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use crate::corpus::{self, Attachment};
use crate::machine::{self, Machine};
use crate::{doc, rss};

/// Goals from the store issue.
const GOAL_RATIO: f64 = 0.8;
const GOAL_RSS_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Args)]
pub struct HoldArgs {
    /// Messages per round.
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// Rounds; each round delivers every message once with each method, alternating which goes first.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// How the two methods' deliveries are ordered within a round.
    #[arg(long, value_enum, default_value_t = Schedule::Interleaved)]
    schedule: Schedule,
    /// Scratch location (a temporary directory is made inside it). Must be the filesystem you care about: fsync
    /// cost is the figure. Default /var/tmp (not /tmp, which is often tmpfs).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
    /// Rewrite the `bench:hold` section of this Markdown file with the results.
    #[arg(long, value_name = "FILE")]
    update_doc: Option<PathBuf>,
    /// The quarantine binary (default: next to this executable).
    #[arg(long, value_name = "PATH")]
    quarantine: Option<PathBuf>,
    /// The maildir-deliver binary (default: next to this executable).
    #[arg(long, value_name = "PATH")]
    maildir_deliver: Option<PathBuf>,
    /// Seed of the message corpus.
    #[arg(long, default_value_t = 20_250_114)]
    seed: u64,
    /// Warm-up deliveries per method before the first round (not counted).
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Size in MiB of the message whose hold's peak RSS is measured.
    #[arg(long, default_value_t = 20)]
    rss_message_mib: usize,
    /// Keep the scratch directory (corpus, last store) instead of deleting it.
    #[arg(long)]
    keep: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Hold = 0,
    Maildir = 1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Schedule {
    /// Each message is delivered by both methods back to back, who goes first alternating: both see the same
    /// machine, which matters on a shared or virtualised host whose disk latency drifts.
    Interleaved,
    /// All messages with one method, then all with the other (`sync` in between), who goes first alternating
    /// per round.
    Batched,
}

impl Schedule {
    fn name(self) -> &'static str {
        match self {
            Schedule::Interleaved => "interleaved per message",
            Schedule::Batched => "batched per method",
        }
    }
}

impl Method {
    fn label(self) -> &'static str {
        match self {
            Method::Hold => "quarantine hold",
            Method::Maildir => "maildir-deliver",
        }
    }
}

struct Bins {
    quarantine: PathBuf,
    maildir_deliver: PathBuf,
    /// This executable, which is also the RSS helper (`quarantine-bench rss-of`).
    bench: PathBuf,
}

impl Bins {
    fn resolve(args: &HoldArgs) -> Result<Bins, String> {
        let exe = std::env::current_exe().map_err(|e| format!("locating this executable: {e}"))?;
        let dir = exe.parent().unwrap_or(Path::new("."));
        let pick = |given: &Option<PathBuf>, name: &str| -> Result<PathBuf, String> {
            let p = given.clone().unwrap_or_else(|| dir.join(name));
            if p.is_file() {
                Ok(p)
            } else {
                Err(format!("{}: not found (build the workspace, or pass --{})", p.display(), name))
            }
        };
        Ok(Bins {
            quarantine: pick(&args.quarantine, "quarantine")?,
            maildir_deliver: pick(&args.maildir_deliver, "maildir-deliver")?,
            bench: exe.clone(),
        })
    }

    /// Copies the three executables into `dir` and returns the copies.
    fn snapshot(&self, dir: &Path) -> Result<Bins, String> {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let copy = |from: &Path, name: &str| -> Result<PathBuf, String> {
            let to = dir.join(name);
            fs::copy(from, &to).map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))?;
            Ok(to)
        };
        Ok(Bins {
            quarantine: copy(&self.quarantine, "quarantine")?,
            maildir_deliver: copy(&self.maildir_deliver, "maildir-deliver")?,
            bench: copy(&self.bench, "quarantine-bench")?,
        })
    }

    /// The argv of one delivery of `method` into `target`.
    fn argv(&self, method: Method, target: &Path) -> Vec<OsString> {
        match method {
            Method::Hold => {
                let mut v: Vec<OsString> = vec![self.quarantine.clone().into(), "--store".into(), target.into()];
                v.extend(["hold", "--verdict", "SPAM", "--from", "a@b", "--", "c@d"].map(OsString::from));
                v
            }
            Method::Maildir => vec![self.maildir_deliver.clone().into(), target.into()],
        }
    }

    /// Creates an empty delivery target: a fresh store, or a Maildir with tmp/new/cur.
    fn prepare(&self, method: Method, target: &Path) -> Result<(), String> {
        match method {
            Method::Hold => {
                let out = Command::new(&self.quarantine)
                    .arg("--store")
                    .arg(target)
                    .arg("init")
                    .output()
                    .map_err(|e| format!("{}: {e}", self.quarantine.display()))?;
                if !out.status.success() {
                    return Err(format!("quarantine init failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
                }
            }
            Method::Maildir => {
                for sub in ["tmp", "new", "cur"] {
                    fs::create_dir_all(target.join(sub)).map_err(|e| format!("{}: {e}", target.display()))?;
                }
            }
        }
        Ok(())
    }
}

/// What one method's deliveries of one round cost.
#[derive(Default)]
struct Tally {
    /// Wall time of each delivery: spawn to exit, what the MTA waits for.
    latencies: Vec<Duration>,
    /// User + system CPU time of the delivery processes, in clock ticks.
    cpu_ticks: u64,
}

/// One delivery of `data` by `argv`, one process, the bytes written to its stdin through a pipe.
fn deliver(argv: &[OsString], label: &str, path: &Path, data: &[u8], tally: &mut Tally) -> Result<(), String> {
    let cpu_before = children_cpu_ticks();
    let t = Instant::now();
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", Path::new(&argv[0]).display()))?;
    let written = child.stdin.take().expect("stdin is piped").write_all(data);
    let out = child.wait_with_output().map_err(|e| format!("waiting for {label}: {e}"))?;
    let elapsed = t.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{label} of {} failed ({}): {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    written.map_err(|e| format!("writing {} to {label}: {e}", path.display()))?;
    tally.latencies.push(elapsed);
    tally.cpu_ticks += children_cpu_ticks().saturating_sub(cpu_before);
    Ok(())
}

/// User + system time of all waited-for children so far, in 1/100 s (the tick the report divides by).
fn children_cpu_ticks() -> u64 {
    use nix::sys::resource::{getrusage, UsageWho};
    let Ok(ru) = getrusage(UsageWho::RUSAGE_CHILDREN) else { return 0 };
    let us = |t: nix::sys::time::TimeVal| (t.tv_sec() as u64) * 1_000_000 + t.tv_usec() as u64;
    (us(ru.user_time()) + us(ru.system_time())) / 10_000
}

const USER_HZ: f64 = 100.0;

/// Flushes everything so one batch's writeback does not land on the next batch's fsyncs.
fn settle() {
    let _ = Command::new("sync").status();
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct MethodResult {
    msgs_per_s: Vec<f64>,
    mb_per_s: Vec<f64>,
    latencies: Vec<Duration>,
    cpu_ticks: u64,
}

impl MethodResult {
    fn new() -> MethodResult {
        MethodResult { msgs_per_s: Vec::new(), mb_per_s: Vec::new(), latencies: Vec::new(), cpu_ticks: 0 }
    }

    /// Adds one round. Throughput is deliveries over the time spent waiting for them (the sum of their
    /// latencies), so the other method's deliveries in an interleaved round do not count against this one.
    fn add(&mut self, t: Tally, bytes: u64) {
        let s = t.latencies.iter().sum::<Duration>().as_secs_f64();
        self.msgs_per_s.push(t.latencies.len() as f64 / s);
        self.mb_per_s.push(bytes as f64 / 1e6 / s);
        self.latencies.extend(t.latencies);
        self.cpu_ticks += t.cpu_ticks;
    }

    /// Mean CPU time (user + system) of one delivery process.
    fn cpu_ms_per_msg(&self) -> f64 {
        self.cpu_ticks as f64 / USER_HZ * 1e3 / self.latencies.len().max(1) as f64
    }

    fn sorted_latencies(&self) -> Vec<Duration> {
        let mut l = self.latencies.clone();
        l.sort_unstable();
        l
    }

    fn to_json(&self) -> serde_json::Value {
        let l = self.sorted_latencies();
        json!({
            "msgs_per_s_median": median(&self.msgs_per_s),
            "msgs_per_s_rounds": self.msgs_per_s,
            "mb_per_s_median": median(&self.mb_per_s),
            "latency_ms_p50": percentile(&l, 0.5).as_secs_f64() * 1e3,
            "latency_ms_p99": percentile(&l, 0.99).as_secs_f64() * 1e3,
            "cpu_ms_per_msg": self.cpu_ms_per_msg(),
        })
    }
}

struct SizeStats {
    min: usize,
    median: usize,
    mean: f64,
    max: usize,
    total: u64,
}

impl SizeStats {
    fn of(sizes: &[usize]) -> SizeStats {
        let mut s = sizes.to_vec();
        s.sort_unstable();
        let total: u64 = s.iter().map(|&x| x as u64).sum();
        SizeStats {
            min: s.first().copied().unwrap_or(0),
            median: s.get(s.len() / 2).copied().unwrap_or(0),
            mean: total as f64 / s.len().max(1) as f64,
            max: s.last().copied().unwrap_or(0),
            total,
        }
    }
}

struct Report {
    machine: Machine,
    scratch: PathBuf,
    messages: usize,
    rounds: usize,
    schedule: Schedule,
    seed: u64,
    sizes: SizeStats,
    hold: MethodResult,
    maildir: MethodResult,
    /// Blob bytes / original bytes of one round's store.
    stored_fraction: f64,
    index_bytes: u64,
    rss_message_bytes: usize,
    rss_hold_kib: u64,
    rss_maildir_kib: u64,
    date: String,
    command: String,
}

impl Report {
    fn ratio(&self) -> f64 {
        median(&self.hold.msgs_per_s) / median(&self.maildir.msgs_per_s)
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "benchmark": "hold",
            "date": self.date,
            "command": self.command,
            "machine": self.machine.to_json(),
            "scratch": self.scratch,
            "messages": self.messages,
            "rounds": self.rounds,
            "schedule": self.schedule.name(),
            "seed": self.seed,
            "sizes": {
                "min": self.sizes.min, "median": self.sizes.median, "mean": self.sizes.mean,
                "max": self.sizes.max, "total_per_round": self.sizes.total,
            },
            "hold": self.hold.to_json(),
            "baseline": self.maildir.to_json(),
            "ratio": self.ratio(),
            "goal_ratio": GOAL_RATIO,
            "stored_fraction": self.stored_fraction,
            "index_bytes": self.index_bytes,
            "rss": {
                "message_bytes": self.rss_message_bytes,
                "hold_kib": self.rss_hold_kib,
                "baseline_kib": self.rss_maildir_kib,
                "goal_bytes": GOAL_RSS_BYTES,
            },
        })
    }

    fn markdown(&self) -> String {
        let m = &self.machine;
        let (h, b) = (&self.hold, &self.maildir);
        let (hl, bl) = (h.sorted_latencies(), b.sorted_latencies());
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        let rounds = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ");
        let rss_bytes = self.rss_hold_kib * 1024;
        let ratio = self.ratio();
        let met = |ok: bool| if ok { "met" } else { "**not met**" };
        let mut s = String::new();
        let _ = writeln!(s, "Measured {} with `{}`.\n", self.date, self.command);
        let _ = writeln!(s, "| | |\n|---|---|");
        let _ = writeln!(
            s,
            "| Machine | {} CPUs ({}), Linux {}; load average {} at start |",
            m.nproc, m.cpu, m.kernel, m.load_at_start
        );
        let _ = writeln!(
            s,
            "| Scratch filesystem | {} on {} (mounted at {}) |",
            m.fs_type,
            m.fs_source,
            m.mount_point.display()
        );
        let _ = writeln!(
            s,
            "| Messages | {} per round × {} rounds, {}, first method alternating (seed {}) |",
            self.messages,
            self.rounds,
            self.schedule.name(),
            self.seed
        );
        let _ = writeln!(
            s,
            "| Sizes | log-normal clamped to 2 KiB–1 MiB: min {}, median {}, mean {}, max {}; {} per round |",
            kb(self.sizes.min as f64),
            kb(self.sizes.median as f64),
            kb(self.sizes.mean),
            kb(self.sizes.max as f64),
            mb(self.sizes.total as f64)
        );
        let _ = writeln!(
            s,
            "| Stored size | blobs {:.0} % of the original bytes; index {} for {} messages |",
            self.stored_fraction * 100.0,
            mb(self.index_bytes as f64),
            self.messages
        );
        let _ = writeln!(s);
        let _ = writeln!(s, "| | `quarantine hold` | `maildir-deliver` (baseline) |\n|---|---:|---:|");
        let _ = writeln!(
            s,
            "| msgs/s (median of rounds) | **{:.0}** | **{:.0}** |",
            median(&h.msgs_per_s),
            median(&b.msgs_per_s)
        );
        let _ = writeln!(s, "| msgs/s per round | {} | {} |", rounds(&h.msgs_per_s), rounds(&b.msgs_per_s));
        let _ = writeln!(s, "| MB/s (median) | {:.1} | {:.1} |", median(&h.mb_per_s), median(&b.mb_per_s));
        let _ = writeln!(s, "| latency p50 | {} | {} |", ms(percentile(&hl, 0.5)), ms(percentile(&bl, 0.5)));
        let _ = writeln!(s, "| latency p99 | {} | {} |", ms(percentile(&hl, 0.99)), ms(percentile(&bl, 0.99)));
        let _ = writeln!(
            s,
            "| CPU per message (user + sys) | {:.1} ms | {:.1} ms |",
            h.cpu_ms_per_msg(),
            b.cpu_ms_per_msg()
        );
        let _ = writeln!(
            s,
            "| peak RSS, one {} MiB message | {} | {} |",
            self.rss_message_bytes / (1024 * 1024),
            mib(self.rss_hold_kib),
            mib(self.rss_maildir_kib)
        );
        let _ = writeln!(s);
        let _ = writeln!(s, "- **hold / baseline: {ratio:.2}×** (goal ≥ {GOAL_RATIO}×): {}", met(ratio >= GOAL_RATIO));
        let _ = writeln!(
            s,
            "- **peak RSS of a {} MiB hold: {}** (goal < 64 MiB): {}",
            self.rss_message_bytes / (1024 * 1024),
            mib(self.rss_hold_kib),
            met(rss_bytes < GOAL_RSS_BYTES)
        );
        s
    }

    fn summary(&self) -> String {
        let (h, b) = (&self.hold, &self.maildir);
        let (hl, bl) = (h.sorted_latencies(), b.sorted_latencies());
        let mut s = String::new();
        let _ = writeln!(
            s,
            "hold benchmark: {} messages x {} rounds ({}), {} per round, on {} ({})",
            self.messages,
            self.rounds,
            self.schedule.name(),
            mb(self.sizes.total as f64),
            self.machine.fs_type,
            self.scratch.display()
        );
        for (name, r, l) in [("quarantine hold", h, &hl), ("maildir-deliver", b, &bl)] {
            let _ = writeln!(
                s,
                "  {name:<16} {:>8.1} msgs/s  {:>7.1} MB/s  p50 {:>6.2} ms  p99 {:>6.2} ms  cpu {:>5.2} ms  rounds: {:?}",
                median(&r.msgs_per_s),
                median(&r.mb_per_s),
                percentile(l, 0.5).as_secs_f64() * 1e3,
                percentile(l, 0.99).as_secs_f64() * 1e3,
                r.cpu_ms_per_msg(),
                r.msgs_per_s.iter().map(|x| x.round() as i64).collect::<Vec<_>>()
            );
        }
        let _ = writeln!(s, "  ratio hold/baseline {:.2} (goal >= {GOAL_RATIO})", self.ratio());
        let _ = writeln!(
            s,
            "  peak RSS of a {} MiB hold: {} (baseline {}; goal < 64 MiB)",
            self.rss_message_bytes / (1024 * 1024),
            mib(self.rss_hold_kib),
            mib(self.rss_maildir_kib)
        );
        let _ = writeln!(s, "  stored blobs: {:.0} % of the original bytes", self.stored_fraction * 100.0);
        s
    }
}

fn kb(bytes: f64) -> String {
    format!("{:.1} KB", bytes / 1e3)
}

fn mb(bytes: f64) -> String {
    format!("{:.1} MB", bytes / 1e6)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn run(args: HoldArgs) -> Result<(), String> {
    if args.messages == 0 || args.rounds == 0 {
        return Err("--messages and --rounds must be at least 1".into());
    }
    let bins = Bins::resolve(&args)?;
    let base = args.dir.clone().unwrap_or_else(|| PathBuf::from("/var/tmp"));
    fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    let scratch_dir = tempfile::Builder::new()
        .prefix("quarantine-bench.")
        .tempdir_in(&base)
        .map_err(|e| format!("{}: {e}", base.display()))?;
    let scratch = scratch_dir.path().to_path_buf();
    // Run private copies: a rebuild of the workspace during the run must neither break it nor change what is
    // measured.
    let bins = bins.snapshot(&scratch.join("bin"))?;
    let machine = Machine::probe(&scratch);
    if matches!(machine.fs_type.as_str(), "tmpfs" | "ramfs") {
        eprintln!(
            "warning: {} is on {}: fsync costs nothing there, so the ratio means little",
            base.display(),
            machine.fs_type
        );
    }

    // The corpus, on the same filesystem (it is read back from the page cache).
    let t = Instant::now();
    let sizes = corpus::sizes(args.seed, args.messages);
    let msg_dir = scratch.join("msgs");
    fs::create_dir(&msg_dir).map_err(|e| format!("{}: {e}", msg_dir.display()))?;
    let mut msgs = Vec::with_capacity(sizes.len());
    let mut real_sizes = Vec::with_capacity(sizes.len());
    for (i, &size) in sizes.iter().enumerate() {
        let m = corpus::message(args.seed, i, size, None);
        let p = msg_dir.join(format!("{i:06}.eml"));
        fs::write(&p, &m).map_err(|e| format!("{}: {e}", p.display()))?;
        real_sizes.push(m.len());
        msgs.push(p);
    }
    let sizes = SizeStats::of(&real_sizes);
    eprintln!(
        "corpus: {} messages, {} in {:.1}s under {}",
        msgs.len(),
        mb(sizes.total as f64),
        t.elapsed().as_secs_f64(),
        scratch.display()
    );
    settle();

    // Warm-up: page cache for both binaries and their libraries, dentries of the scratch filesystem.
    let warm = &msgs[..args.warmup.min(msgs.len())];
    for method in [Method::Hold, Method::Maildir] {
        let target = scratch.join("warmup");
        bins.prepare(method, &target)?;
        let argv = bins.argv(method, &target);
        for path in warm {
            let data = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            deliver(&argv, method.label(), path, &data, &mut Tally::default())?;
        }
        fs::remove_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
    }
    settle();

    let mut hold = MethodResult::new();
    let mut maildir = MethodResult::new();
    let mut stored_fraction = f64::NAN;
    let mut index_bytes = 0;
    for round in 0..args.rounds {
        let store = scratch.join(format!("round{round}-store"));
        let mdir = scratch.join(format!("round{round}-maildir"));
        let target = |m: Method| if m == Method::Hold { &store } else { &mdir };
        // Indexed by `Method as usize`: [hold, maildir].
        let mut tallies = [Tally::default(), Tally::default()];
        // Who goes first alternates per message (interleaved) or per round (batched), and between rounds.
        let first = |i: usize| {
            if (i + round).is_multiple_of(2) {
                [Method::Hold, Method::Maildir]
            } else {
                [Method::Maildir, Method::Hold]
            }
        };
        match args.schedule {
            Schedule::Interleaved => {
                bins.prepare(Method::Hold, &store)?;
                bins.prepare(Method::Maildir, &mdir)?;
                settle();
                for (i, path) in msgs.iter().enumerate() {
                    let data = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                    for m in first(i) {
                        deliver(&bins.argv(m, target(m)), m.label(), path, &data, &mut tallies[m as usize])?;
                    }
                }
            }
            Schedule::Batched => {
                for m in first(0) {
                    bins.prepare(m, target(m))?;
                    settle();
                    let argv = bins.argv(m, target(m));
                    for path in &msgs {
                        let data = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                        deliver(&argv, m.label(), path, &data, &mut tallies[m as usize])?;
                    }
                }
            }
        }
        stored_fraction = dir_bytes(&store.join("blobs")) as f64 / sizes.total as f64;
        index_bytes = ["index.sqlite", "index.sqlite-wal"]
            .iter()
            .map(|f| fs::metadata(store.join(f)).map(|m| m.len()).unwrap_or(0))
            .sum();
        let [h, b] = tallies;
        let rate = |t: &Tally| t.latencies.len() as f64 / t.latencies.iter().sum::<Duration>().as_secs_f64();
        eprintln!(
            "round {}/{}: quarantine hold {:.1} msgs/s, maildir-deliver {:.1} msgs/s, ratio {:.2}",
            round + 1,
            args.rounds,
            rate(&h),
            rate(&b),
            rate(&h) / rate(&b)
        );
        hold.add(h, sizes.total);
        maildir.add(b, sizes.total);
        if !(args.keep && round + 1 == args.rounds) {
            for t in [&store, &mdir] {
                fs::remove_dir_all(t).map_err(|e| format!("{}: {e}", t.display()))?;
            }
        }
        settle();
    }

    // Peak RSS of one large hold (and, for scale, of the baseline), the largest of three runs each.
    let rss_size = args.rss_message_mib * 1024 * 1024;
    let big = scratch.join("big.eml");
    let big_msg = corpus::message(args.seed, usize::MAX, rss_size, Some(Attachment::Binary));
    let rss_message_bytes = big_msg.len();
    fs::write(&big, big_msg).map_err(|e| format!("{}: {e}", big.display()))?;
    let mut rss_hold_kib = 0;
    let mut rss_maildir_kib = 0;
    for method in [Method::Hold, Method::Maildir] {
        let target = scratch.join("rss");
        bins.prepare(method, &target)?;
        for _ in 0..3 {
            let kib = rss::measure(&bins.bench, &bins.argv(method, &target), &big)?;
            match method {
                Method::Hold => rss_hold_kib = rss_hold_kib.max(kib),
                Method::Maildir => rss_maildir_kib = rss_maildir_kib.max(kib),
            }
        }
        fs::remove_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
    }

    let command =
        std::iter::once("quarantine-bench".to_string()).chain(std::env::args().skip(1)).collect::<Vec<_>>().join(" ");
    let report = Report {
        machine,
        scratch: scratch.clone(),
        messages: args.messages,
        rounds: args.rounds,
        schedule: args.schedule,
        seed: args.seed,
        sizes,
        hold,
        maildir,
        stored_fraction,
        index_bytes,
        rss_message_bytes,
        rss_hold_kib,
        rss_maildir_kib,
        date: machine::today_utc(),
        command,
    };

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json()).expect("JSON of plain values"));
    } else {
        print!("{}", report.summary());
    }
    if let Some(path) = &args.update_doc {
        doc::update_file(path, "hold", &report.markdown())?;
        eprintln!("updated the bench:hold section of {}", path.display());
    }
    if args.keep {
        let kept = scratch_dir.keep();
        eprintln!("kept {}", kept.display());
    }
    Ok(())
}
