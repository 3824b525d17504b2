//! `quarantine release SELECTORS`: re-deliver held originals to their envelope recipients (DESIGN section 6).
//! The library plans and executes; this module picks the transport, asks for confirmation on a terminal,
//! installs the Ctrl-C handler, and prints the plan and the summary.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use quarantine_relay::{Relay, RelayUrl, Security};
use quarantine_store::{Action, ExecOptions, Plan, PlanRequest, ProblemKind, ReleaseReport as Report, Skip};

use super::{selectors, CmdError, CmdResult, Context};
use crate::cmd::selectors::SelectorArgs;
use crate::exit::Status;
use crate::output::{confirm, escape, human_bytes, interactive, thousands, TermProgress};

/// How many problem lines of each kind the summary prints before "... and N more".
const SHOW_PROBLEMS: usize = 20;
/// `--rate` bounds, messages per second: one every 1,000 s at the slowest (anything slower is a cron job), and a
/// million at the fastest (more is no limit at all). Checked before anything is claimed (NaN fails both).
const RATE_MIN: f64 = 0.001;
const RATE_MAX: f64 = 1_000_000.0;
/// `--timeout` bounds: a zero timeout is no timeout to a socket, and past a day a relay is not coming back.
const TIMEOUT_MIN: Duration = Duration::from_secs(1);
const TIMEOUT_MAX: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// With no selector: release every held message.
    #[arg(long)]
    pub all: bool,
    /// The relay: smtp://HOST[:PORT] (port 25) or smtps://HOST[:PORT] (TLS, port 465). Default: the config's
    /// `relay`. Use an MTA port that does not pass mail back through the filter.
    #[arg(long, value_name = "URL", conflicts_with = "sendmail")]
    pub relay: Option<String>,
    /// Require STARTTLS on an smtp:// relay (for relays that are not on loopback).
    #[arg(long, conflicts_with = "sendmail")]
    pub tls: bool,
    /// Deliver through a sendmail-compatible command instead, run as `CMD -i -f SENDER -- RCPT...`.
    /// Default: the config's `sendmail`.
    #[arg(long, value_name = "CMD")]
    pub sendmail: Option<String>,
    /// Send one copy of each selected message to ADDR (e.g. for inspection), changing no recipient's state.
    #[arg(long, value_name = "ADDR")]
    pub to: Option<String>,
    /// Also send to recipients left in doubt by a release that did not finish (they may get a duplicate).
    #[arg(long)]
    pub retry_in_doubt: bool,
    /// Also send to recipients a relay refused permanently before (5xx), e.g. after fixing the relay.
    #[arg(long)]
    pub retry_failed: bool,
    /// Print what would be sent, and send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation on a terminal.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Do not prepend the X-Quarantine-Released trace header (default: the config's `trace_header`, else add it).
    #[arg(long)]
    pub no_trace_header: bool,
    /// Send at most N messages per second (0.001 to 1000000).
    #[arg(long, value_name = "N")]
    pub rate: Option<f64>,
    /// Time limit for connecting and for each SMTP command, and for each run of a --sendmail command (default 60s;
    /// 1s to 24h).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// SMTP connections (or sendmail commands) at once, 1 to 64 (default: the config's `release_connections`,
    /// else 4). Each recipient is still claimed once, before any connection sends it.
    #[arg(long, value_name = "N")]
    pub connections: Option<usize>,
    /// Before sending, pipe each original into CMD (split on spaces, no shell), e.g.
    /// "clamdscan --no-summary -": exit 0 sends it; the infected exit (--rescan-infected-exit) skips it and leaves
    /// it held with the scanner's words; anything else defers it. With --dry-run: shows what would be skipped.
    #[arg(long, value_name = "CMD")]
    pub rescan: Option<String>,
    /// The rescan's exit status that means "infected" (default 1: clamscan, clamdscan).
    #[arg(long, value_name = "N", requires = "rescan")]
    pub rescan_infected_exit: Option<i32>,
    /// Time limit per scan (default 60s; 1s to 1h); the scanner is killed past it and the message deferred.
    #[arg(long, value_name = "DURATION", requires = "rescan")]
    pub rescan_timeout: Option<String>,
    /// Scans at once (default: the number of CPUs).
    #[arg(long, value_name = "N", requires = "rescan")]
    pub rescan_jobs: Option<usize>,
    /// Why, for the audit log.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Who, for the audit log and the trace header (default $SUDO_USER, else $USER).
    #[arg(long, value_name = "NAME")]
    pub actor: Option<String>,
    /// Print the plan (with --dry-run) or the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    // Last: SelectorArgs opens its own help heading, which would otherwise swallow the options above.
    #[command(flatten)]
    pub selectors: SelectorArgs,
}

