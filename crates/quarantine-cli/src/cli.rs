//! The command line, as clap derive structs. Doc comments are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "quarantine",
    version,
    about = "A durable mail quarantine: keeps the original bytes of every held message until a purge you asked for.",
    after_help = "The store is found from --store, else $QUARANTINE_STORE, else the config file's `store`, \
                  else /var/lib/quarantine.\nThe config file is --config, else $QUARANTINE_CONFIG, else \
                  /etc/quarantine/config.toml if it exists."
)]
pub struct Cli {
    /// The store directory.
    #[arg(long, global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// The configuration file (TOML).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a store (directories 0700, files 0600). Harmless on an existing store.
    Init,
    /// Hold one message from stdin (or --file): exit 0 once it is durable, 75 on any failure so the MTA retries.
    #[command(after_help = "Postfix master.cf (pipe transport; null_sender= keeps a bounce's empty sender empty):\n  \
        quarantine unix - n n - - pipe flags=Rq null_sender= user=quarantine\n    \
        argv=/usr/bin/quarantine hold --verdict X --queue-id ${queue_id} --from ${sender} -- ${recipient}\n\n\
        Exit status: 0 only when the message is on disk and indexed; 75 (EX_TEMPFAIL) for every failure, \
        bad arguments included.")]
    Hold(HoldArgs),
    /// Show one message: envelope, verdict, parsed headers, recipients and their release state.
    Show(ShowArgs),
    /// Check that every held message's blob exists (and with --deep, that it is intact).
    #[command(after_help = "Exit status: 0 when every live message's blob is present (and intact with --deep), \
        1 when any is missing or corrupt. Orphan blobs and stale temp files are listed but are not errors.")]
    Verify(VerifyArgs),
    /// Purge messages by age, selectors, or the config's retention policy; then remove unreferenced blobs.
    #[command(after_help = "Examples:\n  quarantine purge --older-than 30d --dry-run\n  \
        quarantine purge --yes                     # cron: the config's [retention] policy\n  \
        quarantine purge --verdict SPAM --older-than 14d --reason \"retention\"\n\n\
        Messages with a release in progress are never purged. A frozen store refuses (see freeze).")]
    Purge(PurgeArgs),
    /// Stop every purge (e.g. during a false-positive incident) until `thaw`.
    Freeze(FreezeArgs),
    /// Allow purging again after `freeze`.
    Thaw(ThawArgs),
}

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
    /// Read the message from this file instead of stdin.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Give up with 75 if the message is not durable within this time (default 60s, or the config's
    /// hold_deadline). Keep it below the MTA's own time limit for the pipe.
    #[arg(long, value_name = "DURATION")]
    pub deadline: Option<String>,
    /// Envelope recipients, as Postfix expands ${recipient}.
    #[arg(last = true, value_name = "ADDR")]
    pub recipients: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The message id printed by hold or search.
    pub id: String,
    /// Write the original bytes exactly (checked against the blob's hash first).
    #[arg(long, conflicts_with_all = ["headers", "json"])]
    pub raw: bool,
    /// Print the original header block.
    #[arg(long, conflicts_with = "json")]
    pub headers: bool,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Also decompress every blob and check it against its BLAKE3 name.
    #[arg(long)]
    pub deep: bool,
    /// One JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// SELECTORS, shared by search, export, release and purge: different kinds combine with AND, a repeated kind with
/// OR. Addresses compare case-insensitively.
#[derive(Debug, Args, Default, Clone)]
#[command(next_help_heading = "Selectors")]
pub struct SelectorArgs {
    /// Message id (repeatable).
    #[arg(long = "id", value_name = "ID")]
    pub id: Vec<String>,
    /// Envelope recipient, Bcc recipients included (repeatable).
    #[arg(long = "rcpt", value_name = "ADDR")]
    pub rcpt: Vec<String>,
    /// Envelope sender; `<>` for bounces (repeatable).
    #[arg(long = "from", value_name = "ADDR")]
    pub from: Vec<String>,
    /// Text in the From header, case-insensitive (repeatable).
    #[arg(long = "header-from", value_name = "TEXT")]
    pub header_from: Vec<String>,
    /// Text in the Subject, case-insensitive (repeatable).
    #[arg(long = "subject", value_name = "TEXT")]
    pub subject: Vec<String>,
    /// Message-ID header, with or without angle brackets (repeatable).
    #[arg(long = "message-id", value_name = "ID")]
    pub message_id: Vec<String>,
    /// Verdict, exact or a glob such as 'PMX:*' (repeatable).
    #[arg(long = "verdict", value_name = "V")]
    pub verdict: Vec<String>,
    /// Scanner name (repeatable).
    #[arg(long = "scanner", value_name = "S")]
    pub scanner: Vec<String>,
    /// Text in an attachment's file name, case-insensitive (repeatable).
    #[arg(long = "attachment", value_name = "NAME")]
    pub attachment: Vec<String>,
    /// Received at or after T: HH:MM (today), YYYY-MM-DD, "YYYY-MM-DD HH:MM", RFC 3339, 90m/6h/2d/1w ago,
    /// today, yesterday. Local time follows TZ.
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// Received before T (same forms as --since).
    #[arg(long, value_name = "T")]
    pub until: Option<String>,
    /// Recipient state: held, releasing, released, failed, purged (repeatable). Without it, purged messages
    /// are not shown.
    #[arg(long = "state", value_name = "STATE")]
    pub state: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Purge messages received longer ago than this (90m, 6h, 30d, 1w), combined with any selectors.
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<String>,
    #[command(flatten)]
    pub selectors: SelectorArgs,
    /// With no selector: purge every message (not the retention policy).
    #[arg(long)]
    pub all: bool,
    /// Print the plan (messages, recipients, bytes) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation on a terminal.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Why, recorded in each tombstone and in the audit log.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Who, for the audit log (default $SUDO_USER, else $USER).
    #[arg(long, value_name = "NAME")]
    pub actor: Option<String>,
    /// Orphan blobs and temp files younger than this survive (default 24h, or the config's orphan_grace).
    #[arg(long, value_name = "DURATION")]
    pub orphan_grace: Option<String>,
    /// VACUUM the index afterwards to return its free pages to the filesystem (locks the store while it runs).
    #[arg(long)]
    pub vacuum: bool,
    /// Print the plan and the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FreezeArgs {
    /// Why (shown by stats, purge and the audit log).
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
    #[arg(long, value_name = "NAME")]
    pub actor: Option<String>,
}

#[derive(Debug, Args)]
pub struct ThawArgs {
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    #[arg(long, value_name = "NAME")]
    pub actor: Option<String>,
}
