//! `quarantine check`: exit 0 when a hold would succeed now, 75 (EX_TEMPFAIL) with one line saying why when it
//! would not, so a monitoring probe or a filter's pre-check reads the same code an MTA would get from `hold`.

use std::time::Duration;

use clap::Args;
use quarantine_store::check_with;
use quarantine_store::{human_bytes as human, parse_size};

use super::{CmdError, CmdResult, Context};
use crate::exit::Status;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Fail when the store's filesystem has less free space than this (500M, 2G, 10GiB). Default: the config's
    /// min_free_space, else 100M.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub min_free: Option<u64>,
    /// How long to wait for another writer's lock before failing, e.g. 5s.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub timeout: String,
}

/// An automatic freeze (the spike rule) is an incident someone must look at: monitoring pages on this 75.
fn incident(ctx: &Context) -> Result<(), String> {
    let store = ctx.open_without_ingest().map_err(|e| e.to_string())?;
    match store.incident().map_err(|e| e.to_string())? {
        Some(f) => Err(format!("incident since {}: {} (purges frozen; `quarantine thaw` lifts it)", f.at, f.reason)),
        None => Ok(()),
    }
}

/// With the blobs in an object store, ingest needs it: while it is down, mail waits in the spool (holds still
/// succeed), and monitoring should hear about it before the spool's age does.
fn objects(ctx: &Context) -> Result<(), String> {
    match &ctx.config.blobs {
        Some(b) => b.probe(),
        None => Ok(()),
    }
}

pub fn run(ctx: &Context, a: CheckArgs) -> CmdResult {
    let busy: Duration = crate::config::duration(&a.timeout).map_err(CmdError::Usage)?;
    let min_free = a.min_free.or(ctx.config.min_free_space).unwrap_or(crate::config::defaults::MIN_FREE_SPACE);
    let result = check_with(&ctx.store_path, min_free, busy, &ctx.backends()?)
        .map_err(|e| e.0)
        .and_then(|r| quarantine_store::check_spool(&ctx.store_path, ctx.config.spool_max_age).map(|_| r))
        .and_then(|r| incident(ctx).map(|_| r));
    // Probed whatever failed before it: with both shared backends down, the one line names both, so whoever is
    // paged does not fix the database only to be paged again for the object store.
    let result = match (result, objects(ctx)) {
        (Ok(r), Ok(())) => Ok(r),
        (Err(e), Ok(())) | (Ok(_), Err(e)) => Err(e),
        (Err(e), Err(o)) => Err(format!("{e}; and {o}")),
    };
    match result {
        Ok(r) => {
            let inodes = r.free_inodes.map(|n| format!(", {n} inodes")).unwrap_or_default();
            out!(
                "ok: {}: a hold would succeed now ({} free{inodes}; minimum {})",
                crate::output::escape(&r.store.display().to_string()),
                human(r.free_bytes),
                human(r.min_free)
            );
            Ok(Status::Success)
        }
        Err(why) => {
            say!("quarantine check: {}", crate::output::escape(&why.to_string()));
            Ok(Status::TempFail)
        }
    }
}
