//! `quarantine completions bash|zsh|fish`: a completion script generated from the clap definitions, on stdout.
//! The Debian package ships the three (scripts/package); from source, install them as `after_help` says.

use std::io::Write;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::CmdResult;
use crate::cli::Cli;
use crate::exit::Status;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish (also elvish, powershell).
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

pub fn run(a: &CompletionsArgs) -> CmdResult {
    // clap_complete offers hidden subcommands too; leave out `manpages`, a packaging helper.
    let full = Cli::command();
    let mut cmd = clap::Command::new("quarantine")
        .version(env!("CARGO_PKG_VERSION"))
        .about(full.get_about().cloned().unwrap_or_default())
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
        .subcommand_required(true);
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "quarantine", &mut buf);
    let mut out = std::io::stdout().lock();
    out.write_all(&buf)?;
    out.flush()?;
    Ok(Status::Success)
}
