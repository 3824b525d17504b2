//! `quarantine serve`: the LMTP/ESMTP and HTTP intake daemon (DESIGN section 10). The listeners, protocols and
//! group commit live in the `quarantine-serve` crate; this command resolves the config and the flags and runs it.
//! Like `hold`, it never opens the index.

use std::path::PathBuf;

use clap::Args;

use super::{CmdError, CmdResult, Context};
use crate::config::Config;
use crate::exit::Status;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// LMTP/ESMTP listener: unix:/PATH or IP:PORT (overrides serve.lmtp).
    #[arg(long, value_name = "ADDR")]
    pub lmtp: Option<String>,
    /// HTTP listener for rspamd's metadata_exporter: IP:PORT or unix:/PATH (overrides serve.http).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
}

fn apply(c: &Config, a: &ServeArgs) -> Result<quarantine_serve::ServeConfig, String> {
    let mut cfg = c.serve.clone();
    cfg.reserve = c.min_free_space.unwrap_or(crate::config::defaults::HOLD_RESERVE);
    if let Some(l) = &a.lmtp {
        cfg.lmtp = Some(quarantine_serve::Listen::parse(l).map_err(|e| format!("--lmtp {e}"))?);
    }
    if let Some(h) = &a.http {
        cfg.http = Some(quarantine_serve::Listen::parse(h).map_err(|e| format!("--http {e}"))?);
    }
    Ok(cfg)
}

pub fn run(ctx: &Context, a: ServeArgs, config_flag: Option<PathBuf>) -> CmdResult {
    let cfg = apply(&ctx.config, &a).map_err(CmdError::Usage)?;
    let reload = Box::new(move || {
        let (c, _) = Config::discover(config_flag.as_deref()).map_err(|e| e.to_string())?;
        apply(&c, &a)
    });
    quarantine_serve::run(cfg, &ctx.store_path, reload)
        .map_err(|e| CmdError::Store(quarantine_store::Error::Invalid(format!("serve: {e}"))))?;
    Ok(Status::Success)
}
