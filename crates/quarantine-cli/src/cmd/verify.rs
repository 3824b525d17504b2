//! `quarantine verify [--deep]`: exit 1 on any missing or corrupt blob, so cron and monitoring can act on it.

use super::{CmdResult, Context};
use crate::exit::Status;
use crate::output::{escape, TermProgress};
use clap::Args;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Also decompress every blob and check it against its BLAKE3 name.
    #[arg(long)]
    pub deep: bool,
    /// One JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Context, a: VerifyArgs) -> CmdResult {
    let store = ctx.open()?;
    let report = store.verify(a.deep, &TermProgress::new())?;
    if a.json {
        out!("{}", serde_json::to_string(&report).map_err(std::io::Error::from)?);
    } else {
        for p in &report.missing {
            out!("MISSING  {}  messages {}  ({})", escape(&p.hash), p.messages.join(" "), escape(&p.detail));
        }
        for p in &report.corrupt {
            out!("CORRUPT  {}  messages {}  ({})", escape(&p.hash), p.messages.join(" "), escape(&p.detail));
        }
        for o in &report.orphans {
            out!("orphan   {}", escape(&o.display().to_string()));
        }
        for t in &report.stale_tmp {
            out!("stale    {}", escape(&t.display().to_string()));
        }
        for b in &report.spool_corrupt {
            out!("SPOOL    {}  ({})", escape(&b.path.display().to_string()), escape(&b.reason));
        }
        for b in &report.spool_bad {
            out!("BAD      {}  ({})", escape(&b.path.display().to_string()), escape(&b.reason));
        }
        out!(
            "spool: {} pending{}, {} corrupt, {} in spool/bad/",
            report.spool_pending,
            if a.deep { " (trailers checked)" } else { "" },
            report.spool_corrupt.len(),
            report.spool_bad.len()
        );
        out!(
            "{} blob(s) checked{}, {} missing, {} corrupt, {} orphan(s), {} stale temp file(s)",
            report.blobs_checked,
            if a.deep { " deeply" } else { "" },
            report.missing.len(),
            report.corrupt.len(),
            report.orphans.len(),
            report.stale_tmp.len()
        );
    }
    Ok(if report.is_clean() { Status::Success } else { Status::Failure })
}