pub fn run(ctx: &Context, a: ReleaseArgs) -> CmdResult {
    let selector = selectors::resolve(&a.selectors)?;
    if selector.is_empty() && !a.all {
        return Err(CmdError::Usage(
            "release needs a selector (e.g. --id, --verdict, --since); use --all to release every held message".into(),
        ));
    }
    if let Some(r) = a.rate {
        if !(RATE_MIN..=RATE_MAX).contains(&r) {
            return Err(CmdError::Usage(format!(
                "--rate {r}: must be between {RATE_MIN} and {RATE_MAX} messages per second"
            )));
        }
    }
    let timeout = match &a.timeout {
        Some(t) => {
            let d = quarantine_store::parse_duration(t).map_err(|e| CmdError::Usage(format!("--timeout: {e}")))?;
            if !(TIMEOUT_MIN..=TIMEOUT_MAX).contains(&d) {
                return Err(CmdError::Usage(format!(
                    "--timeout {}: must be between {}s and {}h",
                    escape(t),
                    TIMEOUT_MIN.as_secs(),
                    TIMEOUT_MAX.as_secs() / 3600
                )));
            }
            d
        }
        None => Duration::from_secs(60),
    };
    let connections = a.connections.unwrap_or(ctx.config.release_connections);
    let most = crate::config::defaults::RELEASE_CONNECTIONS_MAX;
    if !(1..=most).contains(&connections) {
        return Err(CmdError::Usage(format!("--connections {connections}: must be between 1 and {most}")));
    }
    let rescan = rescan(&a)?;
    let transport = transport(ctx, &a)?;
    if transport.is_none() && !a.dry_run {
        return Err(CmdError::Usage(
            "no relay: give --relay smtp://HOST:PORT or --sendmail CMD, or set `relay` in the config file".into(),
        ));
    }
    let trace_header = !a.no_trace_header && ctx.config.trace_header;

    let mut store = ctx.open()?;
    selectors::require_known_ids(&store, &selector)?;
    let req =
        PlanRequest { selector, copy_to: a.to.clone(), retry_in_doubt: a.retry_in_doubt, retry_failed: a.retry_failed };
    let plan = store.plan_release(&req).map_err(|e| match e {
        quarantine_store::Error::BadAddress { .. } => CmdError::Usage(format!("--to: {e}")),
        e => CmdError::Store(e),
    })?;
    let counts = plan.counts();
    let via = transport.as_ref().map(|t| t.to_string()).unwrap_or_else(|| "(no relay configured)".into());

    if a.dry_run {
        // With --rescan, scan what would be sent (nothing is claimed): the skips are shown, not made.
        let scans = match &rescan {
            Some(r) => store.rescan_plan(&plan, r),
            None => Vec::new(),
        };
        if a.json {
            let scans: Vec<serde_json::Value> =
                scans.iter().map(|(id, v)| serde_json::json!({ "id": id, "rescan": v })).collect();
            let v = serde_json::json!({ "dry_run": true, "via": via, "counts": counts, "plan": plan, "rescan": scans });
            out!("{v}");
        } else {
            print_plan(&plan, &via);
            if let Some(r) = &rescan {
                print_rescan(&scans, r);
            }
        }
        return Ok(Status::Success);
    }
    let transport = transport.expect("checked above");

    if counts.recipients + counts.refused > 0 && !a.yes && interactive() {
        say!("{}", plan_line(&plan, &via));
        if !confirm("Release them?")? {
            say!("nothing released");
            return Ok(Status::Success);
        }
    }

    // First Ctrl-C (or SIGTERM): finish the current message, record everything, put the rest back. Second: exit.
    let cancel = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&cancel)).map_err(CmdError::Output)?;
        signal_hook::flag::register(sig, Arc::clone(&cancel)).map_err(CmdError::Output)?;
    }

    let opts = ExecOptions {
        actor: quarantine_store::actor(a.actor.as_deref()),
        reason: a.reason.clone(),
        trace_header,
        rate: a.rate,
        cancel: Some(&cancel),
        rescan,
    };
    let report = if connections == 1 {
        let mut sender = transport.open(timeout);
        store.execute_release(&plan, &opts, sender.as_mut(), &TermProgress::new())?
    } else {
        let open = || transport.open(timeout);
        store.execute_release_with(&plan, &opts, &open, connections, &TermProgress::new())?
    };
    if a.json {
        out!("{}", serde_json::to_string(&report).map_err(std::io::Error::from)?);
    } else {
        print_report(&report);
    }
    Ok(if report.complete() { Status::Success } else { Status::Failure })
}

