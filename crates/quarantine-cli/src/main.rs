//! The `quarantine` binary: parses arguments, calls `quarantine-store`, prints. See `cli.rs`.

/// `eprintln!` that cannot panic: when whoever reads stderr has gone away, `hold` must still exit 75 (a panic in
/// the panic hook would abort, and an MTA bounces on a signal it did not send).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `println!` that cannot panic: a report whose reader went away (`release ... | head`) must not kill a command
/// half way through its work (a release would leave recipients in doubt). Streams that should stop on a closed
/// pipe (`search --json`) write with `?` instead.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod clamd;
mod cli;
mod cmd;
mod config;
mod exit;
mod output;

fn main() -> std::process::ExitCode {
    exit::run()
}
