//! `quarantine thaw`: allow purging again after `freeze` (a human decision: nothing thaws by itself).

use clap::Args;

use super::{CmdResult, Context};
use crate::exit::Status;

#[derive(Debug, Args)]
pub struct ThawArgs {
    /// Why, for the audit log.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Who, for the audit log (default $SUDO_USER, else $USER).
    #[arg(long, value_name = "NAME")]
    pub actor: Option<String>,
}

pub fn run(ctx: &Context, a: ThawArgs) -> CmdResult {
    let mut store = ctx.open()?;
    let actor = quarantine_store::actor(a.actor.as_deref());
    if store.thaw(&actor, a.reason.as_deref())? {
        out!("thawed: purge runs again");
    } else {
        out!("the store was not frozen");
    }
    Ok(Status::Success)
}
