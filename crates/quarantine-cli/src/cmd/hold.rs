//! `quarantine hold`: the MTA's entry point. Prints the message id and exits 0 only once the message is durable
//! in the spool (DESIGN section 4). It never opens the index: a locked, migrating or damaged index cannot make
//! it wait or fail; `ingest` (run by every other command, the systemd path unit, or `ingest --watch`) indexes it.

use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use quarantine_store::{HoldRequest, Spool};

use super::{CmdResult, Context};
use crate::exit::{Status, EX_TEMPFAIL};

#[derive(Debug, Args)]
pub struct HoldArgs {
    /// The scanner's verdict, e.g. PMX:VIRUS, SPAM, Heuristics.Phishing.
    #[arg(long)]
    pub verdict: String,
    /// The envelope sender; `<>` or an empty string for a bounce.
    #[arg(long, value_name = "SENDER", allow_hyphen_values = true)]
    pub from: String,
    /// An envelope recipient (repeatable). Arguments after `--` are recipients too.
    #[arg(long = "rcpt", value_name = "ADDR")]
    pub rcpt: Vec<String>,
    /// The scanner that gave the verdict, e.g. clamav, rspamd, pmx.
    #[arg(long)]
    pub scanner: Option<String>,
    /// Free text: the signature name, score or rule that matched.
    #[arg(long)]
    pub reason: Option<String>,
    /// The MTA's queue id. A retried hold with the same queue id, sender and bytes returns the same message id.
    #[arg(long, value_name = "ID")]
    pub queue_id: Option<String>,
    /// The scanner's engine / signature-database version, e.g. 'ClamAV 1.4.1/27475' (default: clamd's VERSION
    /// when the config names `clamd`, else none).
    #[arg(long, value_name = "V")]
    pub scanner_version: Option<String>,
    /// Read the message from this file instead of stdin.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Give up with 75 if the message is not durable within this time (default 60s, or the config's
    /// hold_deadline). Keep it below the MTA's own time limit for the pipe.
    #[arg(long, value_name = "DURATION", value_parser = crate::config::hold_deadline)]
    pub deadline: Option<std::time::Duration>,
    /// Envelope recipients, as Postfix expands ${recipient}.
    #[arg(last = true, value_name = "ADDR")]
    pub recipients: Vec<String>,
}