/// `--rescan CMD` and its options, checked before anything is claimed.
fn rescan(a: &ReleaseArgs) -> Result<Option<quarantine_store::Rescan>, CmdError> {
    let Some(cmd) = &a.rescan else { return Ok(None) };
    let timeout = match &a.rescan_timeout {
        Some(t) => {
            let d =
                quarantine_store::parse_duration(t).map_err(|e| CmdError::Usage(format!("--rescan-timeout: {e}")))?;
            if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&d) {
                return Err(CmdError::Usage(format!("--rescan-timeout {}: must be between 1s and 1h", escape(t))));
            }
            d
        }
        None => crate::config::defaults::RESCAN_TIMEOUT,
    };
    let jobs = a.rescan_jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    if !(1..=256).contains(&jobs) {
        return Err(CmdError::Usage(format!("--rescan-jobs {jobs}: must be between 1 and 256")));
    }
    let infected = a.rescan_infected_exit.unwrap_or(crate::config::defaults::RESCAN_INFECTED_EXIT);
    if infected == 0 {
        return Err(CmdError::Usage("--rescan-infected-exit 0: 0 is the scanner's \"clean\"".into()));
    }
    quarantine_store::Rescan::parse(cmd, infected, timeout, jobs).map(Some).map_err(CmdError::Usage)
}

fn print_rescan(scans: &[(String, quarantine_store::ScanVerdict)], r: &quarantine_store::Rescan) {
    use quarantine_store::ScanVerdict;
    let mut out = String::new();
    let (mut clean, mut infected, mut errors) = (0u64, 0u64, 0u64);
    for (id, v) in scans {
        match v {
            ScanVerdict::Clean => clean += 1,
            ScanVerdict::Infected(what) => {
                infected += 1;
                out.push_str(&format!("skip  {id}  rescan: infected: {what}\n"));
            }
            ScanVerdict::Error(e) => {
                errors += 1;
                out.push_str(&format!("defer {id}  {e}\n"));
            }
        }
    }
    {
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), "{}", escape_lines(&out));
    }
    out!(
        "{}",
        escape(&format!(
            "dry run: rescan `{}`: {} clean, {} infected (would be skipped, left held), {} scan error(s) (would be deferred)",
            r.describe(),
            thousands(clean),
            thousands(infected),
            thousands(errors)
        ))
    );
}

/// `--relay`/`--sendmail`, else the config's `relay`, else its `sendmail`.
fn transport(ctx: &Context, a: &ReleaseArgs) -> Result<Option<Relay>, CmdError> {
    let usage = |e: quarantine_relay::Error| CmdError::Usage(e.to_string());
    if let Some(cmd) = &a.sendmail {
        return Ok(Some(Relay::sendmail(cmd).map_err(usage)?));
    }
    if let Some(url) = &a.relay {
        return Ok(Some(Relay::Smtp(RelayUrl::parse(url, a.tls).map_err(usage)?)));
    }
    if let Some(url) = &ctx.config.relay {
        let mut url = url.clone();
        if a.tls {
            match url.security {
                Security::None => url.security = Security::StartTls,
                Security::StartTls => {}
                Security::Implicit => {
                    return Err(CmdError::Usage(
                        "--tls is STARTTLS; the config's smtps:// relay already uses TLS".into(),
                    ))
                }
            }
        }
        return Ok(Some(Relay::Smtp(url)));
    }
    if a.tls {
        return Err(CmdError::Usage("--tls needs an smtp:// relay (--relay or the config's `relay`)".into()));
    }
    Ok(ctx.config.sendmail.clone())
}

fn plan_line(plan: &Plan, via: &str) -> String {
    let c = plan.counts();
    let mut s = match &plan.copy_to {
        Some(to) => format!(
            "{} cop{} of {} message(s) ({}) to <{}> via {via}, changing no recipient's state",
            thousands(c.recipients),
            if c.recipients == 1 { "y" } else { "ies" },
            thousands(c.messages),
            human_bytes(c.bytes),
            escape(to)
        ),
        None => format!(
            "{} message(s) ({}) to {} recipient(s) via {via}",
            thousands(c.messages),
            human_bytes(c.bytes),
            thousands(c.recipients)
        ),
    };
    let mut notes = Vec::new();
    if c.retry_in_doubt > 0 {
        notes.push(format!("{} in doubt sent again", thousands(c.retry_in_doubt)));
    }
    if c.in_doubt > 0 {
        notes.push(format!("{} in doubt not sent (--retry-in-doubt)", thousands(c.in_doubt)));
    }
    if c.refused > 0 {
        notes.push(format!("{} refused (invalid address)", thousands(c.refused)));
    }
    let skipped = c.already_released + c.already_failed + c.purged + c.busy;
    if skipped > 0 {
        notes.push(format!(
            "{} skipped ({} released, {} failed, {} purged, {} being released by another run)",
            thousands(skipped),
            thousands(c.already_released),
            thousands(c.already_failed),
            thousands(c.purged),
            thousands(c.busy)
        ));
    }
    if !notes.is_empty() {
        s.push_str(&format!("; {}", notes.join(", ")));
    }
    s
}

