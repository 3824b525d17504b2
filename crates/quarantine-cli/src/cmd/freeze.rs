//! `quarantine freeze`: stop every purge (e.g. during a false-positive incident) until `thaw`.

use clap::Args;

use super::{CmdResult, Context};
use crate::exit::Status;
use crate::output::escape;

#[derive(Debug, Args)]
pub struct FreezeArgs {
    /// Why (shown by stats, purge and the audit log).
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
    /// Who, for the audit log (default $SUDO_USER, else $USER).
    #[arg(long, value_name = "NAME")]
    pub actor: Option<String>,
}

pub fn run(ctx: &Context, a: FreezeArgs) -> CmdResult {
    let mut store = ctx.open()?;
    let actor = quarantine_store::actor(a.actor.as_deref());
    if store.freeze(&a.reason, &actor)? {
        out!("frozen: purge refuses until `quarantine thaw`");
    } else if let Some(f) = store.frozen()? {
        out!("already frozen since {} by {}: {}", escape(&f.at), escape(&f.actor), escape(&f.reason));
    }
    Ok(Status::Success)
}