pub fn run(ctx: &Context, a: HoldArgs) -> CmdResult {
    let deadline = a.deadline.unwrap_or(ctx.config.hold_deadline);
    exit_75_on_deadline_and_sigbus(deadline);

    let mut recipients = a.rcpt;
    recipients.extend(a.recipients);
    let req = HoldRequest {
        from: a.from,
        recipients,
        verdict: a.verdict,
        scanner: a.scanner,
        reason: a.reason,
        queue_id: a.queue_id,
        scanner_version: a
            .scanner_version
            .filter(|v| !v.trim().is_empty())
            .or_else(|| ctx.config.clamd.as_ref().and_then(|c| crate::clamd::version(&ctx.store_path, c))),
    };
    let spool = Spool::open(&ctx.store_path)?;
    spool.set_reserve(ctx.config.min_free_space.unwrap_or(crate::config::defaults::HOLD_RESERVE));
    let outcome = match &a.file {
        Some(path) => {
            let mut f = std::fs::File::open(path).map_err(|e| {
                quarantine_store::Error::Input(std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
            })?;
            spool.hold(&req, &mut f)?
        }
        None => spool.hold(&req, &mut std::io::stdin().lock())?,
    };
    // The message is durable now. If stdout is gone (SIGPIPE-like), the MTA is not reading it: still a success.
    let _ = writeln!(std::io::stdout(), "{}", outcome.id);
    let _ = std::io::stdout().flush();
    Ok(Status::Success)
}

/// Two ways a hold must end in 75 whatever it is doing (DESIGN section 4), both as signal handlers that call
/// only write(2) and _exit(2):
///
/// - The deadline: a one-shot `ITIMER_REAL` fires SIGALRM when it passes, wherever the hold is stuck (a stdin that
///   never closes, a slow disk, a config "file" that is a FIFO nobody writes). If the rename happened just before,
///   the MTA retries and the queue id makes the retry the same message. (A timer, not a watchdog thread: a
///   thread's stack, its malloc arena and the clone cost every hold more than the timer's one system call;
///   docs/PERFORMANCE.md.)
/// - A fault on a memory-mapped page (a full or failing filesystem) would kill hold with SIGBUS, which pipe(8) does
///   not report as "try again later". Exit 75 instead: the spool file is either not renamed into place (the MTA
///   retries) or it is (the retry's queue id gives it the same id, and ingest merges the two).
///
/// Armed twice: with the default deadline before the arguments and the config are read (`exit::run`), then with
/// the deadline they give; the second call only replaces the message and the timer. If the timer cannot be armed
/// (it always can on Linux), a thread sleeps out the deadline instead.
#[allow(unsafe_code)]
pub(crate) fn exit_75_on_deadline_and_sigbus(deadline: Duration) {
    use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
    use std::sync::Once;
    const BUS: &[u8] = b"quarantine hold: bus error (filesystem full?) (message not held; the MTA will retry)\n";
    // The handler's message, replaced when the deadline is: leaked (once or twice a process), so a pointer the
    // handler loaded stays valid whatever happens after.
    static LATE: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
    static LATE_LEN: AtomicUsize = AtomicUsize::new(0);
    static HANDLERS: Once = Once::new();
    static ALRM_HANDLED: AtomicBool = AtomicBool::new(false);
    let late = format!(
        "quarantine hold: deadline of {}s passed before the message was durable (message not held; the MTA will retry)\n",
        deadline.as_secs_f64()
    );
    let bytes: &'static mut [u8] = Box::leak(late.clone().into_bytes().into_boxed_slice());
    // Null first: a handler running in between writes nothing rather than a torn message.
    LATE.store(std::ptr::null_mut(), Ordering::SeqCst);
    LATE_LEN.store(bytes.len(), Ordering::SeqCst);
    LATE.store(bytes.as_mut_ptr(), Ordering::SeqCst);
    let timer = libc::itimerval {
        it_interval: libc::timeval { tv_sec: 0, tv_usec: 0 },
        // (A zero it_value would disarm the timer: the parser allows 1 s to 1 d.)
        it_value: libc::timeval {
            tv_sec: deadline.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_usec: deadline.subsec_micros().max(u32::from(deadline.is_zero())) as libc::suseconds_t,
        },
    };
    // SAFETY: both handlers call only write(2) and _exit(2), which are async-signal-safe, on memory that lives as
    // long as the process (a constant, and leaked bytes read through atomics); they never return, so the faulting
    // access is never retried. setitimer(2) is given a valid itimerval and no old value.
    HANDLERS.call_once(|| unsafe {
        let _ = signal_hook::low_level::register(signal_hook::consts::SIGBUS, || {
            libc::write(2, BUS.as_ptr().cast(), BUS.len());
            libc::_exit(EX_TEMPFAIL as i32);
        });
        let ok = signal_hook::low_level::register(signal_hook::consts::SIGALRM, || {
            let p = LATE.load(Ordering::SeqCst);
            if !p.is_null() {
                libc::write(2, p.cast(), LATE_LEN.load(Ordering::SeqCst));
            }
            libc::_exit(EX_TEMPFAIL as i32);
        })
        .is_ok();
        ALRM_HANDLED.store(ok, Ordering::SeqCst);
    });
    // SAFETY: as above (and without a handler SIGALRM would kill the process: no timer then).
    let armed = ALRM_HANDLED.load(Ordering::SeqCst)
        && unsafe { libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) == 0 };
    if !armed {
        // If no thread can be started either (EAGAIN), the hold goes on without a deadline of its own: the MTA's
        // time limit for the pipe still ends it, and refusing every message for want of a timer would be worse.
        let _ = std::thread::Builder::new().spawn(move || {
            std::thread::sleep(deadline);
            say!("{}", late.trim_end());
            std::process::exit(EX_TEMPFAIL as i32);
        });
    }
}
