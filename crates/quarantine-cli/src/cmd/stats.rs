//! `quarantine stats [--json]`: totals from the index and the blob tree. `stats --since T --by
//! hour|verdict|scanner|scanner-version`: the messages of a period grouped, as a table with a bar chart sized to
//! the terminal (or `--json`), a purge freeze shown first.

use std::io::Write;

use clap::Args;
use quarantine_store::Stats;

use super::{CmdError, CmdResult, Context};
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
    /// Only messages received at or after T (HH:MM, YYYY-MM-DD, 6h, yesterday...); groups them (--by, default
    /// verdict).
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// Group by hour, verdict, scanner or scanner-version, with a bar chart (e.g. `--since 00:00 --by hour`).
    #[arg(long, value_name = "KEY")]
    pub by: Option<String>,
}

pub fn run(ctx: &Context, a: StatsArgs) -> CmdResult {
    if a.since.is_some() || a.by.is_some() {
        return grouped(ctx, &a);
    }
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
    if g.index_shared {
        // The local index.sqlite is only a marker: the index's size is the database's, on its server.
        s.push_str(&format!(
            "on disk: {} (blobs {}); index: the shared PostgreSQL database, {}\n",
            size(g.disk_bytes),
            size(g.blob_disk_bytes),
            size(g.index_bytes)
        ));
    } else {
        s.push_str(&format!(
            "on disk: {} (index {}, blobs {})\n",
            size(g.disk_bytes),
            size(g.index_bytes),
            size(g.blob_disk_bytes)
        ));
    }
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

/// `stats --since T --by KEY`.
fn grouped(ctx: &Context, a: &StatsArgs) -> CmdResult {
    let by: quarantine_store::StatsBy =
        a.by.as_deref().unwrap_or("verdict").parse().map_err(|e: String| CmdError::Usage(escape(&e)))?;
    let since = super::selectors::time_flag("--since", a.since.as_deref())?;
    let store = ctx.open()?;
    let frozen = store.frozen()?;
    let buckets = store.stats_by(since, by)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let v = serde_json::json!({
            "since": since.map(quarantine_store::rfc3339_us),
            "by": by,
            "frozen": frozen,
            "buckets": buckets,
        });
        writeln!(out, "{v}")?;
        out.flush()?;
        return Ok(Status::Success);
    }
    let mut s = String::new();
    if let Some(f) = &frozen {
        let by = if f.actor.is_empty() { String::new() } else { format!(" (by {}, {})", f.actor, f.at) };
        s.push_str(&format!("PURGE IS FROZEN: {}\n\n", escape(&format!("{}{by}", f.reason))));
    }
    let width = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        terminal_size::terminal_size().map(|(w, _)| w.0 as usize)
    } else {
        std::env::var("COLUMNS").ok().and_then(|c| c.trim().parse::<usize>().ok())
    }
    .unwrap_or(80);
    s.push_str(&chart(&buckets, by, width));
    out.write_all(s.as_bytes())?;
    out.flush()?;
    Ok(Status::Success)
}

/// The table with a bar per row, the bars scaled to the largest count and to what is left of `width`.
fn chart(buckets: &[quarantine_store::StatsBucket], by: quarantine_store::StatsBy, width: usize) -> String {
    use quarantine_store::StatsBy;
    if buckets.is_empty() {
        return "no messages in that time\n".into();
    }
    let head = match by {
        StatsBy::Hour => "HOUR",
        StatsBy::Verdict => "VERDICT",
        StatsBy::Scanner => "SCANNER",
        StatsBy::ScannerVersion => "SCANNER VERSION",
    };
    let keys: Vec<String> = buckets.iter().map(|b| escape(b.key.as_deref().unwrap_or("(none)"))).collect();
    // Keys wider than a third of the line are cut, so the bars keep their room.
    let limit = (width / 3).max(12);
    let keys: Vec<String> = keys
        .into_iter()
        .map(|k| if k.chars().count() > limit { k.chars().take(limit - 1).collect::<String>() + "…" } else { k })
        .collect();
    let kw = keys.iter().map(|k| k.chars().count()).max().unwrap_or(0).max(head.len());
    let counts: Vec<String> = buckets.iter().map(|b| thousands(b.messages)).collect();
    let cw = counts.iter().map(|c| c.len()).max().unwrap_or(0).max("MESSAGES".len());
    let sizes: Vec<String> = buckets.iter().map(|b| crate::output::human_bytes(b.bytes)).collect();
    let sw = sizes.iter().map(|c| c.chars().count()).max().unwrap_or(0).max("BYTES".len());
    let bar_room = width.saturating_sub(kw + cw + sw + 6).max(10);
    let top = buckets.iter().map(|b| b.messages).max().unwrap_or(0).max(1);
    let total: u64 = buckets.iter().map(|b| b.messages).sum();
    let mut s = format!("{head:<kw$}  {:>cw$}  {:>sw$}\n", "MESSAGES", "BYTES");
    for ((k, c), (sz, b)) in keys.iter().zip(&counts).zip(sizes.iter().zip(buckets)) {
        let pad = kw - k.chars().count();
        s.push_str(&format!("{k}{}  {c:>cw$}  {sz:>sw$}  {}\n", " ".repeat(pad), bar(b.messages, top, bar_room)));
    }
    s.push_str(&format!("{} message(s) in {} group(s)\n", thousands(total), buckets.len()));
    s
}

/// A bar of `n / top` of `room` cells in eighths of a block; any non-zero count shows at least a sliver.
fn bar(n: u64, top: u64, room: usize) -> String {
    const PARTS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let eighths = ((n as u128 * room as u128 * 8) / top.max(1) as u128) as usize;
    let eighths = if n > 0 { eighths.max(1) } else { 0 };
    let mut b = "█".repeat(eighths / 8);
    if eighths % 8 > 0 {
        b.push(PARTS[eighths % 8]);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_and_never_hide_a_count() {
        assert_eq!(bar(10, 10, 4), "████");
        assert_eq!(bar(5, 10, 4), "██");
        assert_eq!(bar(1, 1000, 4), "▏");
        assert_eq!(bar(0, 10, 4), "");
        let b = vec![
            quarantine_store::StatsBucket { key: Some("PMX:VIRUS".into()), messages: 14_212, bytes: 1 << 30 },
            quarantine_store::StatsBucket { key: None, messages: 40, bytes: 1000 },
        ];
        for width in [40, 80, 200] {
            let c = chart(&b, quarantine_store::StatsBy::Verdict, width);
            for line in c.lines() {
                assert!(line.chars().count() <= width.max(40), "{width}: {line:?}");
            }
            assert!(c.contains("(none)") && c.contains("14,212"), "{c}");
        }
    }
}
