//! One module per subcommand. Each returns a `Status` or a `CmdError`; `exit.rs` maps them to exit codes.

pub mod check;
pub mod completions;
pub mod config;
pub mod export;
pub mod freeze;
pub mod hold;
pub mod import;
pub mod ingest;
pub mod init;
pub mod log;
pub mod manpages;
pub mod migrate;
pub mod purge;
pub mod release;
pub mod search;
pub mod selectors;
pub mod serve;
pub mod show;
pub mod stats;
pub mod thaw;
pub mod verify;

use std::path::PathBuf;
use std::time::Duration;

use crate::config::Config;
use quarantine_store::Store;

use crate::cli::{Cli, Command};
use crate::exit::Status;

#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error(transparent)]
    Store(#[from] quarantine_store::Error),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    #[error("{0}")]
    Usage(String),
}

impl CmdError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CmdError::Usage(_) => 2,
            _ => 1,
        }
    }
}

pub type CmdResult = Result<Status, CmdError>;

/// The global options every command resolves the same way.
pub struct Context {
    pub config: Config,
    pub store_path: PathBuf,
}

impl Context {
    fn new(cli: &Cli) -> Result<Context, CmdError> {
        let (config, _) = Config::discover(cli.config.as_deref())?;
        let store_path = config.store_path(cli.store.as_deref());
        Ok(Context { config, store_path })
    }

    /// Opens the store for an admin command; waits up to 60 s for a busy index. Ingests first, bounded (DESIGN
    /// section 4): at most one batch (256 files, 300 ms of staging), nothing when another ingest is running; a
    /// failure is a warning, never a reason not to run the command.
    pub fn open(&self) -> Result<Store, CmdError> {
        let mut store = self.open_without_ingest()?;
        let mut opts = quarantine_store::IngestOptions::bounded(quarantine_store::actor(None));
        opts.spike = self.config.spike;
        match store.ingest(&opts) {
            Ok(r) => {
                for b in &r.bad {
                    say!("quarantine: spool file {} moved to spool/bad/: {}", b.path.display(), b.reason);
                }
                // One bounded batch can leave a backlog (an incident, a stopped `ingest --watch`): without this
                // line `search` says "no messages match" and `show` "no message with id" for mail that hold
                // acknowledged, and the helpdesk concludes it was never quarantined.
                if r.pending > 0 {
                    say!(
                        "quarantine: warning: {} held message(s) still in spool/, not yet indexed, so not shown \
                         here; run `quarantine ingest` (or start its service) to index them",
                        r.pending
                    );
                }
            }
            Err(e) => say!("quarantine: warning: ingesting the spool first failed: {e}"),
        }
        Ok(store)
    }

    /// Opens the store without ingesting the spool first.
    pub fn open_without_ingest(&self) -> Result<Store, CmdError> {
        Ok(Store::open_with(&self.store_path, Duration::from_secs(60), &self.backends()?)?)
    }

    /// The backends the config names (DESIGN section 11); the embedded store when it names none.
    pub fn backends(&self) -> Result<quarantine_store::Backends, CmdError> {
        let mut b = quarantine_store::Backends { index: self.config.index.clone(), ..Default::default() };
        if let Some(remote) = &self.config.blobs {
            let client = remote.connect().map_err(|e| CmdError::Usage(e.to_string()))?;
            b.blobs = quarantine_store::BlobLocation::Remote(client);
        }
        Ok(b)
    }
}

pub fn dispatch(cli: Cli) -> CmdResult {
    // These run without loading the config: `config` reads it itself to say what is wrong with it.
    match &cli.command {
        Command::Config(a) => return config::run(&cli, a),
        Command::Completions(a) => return completions::run(a),
        Command::Manpages(a) => return manpages::run(a),
        _ => {}
    }
    let ctx = Context::new(&cli)?;
    match cli.command {
        Command::Init => init::run(&ctx),
        Command::Hold(a) => hold::run(&ctx, a),
        Command::Show(a) => show::run(&ctx, a),
        Command::Verify(a) => verify::run(&ctx, a),
        Command::Purge(a) => purge::run(&ctx, a),
        Command::Freeze(a) => freeze::run(&ctx, a),
        Command::Thaw(a) => thaw::run(&ctx, a),
        Command::Release(a) => release::run(&ctx, a),
        Command::Search(a) => search::run(&ctx, a),
        Command::Export(a) => export::run(&ctx, a),
        Command::Stats(a) => stats::run(&ctx, a),
        Command::Log(a) => log::run(&ctx, a),
        Command::Import(a) => import::run(&ctx, a),
        Command::Ingest(a) => ingest::run(&ctx, a),
        Command::Check(a) => check::run(&ctx, a),
        Command::Migrate(a) => migrate::run(&ctx, a),
        Command::Serve(a) => serve::run(&ctx, a, cli.config),
        Command::Config(_) | Command::Completions(_) | Command::Manpages(_) => unreachable!("dispatched above"),
    }
}
