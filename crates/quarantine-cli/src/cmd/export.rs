//! `quarantine export ID... | SELECTORS --to DIR [--format eml|mbox]`: originals out as files, audited.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use quarantine_store::{ExportFormat as Format, ExportRequest};

use super::{selectors, CmdError, CmdResult, Context};
use crate::cmd::selectors::SelectorArgs;
use crate::exit::Status;
use crate::output::{escape, TermProgress};

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Message ids to export (the same as --id; selectors narrow them further).
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    #[command(flatten)]
    pub sel: SelectorArgs,
    /// The directory to write to, created (0700) if missing. Existing files are never overwritten.
    #[arg(long, value_name = "DIR", help_heading = "Export")]
    pub to: PathBuf,
    /// eml: <id>.eml (the original bytes) and <id>.json (envelope, verdict, times) per message; mbox: one
    /// mboxrd file with a .jsonl of the index records beside it.
    #[arg(long, value_enum, default_value_t = FormatArg::Eml, help_heading = "Export")]
    pub format: FormatArg,
    /// Export every live message when no id or selector is given.
    #[arg(long, help_heading = "Export")]
    pub all: bool,
    /// Who is exporting, for the audit log (default: $SUDO_USER, else $USER).
    #[arg(long, value_name = "NAME", help_heading = "Export")]
    pub actor: Option<String>,
    /// Why, for the audit log.
    #[arg(long, value_name = "TEXT", help_heading = "Export")]
    pub reason: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Eml,
    Mbox,
}

pub fn run(ctx: &Context, a: ExportArgs) -> CmdResult {
    let mut given = a.sel.clone();
    given.id.extend(a.ids.iter().cloned());
    let sel = selectors::resolve(&given)?;
    if sel.is_empty() && !a.all {
        return Err(CmdError::Usage(
            "export needs message ids or selectors (or --all to export every live message)".into(),
        ));
    }
    let format = match a.format {
        FormatArg::Eml => Format::Eml,
        FormatArg::Mbox => Format::Mbox,
    };
    let actor = quarantine_store::actor(a.actor.as_deref());
    let mut selection = serde_json::json!({ "selector": sel });
    for (k, v) in [("since", &given.since), ("until", &given.until)] {
        if let Some(v) = v {
            selection[k] = serde_json::Value::String(v.clone());
        }
    }
    let req = ExportRequest { dir: &a.to, format, actor: &actor, reason: a.reason.as_deref(), selection };
    let mut store = ctx.open()?;
    selectors::require_known_ids(&store, &sel)?;
    let report = store.export(&sel, &req, &TermProgress::new())?;
    if report.matched == 0 {
        out!("no messages match");
        return Ok(Status::Success);
    }
    for f in &report.failed {
        say!("quarantine: export {}: {}", f.id, escape(&f.error));
    }
    if format == Format::Mbox {
        for f in &report.files {
            out!("{}", escape(&f.display().to_string()));
        }
    }
    out!(
        "exported {} of {} message(s), {} of originals, to {} ({}){}",
        report.exported,
        report.matched,
        crate::output::human_bytes(report.bytes),
        escape(&a.to.display().to_string()),
        format.name(),
        if report.failed.is_empty() { String::new() } else { format!("; {} failed", report.failed.len()) }
    );
    Ok(if report.failed.is_empty() { Status::Success } else { Status::Failure })
}
