//! `quarantine import`: batch intake of existing quarantines and mailboxes, with a progress bar on a terminal
//! and a summary at the end. Exit 0 when every message found was imported or already held, 1 when anything was
//! skipped or the store failed part way (what committed stays; re-running is safe).

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use quarantine_store::{ImportFormat as Format, ImportOptions, ImportReport, MboxVariant, DEFAULT_JOBS};

use super::{CmdError, CmdResult, Context};
use crate::exit::Status;
use crate::output::{escape, human_bytes, TermProgress};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FormatArg {
    /// A Maildir: new/ and cur/ (never tmp/), and its Maildir++ .subfolders.
    Maildir,
    /// mbox files (or directories of them); see --mbox-variant.
    Mbox,
    /// One message per file (or directories of such files).
    Eml,
    /// amavisd-new quarantine files (plain or .gz), envelope from X-Envelope-From/-To.
    Amavis,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MboxVariantArg {
    /// `>From `, `>>From `… lose one `>` (exact round trip).
    Mboxrd,
    /// Lines are kept as found (only `From ` was quoted, so `>From ` is ambiguous).
    Mboxo,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// What the paths hold.
    #[arg(long, value_enum)]
    pub format: FormatArg,
    /// The verdict recorded for every message, e.g. SPAM, PMX:VIRUS.
    #[arg(long)]
    pub verdict: String,
    /// The scanner that gave the verdict.
    #[arg(long)]
    pub scanner: Option<String>,
    /// Free text for the reason column (amavis files: default their X-Amavis-Alert).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Envelope sender for every message, instead of what the files say (`<>` for none).
    #[arg(long, value_name = "SENDER", allow_hyphen_values = true)]
    pub from: Option<String>,
    /// Envelope recipient for every message (repeatable), instead of what the files say.
    #[arg(long = "rcpt", value_name = "ADDR")]
    pub rcpt: Vec<String>,
    /// How `>From ` lines of an mbox are read.
    #[arg(long, value_enum, default_value = "mboxrd", value_name = "VARIANT")]
    pub mbox_variant: MboxVariantArg,
    /// Record when each message arrived at the source (Maildir name, mbox From line, file time) instead of
    /// now. Retention then counts from that date: a purge may remove old imports at once.
    #[arg(long)]
    pub keep_dates: bool,
    /// Staging threads (concurrent fsyncs are what makes a batch fast).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_JOBS)]
    pub jobs: usize,
    /// Messages per write transaction.
    #[arg(long, value_name = "N", default_value_t = 256, hide = true)]
    pub batch: usize,
    /// Who, for the audit log (default $SUDO_USER, else $USER).
    #[arg(long, value_name = "NAME")]
    pub actor: Option<String>,
    /// Print the summary as one JSON object (skipped messages included).
    #[arg(long)]
    pub json: bool,
    /// Files or directories to import.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

pub fn run(ctx: &Context, a: ImportArgs) -> CmdResult {
    let mut store = ctx.open()?;
    let format = match a.format {
        FormatArg::Maildir => Format::Maildir,
        FormatArg::Mbox => Format::Mbox,
        FormatArg::Eml => Format::Eml,
        FormatArg::Amavis => Format::Amavis,
    };
    let mut opts = ImportOptions::new(format, a.paths, a.verdict);
    opts.scanner = a.scanner;
    opts.reason = a.reason;
    opts.from = a.from;
    opts.rcpt = a.rcpt;
    opts.mbox_variant = match a.mbox_variant {
        MboxVariantArg::Mboxrd => MboxVariant::Mboxrd,
        MboxVariantArg::Mboxo => MboxVariant::Mboxo,
    };
    opts.keep_dates = a.keep_dates;
    opts.actor = quarantine_store::actor(a.actor.as_deref());
    if a.jobs == 0 || a.batch == 0 {
        return Err(CmdError::Usage("--jobs and --batch must be at least 1".into()));
    }
    opts.jobs = a.jobs;
    opts.batch_messages = a.batch;

    let report = store.import(&opts, &TermProgress::new())?;
    if a.json {
        out!("{}", serde_json::to_string(&report).map_err(std::io::Error::from)?);
    } else {
        print_summary(&report);
    }
    Ok(if report.skipped.is_empty() && report.aborted.is_none() { Status::Success } else { Status::Failure })
}

fn print_summary(r: &ImportReport) {
    for s in &r.skipped {
        say!("skipped {}: {}", escape(&s.source), escape(&s.reason));
    }
    if let Some(e) = &r.aborted {
        say!(
            "quarantine: import stopped: {} (everything counted below is committed; re-run to continue)",
            escape(&e.to_string())
        );
    }
    let mut line = format!(
        "imported {} message{} ({}), {} already held, {} skipped",
        r.imported,
        if r.imported == 1 { "" } else { "s" },
        human_bytes(r.bytes),
        r.duplicates,
        r.skipped.len()
    );
    if r.recipients_added > 0 {
        line.push_str(&format!(", {} recipient(s) added to messages already held", r.recipients_added));
    }
    out!("{line}");
    if r.recipients_from_headers > 0 {
        out!(
            "note: {} message(s) had no envelope header; their recipients come from To/Cc (Bcc unknown)",
            r.recipients_from_headers
        );
    }
    if !r.skipped.is_empty() {
        let mut reasons: Vec<(String, usize)> = Vec::new();
        for s in &r.skipped {
            let kind = reason_kind(&s.reason);
            match reasons.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, n)) => *n += 1,
                None => reasons.push((kind, 1)),
            }
        }
        let parts: Vec<String> = reasons.iter().map(|(k, n)| format!("{n} {k}")).collect();
        out!("skipped: {}", parts.join(", "));
    }
}

/// The kind of a skip reason, for the summary's tally: the text before any detail.
fn reason_kind(reason: &str) -> String {
    let head = reason.split([':', '(']).next().unwrap_or(reason).trim();
    head.to_string()
}
