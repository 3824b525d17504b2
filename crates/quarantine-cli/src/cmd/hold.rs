//! `quarantine hold`: the MTA's entry point. Prints the message id and exits 0 only once the message is durable.

use std::io::Write;
use std::time::{Duration, Instant};

use quarantine_store::{duration, HoldRequest, Store};

use super::{CmdError, CmdResult, Context};
use crate::cli::HoldArgs;
use crate::exit::{Status, EX_TEMPFAIL};

const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

pub fn run(ctx: &Context, a: HoldArgs) -> CmdResult {
    let started = Instant::now();
    let deadline = match a.deadline.as_deref().or(ctx.config.hold_deadline.as_deref()) {
        Some(d) => duration::parse(d).map_err(CmdError::Usage)?,
        None => DEFAULT_DEADLINE,
    };
    start_watchdog(deadline);

    let mut recipients = a.rcpt;
    recipients.extend(a.recipients);
    let req = HoldRequest {
        from: a.from,
        recipients,
        verdict: a.verdict,
        scanner: a.scanner,
        reason: a.reason,
        queue_id: a.queue_id,
    };
    // Whatever is left of the deadline bounds the wait for another writer's lock.
    let busy = deadline.saturating_sub(started.elapsed()).saturating_sub(Duration::from_millis(500));
    let mut store = Store::open(&ctx.store_path, busy)?;
    let outcome = match &a.file {
        Some(path) => {
            let mut f = std::fs::File::open(path).map_err(|e| {
                quarantine_store::Error::Input(std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
            })?;
            store.hold(&req, &mut f)?
        }
        None => store.hold(&req, &mut std::io::stdin().lock())?,
    };
    // The message is durable now. If stdout is gone (SIGPIPE-like), the MTA is not reading it: still a success.
    let _ = writeln!(std::io::stdout(), "{}", outcome.id);
    Ok(Status::Success)
}

/// Gives up with 75 when the deadline passes, wherever the hold is stuck (a stdin that never closes, a lock, a
/// slow disk). If the commit happened just before, the MTA retries and the queue id makes the retry a no-op.
fn start_watchdog(deadline: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(deadline);
        say!(
            "quarantine hold: deadline of {}s passed before the message was durable (message not held; the MTA will retry)",
            deadline.as_secs_f64()
        );
        std::process::exit(EX_TEMPFAIL as i32);
    });
}
