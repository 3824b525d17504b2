//! `quarantine stats [--json]`: totals from the index and the blob tree.

use std::io::Write;

use clap::Args;
use quarantine_store::Stats;

use super::{CmdResult, Context};
use crate::exit::Status;
use crate::output::escape;
use crate::output::thousands;

/// Days the table shows (`--json` has them all).
const DAYS_SHOWN: usize = 31;

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Context, a: StatsArgs) -> CmdResult {
    let store = ctx.open()?;
    let st = store.stats()?;
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer(&mut out, &st).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        out.write_all(text(&st).as_bytes())?;
    }
    out.flush()?;
    Ok(Status::Success)
}

fn text(st: &Stats) -> String {
    let size = crate::output::human_bytes;
    let mut s = String::new();
    if let Some(why) = &st.frozen {
        // `freeze` stores {"reason", "actor", "at"}; show any other value as it is.
        let field = |k: &str| why.get(k).and_then(|v| v.as_str()).filter(|v| !v.is_empty());
        let line = match (why.as_str(), field("reason")) {
            (Some(text), _) => text.to_string(),
            (None, Some(reason)) => {
                let mut l = reason.to_string();
                if let Some(by) = field("actor") {
                    l.push_str(&format!(" (by {by}"));
                    l.push_str(&field("at").map(|at| format!(", {at})")).unwrap_or_else(|| ")".into()));
                }
                l
            }
            (None, None) => why.to_string(),
        };
        s.push_str(&format!("PURGE IS FROZEN: {}\n\n", escape(&line)));
    }
    s.push_str(&format!(
        "{} message(s) held, {} ({} purged message(s) kept as tombstones)\n",
        thousands(st.messages),
        size(st.bytes),
        thousands(st.tombstones)
    ));
    let states: Vec<String> = st.recipients.iter().map(|(k, v)| format!("{k} {}", thousands(*v))).collect();
    s.push_str(&format!("recipients: {}\n", states.join(", ")));
    let g = &st.storage;
    let ratio = |r: Option<f64>| r.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "-".into());
    s.push_str(&format!(
        "storage: logical {}, unique {} (dedup {}), stored {} in {} blob(s) (compression {})\n",
        size(g.logical_bytes),
        size(g.unique_bytes),
        ratio(g.dedup_ratio),
        size(g.stored_bytes),
        thousands(g.blobs),
        ratio(g.compression_ratio)
    ));
    s.push_str(&format!(
        "on disk: {} (index {}, blobs {})\n",
        size(g.disk_bytes),
        size(g.index_bytes),
        size(g.blob_disk_bytes)
    ));
    let sp = &st.spool;
    let oldest = sp.oldest_age_s.map(|a| format!(", oldest {}s ago", a.round())).unwrap_or_default();
    s.push_str(&format!(
        "spool: {} pending ({}{oldest}), {} in spool/bad/{}\n",
        thousands(sp.pending),
        size(sp.bytes),
        thousands(sp.bad),
        if sp.bad > 0 { " (see `quarantine verify`)" } else { "" }
    ));

    if !st.by_verdict.is_empty() {
        let w = st.by_verdict.iter().map(|v| escape(&v.verdict).chars().count()).max().unwrap_or(0).max(7);
        s.push_str(&format!(
            "\n{:<w$}  {:>10}  {:>10}  {:>10}  LAST RECEIVED\n",
            "VERDICT", "MESSAGES", "BYTES", "TODAY"
        ));
        for v in &st.by_verdict {
            s.push_str(&format!(
                "{:<w$}  {:>10}  {:>10}  {:>10}  {}\n",
                escape(&v.verdict),
                thousands(v.messages),
                size(v.bytes),
                thousands(v.today),
                v.last_received
            ));
        }
    }
    if !st.by_day.is_empty() {
        s.push_str(&format!("\n{:<10}  {:>10}  {:>10}\n", "DAY", "MESSAGES", "BYTES"));
        let skip = st.by_day.len().saturating_sub(DAYS_SHOWN);
        if skip > 0 {
            s.push_str(&format!("({skip} earlier day(s): see --json)\n"));
        }
        for d in &st.by_day[skip..] {
            s.push_str(&format!("{:<10}  {:>10}  {:>10}\n", d.day, thousands(d.messages), size(d.bytes)));
        }
    }
    s
}
