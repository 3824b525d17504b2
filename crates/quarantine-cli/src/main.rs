//! The `quarantine` binary: parses arguments, calls `quarantine-store`, prints. See `cli.rs`.

mod cli;
mod cmd;
mod exit;
mod output;

fn main() -> std::process::ExitCode {
    exit::run()
}
