//! `quarantine purge`: retention purge, plan then execute. `freeze`/`thaw` stop and allow it.

use clap::Args;
use quarantine_store::now_us;
use quarantine_store::{PurgePlan, PurgeRule};

use super::{selectors, CmdError, CmdResult, Context};
use crate::cmd::selectors::SelectorArgs;
use crate::exit::Status;
use crate::output::{confirm, escape, human_bytes, interactive, TermProgress};

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Purge messages received longer ago than this (90m, 6h, 30d, 1w), combined with any selectors.
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<String>,
    /// With no selector: purge every message (not the retention policy).
    #[arg(long)]
    pub all: bool,
    /// Print the plan (messages, recipients, bytes) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation on a terminal.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Why, recorded in each tombstone and in the audit log.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Who, for the audit log (default $SUDO_USER, else $USER).
    #[arg(long, value_name = "NAME")]
    pub actor: Option<String>,
    /// Orphan blobs and temp files younger than this survive (default 24h, or the config's orphan_grace).
    #[arg(long, value_name = "DURATION", value_parser = crate::config::duration)]
    pub orphan_grace: Option<std::time::Duration>,
    /// VACUUM the index afterwards to return its free pages to the filesystem (locks the store while it runs).
    #[arg(long)]
    pub vacuum: bool,
    /// Print the plan and the result as JSON.
    #[arg(long)]
    pub json: bool,
    // Last: clap's `next_help_heading` of the flattened selectors would otherwise file the flags after it under
    // "Selectors" too.
    #[command(flatten)]
    pub selectors: SelectorArgs,
}

pub fn run(ctx: &Context, a: PurgeArgs) -> CmdResult {
    let mut sel = selectors::resolve(&a.selectors)?;
    let ids = sel.clone();
    let rules = if let Some(age) = &a.older_than {
        let age = crate::config::duration(age).map_err(|e| CmdError::Usage(format!("--older-than: {e}")))?;
        let cutoff = now_us() - age.as_micros() as i64;
        sel.until_us = Some(sel.until_us.map_or(cutoff, |u| u.min(cutoff)));
        vec![PurgeRule {
            label: format!("selection older than {}", a.older_than.as_deref().unwrap_or("")),
            selector: sel,
            exclude_verdicts: vec![],
        }]
    } else if !sel.is_empty() || a.all {
        vec![PurgeRule {
            label: if a.all { "everything".into() } else { "selection".into() },
            selector: sel,
            exclude_verdicts: vec![],
        }]
    } else {
        let policy = &ctx.config.retention;
        if policy.is_empty() {
            return Err(CmdError::Usage(
                "no selector, no --older-than and no retention policy in the config: refusing to purge \
                 (set [retention] in the config, give --older-than or selectors, or --all to purge everything)"
                    .into(),
            ));
        }
        policy.rules(now_us())
    };
    let grace = a.orphan_grace.unwrap_or(ctx.config.orphan_grace);
    if grace < crate::config::defaults::ORPHAN_GRACE_FLOOR {
        say!(
            "quarantine purge: warning: an orphan grace of {} is below {}: a blob an ingest or import is about to \
             commit may be swept (it fails and retries from the spool or source; nothing is lost)",
            crate::config::format_duration(grace),
            crate::config::format_duration(crate::config::defaults::ORPHAN_GRACE_FLOOR)
        );
    }

    let mut store = ctx.open()?;
    store.set_upload_grace(grace);
    selectors::require_known_ids(&store, &ids)?;
    let plan = store.purge_plan(rules)?;
    print_plan(&plan, a.json);
    if a.dry_run {
        return Ok(Status::Success);
    }
    if let Some(f) = &plan.frozen {
        say!(
            "quarantine: refusing to purge: the store is frozen since {} by {} ({}); `quarantine thaw` lifts it",
            escape(&f.at),
            escape(&f.actor),
            escape(&f.reason)
        );
        return Ok(Status::Failure);
    }
    if plan.messages > 0 && !a.yes && interactive() && !confirm(&format!("Purge {} message(s)?", plan.messages))? {
        say!("nothing purged");
        return Ok(Status::Success);
    }
    let actor = quarantine_store::actor(a.actor.as_deref());
    let progress = TermProgress::new();
    let report = store.purge(&plan, &actor, a.reason.as_deref(), &progress)?;
    let sweep = store.sweep_orphans(grace)?;
    if a.vacuum {
        store.vacuum()?;
    }
    if a.json {
        out!("{}", serde_json::json!({ "purged": report, "orphans": sweep }));
    } else {
        out!(
            "purged {} message(s) ({} recipient(s)); removed {} blob(s), freed {}; {} orphan blob(s) and {} temp file(s) removed, {} orphan(s) younger than the grace kept{}",
            report.messages,
            report.recipients,
            report.gc.blobs_removed,
            human_bytes(report.gc.bytes_freed),
            sweep.orphans_removed,
            sweep.tmp_removed,
            sweep.orphans_young,
            if report.skipped_releasing > 0 {
                format!("; skipped {} with a release in progress", report.skipped_releasing)
            } else {
                String::new()
            }
        );
    }
    let mut failed = report.gc.clone();
    failed.add(&sweep);
    if failed.unlink_errors > 0 {
        // Per-item errors keep going (every other blob is removed); one line, the first error named, exit 1.
        say!(
            "quarantine: purge: {} file(s) could not be removed (queued blobs stay queued for the next purge): {}",
            failed.unlink_errors,
            escape(failed.errors.first().map(String::as_str).unwrap_or(""))
        );
        return Ok(Status::Failure);
    }
    Ok(Status::Success)
}

fn print_plan(plan: &PurgePlan, json: bool) {
    if json {
        out!("{}", serde_json::json!({ "plan": plan }));
        return;
    }
    for r in &plan.rules {
        out!("rule: {}", escape(&r.label));
    }
    out!(
        "would purge {} message(s), {} recipient(s), {} of originals",
        plan.messages,
        plan.recipients,
        human_bytes(plan.bytes)
    );
    if plan.skipped_releasing > 0 {
        out!("skipping {} message(s) with a release in progress", plan.skipped_releasing);
    }
    if let Some(f) = &plan.frozen {
        out!(
            "FROZEN since {} by {}: {} (purge refuses until `quarantine thaw`)",
            escape(&f.at),
            escape(&f.actor),
            escape(&f.reason)
        );
    }
}
