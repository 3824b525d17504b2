//! Exit codes, in one place. `hold` exits 0 or 75 whatever happens (DESIGN section 4): Postfix's pipe(8) bounces
//! on 1, 2, 74 and 101 (a Rust panic) but defers on 75, so every failure of `hold` — a bad flag, a panic, a busy
//! index — must become 75 and leave the mail in the MTA's queue. Every other command: 0 success, 1 failure,
//! 2 usage error.

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

pub const EX_TEMPFAIL: u8 = 75;

/// What a command returns to `run`.
pub enum Status {
    Success,
    /// A check that found problems (verify) or work that was not completed (release): exit 1, the command has
    /// already said why.
    Failure,
    /// `check`: a hold would not succeed now. Exit 75 (EX_TEMPFAIL), what `hold` itself would exit with; the
    /// command has already said why.
    TempFail,
}

pub fn run() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let holding = is_hold_invocation(&args);
    if holding {
        // The hook prints one line; `catch_unwind` below turns the unwinding into 75.
        std::panic::set_hook(Box::new(|info| {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            say!("quarantine hold: internal error{at}: {msg} (message not held; the MTA will retry)");
        }));
    }
    if !holding {
        report_sigbus();
    }
    let result = std::panic::catch_unwind(move || run_inner(args, holding));
    match result {
        Ok(code) => code,
        Err(_) if holding => ExitCode::from(EX_TEMPFAIL),
        Err(_) => ExitCode::from(101),
    }
}

/// A write into a memory-mapped page the filesystem cannot back is SIGBUS: SQLite maps the index's `-shm` and
/// reserves it one byte per 4 KiB page, so on a full filesystem with smaller blocks a reader's first write into it
/// kills the process with no word (exit 135, "Bus error" from the shell at best). Say what it is instead. (`hold`
/// has its own handler, which exits 75.)
#[allow(unsafe_code)]
fn report_sigbus() {
    const BUS: &[u8] = b"quarantine: bus error: a memory-mapped file of the index could not be written (is its \
filesystem full?); free space and run the command again\n";
    // SAFETY: the handler calls only write(2) and _exit(2), async-signal-safe, on a constant; it never returns,
    // so the faulting access is never retried.
    unsafe {
        let _ = signal_hook::low_level::register(signal_hook::consts::SIGBUS, || {
            libc::write(2, BUS.as_ptr().cast(), BUS.len());
            libc::_exit(1);
        });
    }
}

fn run_inner(args: Vec<std::ffi::OsString>, holding: bool) -> ExitCode {
    if holding {
        // Before anything can block (a config that is a FIFO, say), with `--deadline` if it reads as one, else the
        // default: hold::run arms it again with the deadline the config gives.
        crate::cmd::hold::exit_75_on_deadline_and_sigbus(
            early_deadline(&args).unwrap_or(crate::config::defaults::HOLD_DEADLINE),
        );
    }
    // A hold parses with a command tree of hold alone (cli::HoldCli): the MTA runs one process per message.
    let parsed = if holding && crate::cli::starts_with_hold(&args) {
        crate::cli::HoldCli::try_parse_from(&args).map(Cli::from)
    } else {
        Cli::try_parse_from(&args)
    };
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            // Help and version hold nothing: with `hold` anywhere in the argv that is a 75, not a 0 the MTA
            // would take for a delivery.
            if holding {
                let reason = match e.kind() {
                    ErrorKind::DisplayHelp | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                        "help requested, nothing to hold".to_string()
                    }
                    ErrorKind::DisplayVersion => "version requested, nothing to hold".to_string(),
                    _ => crate::output::escape(&one_line(&e.to_string())),
                };
                say!("quarantine hold: {reason} (message not held; the MTA will retry)");
                return ExitCode::from(EX_TEMPFAIL);
            }
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = e.print(); // `quarantine` alone: the help, on stderr, exit 2
                return ExitCode::from(2);
            }
            // One line, as every other error (clap's own rendering is a paragraph, a usage and a tip), escaped:
            // it can echo what was typed. Exit 2, as clap would.
            say!("quarantine: {} (see --help)", crate::output::escape(&one_line(&e.to_string())));
            return ExitCode::from(2);
        }
    };
    let is_hold = matches!(cli.command, Command::Hold(_));
    let is_check = matches!(cli.command, Command::Check(_));
    match crate::cmd::dispatch(cli) {
        Ok(Status::Success) => ExitCode::SUCCESS,
        Ok(Status::Failure) => ExitCode::from(1),
        Ok(Status::TempFail) => ExitCode::from(EX_TEMPFAIL),
        Err(e) if is_hold => {
            // An MTA logs one line per delivery attempt: fold multi-line reasons (toml's, say) into one.
            let reason = crate::output::escape(&format!("{e:#}").split_whitespace().collect::<Vec<_>>().join(" "));
            say!("quarantine hold: {reason} (message not held; the MTA will retry)");
            ExitCode::from(EX_TEMPFAIL)
        }
        // A config `hold` cannot read fails `hold` too: `check` says so with hold's code.
        Err(e) if is_check && !matches!(e, crate::cmd::CmdError::Usage(_)) => {
            say!("quarantine check: {}", crate::output::escape(&format!("{e:#}")));
            ExitCode::from(EX_TEMPFAIL)
        }
        Err(e) => {
            if !is_broken_pipe(&e) {
                // Errors carry ids, paths, config values and mail text: escape control characters line by line.
                let text = format!("{e:#}");
                let lines: Vec<String> = text.lines().map(crate::output::escape).collect();
                say!("quarantine: {}", lines.join("\n"));
            }
            ExitCode::from(e.exit_code())
        }
    }
}

fn is_broken_pipe(e: &crate::cmd::CmdError) -> bool {
    matches!(e, crate::cmd::CmdError::Store(quarantine_store::Error::Output(io)) if io.kind() == std::io::ErrorKind::BrokenPipe)
        || matches!(e, crate::cmd::CmdError::Output(io) if io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Whether the word `hold` appears anywhere in the argv. Decided before parsing and whatever clap makes of the rest
/// (a mistyped global option, `--store` missing its value, `-h` or `--version` anywhere): an MTA may be calling,
/// and every outcome but a held message must be 75 (DESIGN section 4).
fn is_hold_invocation(args: &[std::ffi::OsString]) -> bool {
    args.iter().skip(1).any(|a| a.as_encoded_bytes() == b"hold")
}

/// `--deadline D` or `--deadline=D` in a hold's argv, when it is a valid deadline; what clap makes of it later
/// is what counts.
fn early_deadline(args: &[std::ffi::OsString]) -> Option<std::time::Duration> {
    let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap_or("")).collect();
    let end = args.iter().position(|a| *a == "--").unwrap_or(args.len());
    args[..end].iter().enumerate().find_map(|(i, a)| {
        let v = match a.strip_prefix("--deadline") {
            Some("") => *args.get(i + 1)?,
            Some(v) => v.strip_prefix('=')?,
            None => return None,
        };
        crate::config::hold_deadline(v).ok()
    })
}

/// clap's error text without the usage block, its tip kept after a semicolon, on one line (an MTA logs only one).
fn one_line(text: &str) -> String {
    let mut out = String::new();
    for l in text.lines().take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information")) {
        if l.trim_start().starts_with("tip:") {
            out.push(';'); // "unrecognized subcommand 'ho'; tip: some similar subcommands exist: 'hold', 'show'"
        }
        for w in l.split_whitespace() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(w);
        }
    }
    out.trim_start_matches("error: ").to_string()
}
