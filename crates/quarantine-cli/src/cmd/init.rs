//! `quarantine init`: create a store, or confirm an existing one.

use quarantine_store::{InitOutcome, Store};

use super::{CmdResult, Context};
use crate::exit::Status;

pub fn run(ctx: &Context) -> CmdResult {
    let (_, outcome) = Store::init_with(&ctx.store_path, &ctx.backends()?)?;
    match outcome {
        InitOutcome::Created => {
            out!("created a quarantine store in {}", crate::output::escape(&ctx.store_path.display().to_string()))
        }
        InitOutcome::AlreadyAStore => {
            out!(
                "{} is already a quarantine store; nothing to do",
                crate::output::escape(&ctx.store_path.display().to_string())
            )
        }
    }
    Ok(Status::Success)
}
