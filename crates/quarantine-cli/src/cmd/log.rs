//! `quarantine log [--since T] [--json]`: the append-only audit trail, oldest first. `--verify` recomputes its hash
//! chain (exit 1 naming the first bad row), `--head` prints the hash to keep as an anchor, `--from-anchor HASH`
//! proves a head exported earlier is still in the trail (the one way to detect a cut tail).

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
    /// JSON Lines: one object per entry (seq, at, actor, action, selection, counts, reason, prev_hash, hash).
    #[arg(long)]
    pub json: bool,
    /// Recompute the hash chain of the whole trail; exit 1 naming the first row that was edited, removed or
    /// inserted. A cut tail is only detectable against an anchor (--from-anchor).
    #[arg(long, conflicts_with_all = ["since", "action", "head"])]
    pub verify: bool,
    /// With --verify: the head hash exported earlier by `log --head`; exit 1 unless that row is still in the trail.
    #[arg(long, value_name = "HASH", requires = "verify")]
    pub from_anchor: Option<String>,
    /// Print the hash of the last audit row (an anchor to keep outside the store, for --verify --from-anchor).
    #[arg(long, conflicts_with_all = ["since", "action"])]
    pub head: bool,
}

pub fn run(ctx: &Context, a: LogArgs) -> CmdResult {
    let since = super::selectors::time_flag("--since", a.since.as_deref())?;
    if let Some(a) = &a.from_anchor {
        if a.len() != 64 || !a.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CmdError::Usage(format!("--from-anchor {}: not a hash (64 hex digits)", escape(a))));
        }
    }
    let store = ctx.open()?;
    if a.head {
        let head = store.audit_head()?;
        if a.json {
            out!("{}", serde_json::to_string(&head).map_err(std::io::Error::from)?);
        } else {
            match head {
                Some(h) => out!("{}", escape(&h.hash)),
                None => return Err(CmdError::Usage("the audit trail is empty: no head to export yet".into())),
            }
        }
        return Ok(Status::Success);
    }
    if a.verify {
        let r = store.verify_audit(a.from_anchor.as_deref())?;
        if a.json {
            out!("{}", serde_json::to_string(&r).map_err(std::io::Error::from)?);
        }
        return Ok(match &r.problem {
            Some(p) => {
                say!("quarantine log --verify: {}", escape(&p.detail));
                Status::Failure
            }
            None => {
                if !a.json {
                    let head = r.head.as_ref().map(|h| format!("; head #{} {}", h.seq, h.hash)).unwrap_or_default();
                    let anchor = r.anchor_seq.map(|s| format!("; anchor is row #{s}")).unwrap_or_default();
                    out!("audit trail intact: {} row(s){head}{anchor}", r.rows);
                }
                Status::Success
            }
        });
    }
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
