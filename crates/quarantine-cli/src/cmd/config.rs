//! `quarantine config check [FILE]` and `quarantine config show`. Both run without a usable config file (the
//! dispatcher calls them before loading it): their job is to say what is wrong with it.
//!
//! `check` exits 0 when the file parses, every value is valid and the store it names is a store this user can
//! reach; otherwise it prints every problem as `FILE: line N: KEY: why` on stderr and exits 1.

use std::io::Write;
use std::path::PathBuf;

use crate::config::{self, Config, ConfigFile, Problem, Source};
use clap::{Args, Subcommand};

use super::CmdResult;
use crate::cli::Cli;
use crate::exit::Status;
use crate::output::escape;

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub action: ConfigAction,
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate a config file: every problem is printed with its key and line; exit 1 if there is any.
    #[command(after_help = "Examples:\n  \
        quarantine config check                                # the file every command would use\n  \
        quarantine config check /etc/quarantine/config.toml.new  # before moving it into place\n\n\
        Checks the TOML syntax, unknown keys, value types, durations, sizes and the relay URL; then that the \
        store (--store, $QUARANTINE_STORE, the file's `store`, else /var/lib/quarantine) exists, is a \
        quarantine store and can be opened by this user, that the sendmail program exists, and that the \
        store's filesystem has min_free_space. Exit status: 0 valid, 1 any problem, 2 usage error.")]
    Check(CheckArgs),
    /// Print the effective settings and where each came from: flag, environment, file (with its line), default.
    #[command(after_help = "Examples:\n  \
        quarantine config show\n  \
        quarantine --store /srv/q config show --json | jq -r .store.source     # flag")]
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The file to check (default: --config, else $QUARANTINE_CONFIG, else /etc/quarantine/config.toml).
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Check the file only: not the store, the sendmail program or the free space.
    #[arg(long)]
    pub file_only: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// One JSON object: {"KEY": {"value": ..., "source": "flag|environment|file|default", "origin": ...}}.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cli: &Cli, a: &ConfigArgs) -> CmdResult {
    match &a.action {
        ConfigAction::Check(c) => check(cli, c),
        ConfigAction::Show(s) => show(cli, s),
    }
}

fn check(cli: &Cli, a: &CheckArgs) -> CmdResult {
    let file = match &a.file {
        Some(path) => Some(ConfigFile::read(path.clone(), Source::Flag("FILE"))?),
        None => ConfigFile::discover(cli.config.as_deref())?,
    };
    let name = file.as_ref().map(|f| f.path.display().to_string());
    let cfg = match &file {
        Some(f) => match f.parse() {
            Ok(cfg) => cfg,
            Err(problems) => return report(name.as_deref(), &problems),
        },
        None => Config::default(),
    };
    let (store, store_source) = cfg.store_path_with_source(cli.store.as_deref(), file.as_ref());
    if !a.file_only {
        let problems = config::check_environment(&cfg, file.as_ref(), &store, &store_source);
        if !problems.is_empty() {
            return report(name.as_deref(), &problems);
        }
    }
    let mut out = std::io::stdout().lock();
    match &name {
        Some(n) => writeln!(out, "{}: ok", escape(n))?,
        None => writeln!(
            out,
            "no config file (--config, $QUARANTINE_CONFIG, {}): every setting is its default",
            config::defaults::CONFIG
        )?,
    }
    if !a.file_only {
        writeln!(out, "store {} ({store_source}): a quarantine store", escape(&store.display().to_string()))?;
    }
    Ok(Status::Success)
}

fn report(file: Option<&str>, problems: &[Problem]) -> CmdResult {
    let mut err = std::io::stderr().lock();
    for p in problems {
        match file {
            Some(f) => writeln!(err, "quarantine: config {}: {}", escape(f), escape(&p.to_string()))?,
            None => writeln!(err, "quarantine: config: {}", escape(&p.to_string()))?,
        }
    }
    writeln!(err, "{} problem{} found", problems.len(), if problems.len() == 1 { "" } else { "s" })?;
    Ok(Status::Failure)
}

fn show(cli: &Cli, a: &ShowArgs) -> CmdResult {
    let file = ConfigFile::discover(cli.config.as_deref())?;
    let cfg = match &file {
        Some(f) => match f.parse() {
            Ok(cfg) => cfg,
            Err(problems) => return report(Some(&f.path.display().to_string()), &problems),
        },
        None => Config::default(),
    };
    let settings = cfg.settings(cli.store.as_deref(), file.as_ref());
    let mut out = std::io::stdout().lock();
    if a.json {
        let mut obj = serde_json::Map::new();
        for s in &settings {
            obj.insert(
                s.key.clone(),
                serde_json::json!({ "value": s.value, "source": s.source.kind(), "origin": origin(&s.source) }),
            );
        }
        writeln!(out, "{}", serde_json::Value::Object(obj))?;
        return Ok(Status::Success);
    }
    let rows: Vec<(String, String, String)> = settings
        .iter()
        .map(|s| {
            let value = s.value.clone().unwrap_or_else(|| "(not set)".into());
            let source = match (&s.source, s.key.as_str()) {
                (Source::Default, "config") if s.value.is_some() => "default path".to_string(),
                (Source::Default, "config") => {
                    format!("default ({} does not exist)", config::defaults::CONFIG)
                }
                (src, _) => src.to_string(),
            };
            (escape(&s.key), escape(&value), escape(&source))
        })
        .collect();
    let kw = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0).max(3);
    let vw = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0).max(5);
    writeln!(out, "{:kw$}  {:vw$}  SOURCE", "KEY", "VALUE")?;
    for (k, v, s) in rows {
        writeln!(out, "{k:kw$}  {v:vw$}  {s}")?;
    }
    Ok(Status::Success)
}

/// The flag, variable or `file:line` a value came from; null for a default.
fn origin(source: &Source) -> serde_json::Value {
    match source {
        Source::Flag(f) => (*f).into(),
        Source::Env(v) => (*v).into(),
        Source::File { path, line: Some(l) } => format!("{}:{l}", path.display()).into(),
        Source::File { path, line: None } => path.display().to_string().into(),
        Source::Default => serde_json::Value::Null,
    }
}
