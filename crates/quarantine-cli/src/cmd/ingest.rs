//! `quarantine ingest [--watch] [--json]`: spool files into blobs and the index (DESIGN section 4).

use std::time::Duration;

use clap::Args;
use quarantine_store::Store;
use quarantine_store::{IngestOptions, IngestReport, SpoolWatcher};

use super::{CmdResult, Context};
use crate::exit::Status;
use crate::output::escape;

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Keep draining: wait for new spool files (inotify, else polling every 200 ms) until killed.
    #[arg(long)]
    pub watch: bool,
    /// One JSON object per run (per drain with --watch) instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Staging threads (they mostly wait on fsync; many at once share journal commits).
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub jobs: usize,
    /// Who, for the audit log (default $SUDO_USER, else $USER).
    #[arg(long, value_name = "NAME")]
    pub actor: Option<String>,
}

pub fn run(ctx: &Context, a: IngestArgs) -> CmdResult {
    let mut store = ctx.open_without_ingest()?;
    let mut opts = IngestOptions::drain(quarantine_store::actor(a.actor.as_deref()));
    opts.jobs = a.jobs.max(1);
    opts.spike = ctx.config.spike;
    if !a.watch {
        let report = store.ingest(&opts)?;
        print(&report, a.json)?;
        return Ok(if report.bad.is_empty() { Status::Success } else { Status::Failure });
    }
    let watcher = SpoolWatcher::new(store.spool().dir());
    loop {
        let report = match drain(&mut store, &opts) {
            Ok(r) => r,
            // A shared index that is down delays indexing, never intake: the spool keeps the mail, and the next
            // round (after the wait below) connects again.
            Err(e) if e.is_outage() => {
                say!("quarantine ingest: {e}; the spool keeps the mail, retrying");
                watcher.wait(Duration::from_secs(5));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if report.batches > 0 || !report.bad.is_empty() {
            print(&report, a.json)?;
        }
        // Rescan at least every 5 s even with inotify: a missed event only delays, never loses.
        watcher.wait(Duration::from_secs(5));
    }
}

fn drain(store: &mut Store, opts: &IngestOptions) -> Result<IngestReport, quarantine_store::Error> {
    store.ingest(opts)
}

fn print(r: &IngestReport, json: bool) -> Result<(), std::io::Error> {
    if json {
        out!("{}", serde_json::to_string(r).map_err(std::io::Error::from)?);
        return Ok(());
    }
    for b in &r.bad {
        out!("BAD  {}  ({})", escape(&b.path.display().to_string()), escape(&b.reason));
    }
    if let Some(s) = &r.spike {
        say!(
            "quarantine ingest: INCIDENT: purges frozen: {} {} in the last hour (7-day hourly median {}); \
             `quarantine stats` shows it, `quarantine thaw` lifts it",
            s.last_hour,
            escape(&s.verdict),
            s.median
        );
    }
    for w in &r.warnings {
        say!("quarantine ingest: warning: {}", escape(w));
    }
    out!(
        "ingested {} new message(s), {} merged into held ones ({} recipient(s) added), {} already purged, {} bad; \
         {} batch(es), {} pending",
        r.ingested,
        r.merged,
        r.recipients_added,
        r.dropped,
        r.bad.len(),
        r.batches,
        r.pending
    );
    Ok(())
}