fn print_plan(plan: &Plan, via: &str) {
    let mut out = String::new();
    for m in &plan.messages {
        let sends: Vec<String> = m
            .recipients
            .iter()
            .filter(|r| r.action.sends())
            .map(|r| {
                let retry = match r.action {
                    Action::RetryInDoubt { .. } => " (retry in doubt)",
                    Action::RetryFailed => " (retry failed)",
                    _ => "",
                };
                format!("<{}>{retry}", r.address)
            })
            .collect();
        if !sends.is_empty() {
            out.push_str(&format!(
                "send  {}  from <{}>  to {}  {}  {}\n",
                m.id,
                m.from,
                sends.join(", "),
                human_bytes(m.size),
                m.subject.as_deref().unwrap_or("")
            ));
        }
        for r in &m.recipients {
            let note = match &r.action {
                Action::Refuse { why } => format!("refuse <{}>: {why}", r.address),
                Action::Skip { skip: Skip::InDoubt { previous } } => format!(
                    "in doubt <{}>: {}; not sent without --retry-in-doubt",
                    r.address,
                    quarantine_store::describe_tag(previous)
                ),
                Action::Skip { skip: Skip::Busy { by } } => {
                    format!("skip <{}>: being released by {}", r.address, quarantine_store::describe_tag(by))
                }
                Action::Skip { skip } => format!("skip <{}>: {}", r.address, skip_word(skip)),
                _ => continue,
            };
            out.push_str(&format!("      {}  {note}\n", m.id));
        }
    }
    {
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), "{}", escape_lines(&out));
    }
    out!("dry run: would release {}", plan_line(plan, via));
}

fn skip_word(s: &Skip) -> &'static str {
    match s {
        Skip::Released => "already released",
        Skip::Failed => "failed earlier (--retry-failed sends it again)",
        Skip::Purged => "purged",
        Skip::InDoubt { .. } => "in doubt",
        Skip::Busy { .. } => "being released",
    }
}

/// Escapes each line for the terminal, keeping the newlines.
fn escape_lines(s: &str) -> String {
    s.lines().map(|l| format!("{}\n", escape(l))).collect()
}

fn print_report(r: &Report) {
    let mut head = format!("delivered {}", thousands(r.delivered));
    head.push_str(&format!(" · deferred {}", thousands(r.deferred)));
    if r.deferred > 0 {
        head.push_str(" (will retry on the next run)");
    }
    head.push_str(&format!(" · failed {}", thousands(r.failed)));
    if r.failed > 0 && !r.copy {
        head.push_str(" (see `search --state failed`)");
    }
    head.push_str(&format!(" · in doubt {}", thousands(r.in_doubt)));
    if r.in_doubt > 0 {
        head.push_str(" (check the relay's log; --retry-in-doubt resends)");
    }
    head.push_str(&format!(" · skipped {}", thousands(r.skipped)));
    if r.infected > 0 {
        head.push_str(&format!(" · infected {} (rescan: left held)", thousands(r.infected)));
    }
    if r.not_sent > 0 {
        head.push_str(&format!(" · not sent {} (blob missing or corrupt: run `verify --deep`)", thousands(r.not_sent)));
    }
    if r.retried_in_doubt > 0 {
        head.push_str(&format!(" · {} in doubt resent", thousands(r.retried_in_doubt)));
    }
    if r.copy {
        head.push_str(" · copies only, no recipient state changed");
    }
    let mut out = String::new();
    for kind in [
        ProblemKind::Failed,
        ProblemKind::Deferred,
        ProblemKind::InDoubt,
        ProblemKind::NotSent,
        ProblemKind::Busy,
        ProblemKind::Infected,
    ] {
        let of_kind: Vec<_> = r.problems.iter().filter(|p| p.kind == kind).collect();
        let word = match kind {
            ProblemKind::Failed => "failed",
            ProblemKind::Deferred => "deferred",
            ProblemKind::InDoubt => "in doubt",
            ProblemKind::NotSent => "not sent",
            ProblemKind::Busy => "skipped",
            ProblemKind::Infected => "infected",
        };
        for p in of_kind.iter().take(SHOW_PROBLEMS) {
            out.push_str(&format!("{word:<9} {}  <{}>  {}\n", p.message, p.address, p.detail));
        }
        if of_kind.len() > SHOW_PROBLEMS {
            out.push_str(&format!("{word:<9} ... and {} more\n", thousands((of_kind.len() - SHOW_PROBLEMS) as u64)));
        }
    }
    {
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), "{}", escape_lines(&out));
    }
    if let Some(why) = &r.stopped {
        out!("{}", escape(&format!("stopped early: {why}")));
    }
    out!("{head}  [release {}]", r.release);
}
