//! `quarantine-bench`: benchmarks of the quarantine store, run by `scripts/bench` (see docs/PERFORMANCE.md).
//!
//! Each benchmark is a subcommand. `hold` compares `quarantine hold` against `maildir-deliver`, a minimal durable
//! Maildir delivery, one process per message as an MTA's pipe transport runs them.

mod corpus;
mod doc;
mod hold;
mod machine;
mod rss;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "quarantine-bench", about = "Benchmarks of the quarantine store (see docs/PERFORMANCE.md).")]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Durable hold throughput against a minimal Maildir delivery, and peak RSS of a large hold.
    Hold(hold::HoldArgs),
    /// Run a command with stdin from a file; print its peak RSS in KiB (internal helper of `hold`).
    #[command(hide = true, name = "rss-of")]
    RssOf {
        #[arg(long)]
        stdin: PathBuf,
        #[arg(last = true, required = true)]
        command: Vec<OsString>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Bench::Hold(args) => hold::run(args),
        Bench::RssOf { stdin, command } => rss::rss_of_main(&stdin, &command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quarantine-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
