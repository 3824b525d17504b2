//! `quarantine log [--since T] [--json]`: the append-only audit trail, oldest first.

use std::io::{BufWriter, Write};

use clap::Args;
use quarantine_store::AuditRow;

use super::{CmdError, CmdResult, Context};
use crate::exit::Status;
use crate::output::escape;

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Only entries at or after T (same forms as the selectors' --since: HH:MM, YYYY-MM-DD, 6h, yesterday...).
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// Only entries of this action (import, release, purge, export, freeze, ...; repeatable).
    #[arg(long, value_name = "ACTION")]
    pub action: Vec<String>,
    /// JSON Lines: one object per entry (seq, at, actor, action, selection, counts, reason).
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Context, a: LogArgs) -> CmdResult {
    let since = a
        .since
        .as_deref()
        .map(|s| quarantine_store::parse_time_now(s).map(|t| t.timestamp_micros()))
        .transpose()
        .map_err(|e| CmdError::Usage(format!("--since: {e}")))?;
    let store = ctx.open()?;
    let rows: Vec<AuditRow> = store
        .audit_log(since)?
        .into_iter()
        .filter(|r| a.action.is_empty() || a.action.iter().any(|x| x.eq_ignore_ascii_case(&r.action)))
        .collect();
    let mut out = BufWriter::new(std::io::stdout().lock());
    if a.json {
        for r in &rows {
            serde_json::to_writer(&mut out, r).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
        }
    } else if rows.is_empty() {
        writeln!(out, "no audit entries{}", if since.is_some() { " in that time" } else { "" })?;
    } else {
        for r in &rows {
            writeln!(out, "{}", line(r))?;
        }
    }
    out.flush()?;
    Ok(Status::Success)
}

/// `2026-11-23T06:41:10+01:00  #12  alice  export  exported=3 failed=0  selector={...}  reason: ...`, escaped.
fn line(r: &AuditRow) -> String {
    let counts = match &r.counts {
        serde_json::Value::Object(o) => o
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    };
    let selection = match &r.selection {
        serde_json::Value::Null => String::new(),
        serde_json::Value::Object(o) if o.is_empty() => String::new(),
        v => v.to_string(),
    };
    let mut s = format!("{}  #{}  {}  {}  {}", r.at, r.seq, r.actor, r.action, counts);
    if !selection.is_empty() {
        s.push_str(&format!("  {selection}"));
    }
    if let Some(why) = &r.reason {
        s.push_str(&format!("  reason: {why}"));
    }
    escape(&s)
}
