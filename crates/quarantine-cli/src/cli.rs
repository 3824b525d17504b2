//! The command line, as clap derive structs. Doc comments are the `--help` text.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Where the store and the config come from (the short `-h` says only this; `--help` adds the workflows).
macro_rules! store_and_config {
    () => {
        "The store is found from --store, else $QUARANTINE_STORE, else the config file's `store`, else \
         /var/lib/quarantine.\nThe config file is --config, else $QUARANTINE_CONFIG, else \
         /etc/quarantine/config.toml if it exists."
    };
}

#[derive(Debug, Parser)]
#[command(
    name = "quarantine",
    version,
    about = "A durable mail quarantine: keeps the original bytes of every held message until a purge you asked for.",
    after_help = store_and_config!(),
    after_long_help = concat!(
        store_and_config!(),
        "\n\n",
        "Examples, the incident drill (a bad signature update made the scanner call a night of ordinary mail \
PMX:VIRUS: stop the retention purge, find the batch, look before sending, release it, let the stragglers go later):
  quarantine freeze --reason \"PMX signature incident\"
  quarantine stats
  quarantine search --verdict PMX:VIRUS --since 00:00 --limit 20
  quarantine release --verdict PMX:VIRUS --since 00:00 --until 07:00 --dry-run
  quarantine release --verdict PMX:VIRUS --since 00:00 --until 07:00 --relay smtp://127.0.0.1:10025 --reason \"FP storm\"
  quarantine release --verdict PMX:VIRUS --since 00:00 --until 07:00   # later: only the deferred ones
  quarantine thaw
  quarantine log --since 00:00

Examples, the helpdesk (\"Alice never got the invoice from ACME\"):
  quarantine search --rcpt alice@example.edu --since yesterday
  quarantine search --rcpt alice@example.edu --header-from acme --subject invoice
  quarantine show Q7K2M9ABCD
  quarantine release --id Q7K2M9ABCD --rcpt alice@example.edu
  quarantine search --state purged --rcpt alice@example.edu     # gone: when, and why

Examples, retention from cron (/etc/cron.d/quarantine) or the packaged systemd timer (installed, not enabled):
  17 3 * * *  quarantine  /usr/bin/quarantine purge --yes --reason \"nightly retention\" >/dev/null
  41 4 * * 0  quarantine  /usr/bin/quarantine verify --deep
  systemctl enable --now quarantine-purge.timer
  quarantine purge --dry-run                 # what tonight's purge would remove

Examples, set-up checks:
  quarantine config check
  quarantine config show"
    )
)]
pub struct Cli {
    /// The store directory.
    #[arg(long, global = true, value_name = "DIR", help_heading = "Global options")]
    pub store: Option<PathBuf>,
    /// The configuration file (TOML).
    #[arg(long, global = true, value_name = "FILE", help_heading = "Global options")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a store (directories 0700, files 0600). Harmless on an existing store.
    Init,
    /// Hold one message from stdin (or --file): exit 0 once it is durable, 75 on any failure so the MTA retries.
    #[command(
        after_help = "Postfix master.cf (pipe transport; null_sender= keeps a bounce's empty sender empty):\n  \
        quarantine unix - n n - - pipe flags=Rq null_sender= user=quarantine\n    \
        argv=/usr/bin/quarantine hold --verdict X --queue-id ${queue_id} --from ${sender} -- ${recipient}\n\n\
        Exit status: 0 only when the message is on disk (fsynced in the spool; `ingest` indexes it); 75 \
        (EX_TEMPFAIL) for every failure, \
        bad arguments included."
    )]
    Hold(crate::cmd::hold::HoldArgs),
    /// Move spooled messages (written by hold) into the blob store and the index, in batches.
    #[command(after_help = "Every command that reads or changes the index ingests one bounded batch first; run \
        this (the quarantine-ingest.path systemd unit does, or `ingest --watch` under a supervisor) so that a \
        burst of holds is indexed within seconds. A spool file that fails its check moves to spool/bad/ with a \
        .reason file and is never deleted. Exit status: 0, or 1 when any file was moved to spool/bad/.")]
    Ingest(crate::cmd::ingest::IngestArgs),
    /// Run the intake daemon: LMTP/ESMTP (Postfix's lmtp, amavis) and HTTP (rspamd's metadata_exporter).
    #[command(after_help = "Answers 250 (HTTP 200) only once the message is durable in the spool, 451 (503) when it \
            cannot be; `ingest` indexes it, as for `hold`. SIGTERM stops accepting and lets in-flight messages \
            finish; SIGHUP reloads the config. Recipes: docs/integration/postfix-lmtp.md, rspamd.md, amavis.md.")]
    Serve(crate::cmd::serve::ServeArgs),
    /// Show one message: envelope, verdict, parsed headers, recipients and their release state.
    Show(crate::cmd::show::ShowArgs),
    /// Find held messages by recipient, sender, subject, Message-ID, verdict, time...; newest first.
    #[command(after_help = "Examples:\n  \
        quarantine search --rcpt alice@example.edu --since yesterday\n  \
        quarantine search --verdict 'PMX:*' --since 00:00 --limit 20\n  \
        quarantine search --subject invoice --header-from acme --json\n  \
        quarantine search --message-id '<4711@mail.acme.example>'\n  \
        quarantine search --from '<>' --since 6h                   # bounces\n  \
        quarantine search --state failed                           # releases the relay refused (5xx)\n  \
        quarantine search --state purged --rcpt alice@example.edu  # tombstones: when and why it went\n\n\
        A table by default: on a terminal at most --limit rows (50 unless given), cut to its width, with a line \
        saying how many more match; piped, every match (the width follows $COLUMNS if set). --json (JSON Lines) and \
        --csv print every match unless --limit is given. No match: exit 0 and \"no messages match\" (on stderr \
        with --json or --csv, so their output stays empty or just the CSV header).")]
    Search(crate::cmd::search::SearchArgs),
    /// Write held originals to files: <id>.eml + <id>.json each, or one mboxrd file.
    #[command(after_help = "Examples:\n  \
        quarantine export Q7K2M9ABCD --to /tmp/for-alice\n  \
        quarantine export --verdict PMX:VIRUS --since 00:00 --to /srv/samples --format mbox --reason \"vendor FP report\"\n\n\
        Existing files are never overwritten. Every original is checked against its hash before it is written; \
        a corrupt one is reported and skipped, and the export exits 1 at the end. Each export is recorded in the \
        audit log (see `quarantine log`).")]
    Export(crate::cmd::export::ExportArgs),
    /// Totals: messages and bytes per verdict and per day, recipients per state, dedup, compression, disk use.
    Stats(crate::cmd::stats::StatsArgs),
    /// The audit trail: every import, release, purge and export, oldest first.
    Log(crate::cmd::log::LogArgs),
    /// Check that every held message's blob exists (and with --deep, that it is intact).
    #[command(after_help = "Exit status: 0 when every live message's blob is present (and intact with --deep), \
        1 when any is missing or corrupt. Orphan blobs and stale temp files are listed but are not errors.")]
    Verify(crate::cmd::verify::VerifyArgs),
    /// Purge messages by age, selectors, or the config's retention policy; then remove unreferenced blobs.
    #[command(after_help = "Examples:\n  quarantine purge --older-than 30d --dry-run\n  \
        quarantine purge --yes                     # cron: the config's [retention] policy\n  \
        quarantine purge --verdict SPAM --older-than 14d --reason \"retention\"\n  \
        17 3 * * *  quarantine  /usr/bin/quarantine purge --yes --reason \"nightly retention\" >/dev/null\n\n\
        Messages with a release in progress are never purged. A frozen store refuses (see freeze). With no \
        selector, the policy is the config's [retention] table (docs/config.md), e.g. default = \"30d\" and \
        [retention.verdict] SPAM = \"14d\", \"PMX:VIRUS\" = \"90d\".")]
    Purge(crate::cmd::purge::PurgeArgs),
    /// Stop every purge (e.g. during a false-positive incident) until `thaw`.
    Freeze(crate::cmd::freeze::FreezeArgs),
    /// Allow purging again after `freeze`.
    Thaw(crate::cmd::thaw::ThawArgs),
    /// Re-deliver held originals to their envelope recipients over SMTP or a sendmail command, once each.
    #[command(after_help = "Examples:\n  \
        quarantine release --verdict PMX:VIRUS --since 00:00 --dry-run\n  \
        quarantine release --verdict PMX:VIRUS --since 00:00 --relay smtp://127.0.0.1:10025 --reason \"FP storm\"\n  \
        quarantine release --id Q7K2M9ABCD --rcpt alice@example.edu\n  \
        quarantine release --id Q7K2M9ABCD --to security@example.edu     # a copy; no state changes\n  \
        quarantine release --verdict PMX:VIRUS --since 00:00 --until 07:00 --yes   # later: the deferred ones\n\n\
        --rcpt selects messages and also limits the release to those recipients. Re-running a release sends only \
        what is still held. Exit status: 0 when everything selected was delivered (or already was), 1 when \
        anything was deferred, failed, left in doubt or not sent, 2 for a usage error.")]
    Release(crate::cmd::release::ReleaseArgs),
    /// Batch-hold existing quarantines and mailboxes: Maildir, mbox, eml files, amavisd-new quarantine files.
    #[command(after_help = "Examples:\n  \
        quarantine import --format amavis --verdict SPAM --scanner amavis /var/lib/amavis/virusmails\n  \
        quarantine import --format maildir --verdict SPAM /home/alice/Maildir/.Junk\n  \
        quarantine import --format mbox --verdict PMX:VIRUS --rcpt alice@example.edu old-quarantine.mbox\n\n\
        Envelope: --from/--rcpt, else amavis X-Envelope-From/-To, the mbox From line, Return-Path, \
        Delivered-To or X-Original-To, else the To/Cc headers (noted). A message with no recipient, or that \
        cannot be read, is reported and skipped. Messages count as imported only once their batch is \
        committed; re-running the same import adds nothing, and a killed import resumes without duplicates.\n\
        Exit status: 0 when everything found was imported or already held, 1 when anything was skipped or the \
        store failed part way.")]
    Import(crate::cmd::import::ImportArgs),
    /// Copy this embedded store into a PostgreSQL index (and an S3 bucket) while intake goes on, then switch over.
    #[command(after_help = "Examples:\n  \
        quarantine migrate --to-index postgresql://quarantine@db.example.edu/quarantine \\\n      \
        --to-blobs s3://quarantine-blobs/gw1\n  \
        quarantine migrate --to-index 'host=/run/postgresql dbname=quarantine'   # blobs stay in STORE/blobs/\n\n\
        Run it with the old config, as the store's owner. hold keeps exiting 0 throughout: it only writes the \
        spool. A first pass copies every row and uploads every live blob; a final pass takes the ingest lock and \
        the index's write lock (release, purge and freeze wait for it), copies what changed, verifies (row counts \
        per table, every message's id and hash, every object's presence and size, with --deep its content, the \
        audit chain's head) and then marks the local index as moved: from then on the store opens only with \
        `index` (and `blobs`) set to the destination, and `quarantine ingest` with that config moves the spool \
        there. Killed at any point, run it again: it resumes and converges without duplicates. The destination \
        must be empty or filled by an earlier run for this store. The local index and blobs/ are kept.\n\
        Exit status: 0 when the copy verified and the store was switched, 1 on a mismatch (named) or a failure, \
        2 for a usage error.")]
    Migrate(crate::cmd::migrate::MigrateArgs),
    /// Exit 0 when a hold would succeed now; 75 with the reason when it would not (for monitoring and filters).
    #[command(after_help = "Checks: the store is a store, its index opens and its write lock can be taken, a \
        file can be created, fsynced and removed in tmp/, and the filesystem has --min-free bytes available. \
        Run it as the account hold runs as.")]
    Check(crate::cmd::check::CheckArgs),
    /// Check the config file (every problem with its key and line) or show the effective settings and their source.
    Config(crate::cmd::config::ConfigArgs),
    /// Print a shell completion script: bash, zsh or fish.
    #[command(after_help = "Examples:\n  \
        quarantine completions bash > /usr/share/bash-completion/completions/quarantine\n  \
        quarantine completions zsh > /usr/share/zsh/vendor-completions/_quarantine\n  \
        quarantine completions fish > /usr/share/fish/vendor_completions.d/quarantine.fish")]
    Completions(crate::cmd::completions::CompletionsArgs),
    /// Write the man pages (quarantine.1 and one per subcommand) to DIR; used by scripts/package.
    #[command(hide = true)]
    Manpages(crate::cmd::manpages::ManpagesArgs),
}

/// `quarantine [GLOBAL OPTIONS] hold ...`, parsed without building the other subcommands: building [`Cli`]'s whole
/// command tree was 40 % of a hold's instructions (docs/PERFORMANCE.md), and the MTA runs one hold per message.
/// The same global options as [`Cli`] (a unit test checks they agree) and the same [`HoldArgs`]; `exit.rs` uses it
/// only when the first word after the global options is `hold` ([`starts_with_hold`]).
#[derive(Debug, Parser)]
#[command(name = "quarantine", version)]
pub struct HoldCli {
    #[arg(long, global = true, value_name = "DIR", help_heading = "Global options")]
    pub store: Option<PathBuf>,
    #[arg(long, global = true, value_name = "FILE", help_heading = "Global options")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: HoldOnly,
}

#[derive(Debug, Subcommand)]
pub enum HoldOnly {
    Hold(crate::cmd::hold::HoldArgs),
}

impl From<HoldCli> for Cli {
    fn from(h: HoldCli) -> Cli {
        let HoldOnly::Hold(args) = h.command;
        Cli { store: h.store, config: h.config, command: Command::Hold(args) }
    }
}

/// Whether `args` (the whole argv) is `quarantine [--store DIR | --config FILE]... hold ...`: the global options
/// of [`Cli`], each with its value, then the word `hold`.
pub fn starts_with_hold(args: &[std::ffi::OsString]) -> bool {
    let mut words = args.iter().skip(1).map(|a| a.as_encoded_bytes());
    while let Some(w) = words.next() {
        match w {
            b"--store" | b"--config" => {
                if words.next().is_none() {
                    return false;
                }
            }
            w if w.starts_with(b"--store=") || w.starts_with(b"--config=") => {}
            w => return w == b"hold",
        }
    }
    false
}
#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// What a global option is to clap, for comparing the two parsers.
    fn globals(c: &clap::Command) -> Vec<String> {
        c.get_arguments()
            .filter(|a| a.is_global_set())
            .map(|a| format!("{:?} {:?} {:?} {:?}", a.get_id(), a.get_long(), a.get_short(), a.get_value_names()))
            .collect()
    }

    #[test]
    fn the_hold_parser_has_the_global_options_of_the_full_one() {
        let (full, hold) = (Cli::command(), HoldCli::command());
        assert_eq!(globals(&full), globals(&hold), "add the new global option to HoldCli and starts_with_hold");
        hold.clone().debug_assert();
        let a = |h: &clap::Command| {
            let sub = h.find_subcommand("hold").expect("hold").clone();
            sub.get_arguments().map(|a| format!("{:?}", a.get_id())).collect::<Vec<_>>()
        };
        assert_eq!(a(&full), a(&hold));
    }

    #[test]
    fn help_prose_has_no_runs_of_spaces() {
        // A string continued without a trailing `\` keeps the next line's indentation (`serve --help` read
        // "451 (503) when         it"). Example lines are indented and may align their comments.
        let mut seen = 0;
        for sub in Cli::command().get_subcommands() {
            let Some(help) = sub.get_after_help() else { continue };
            for line in help.to_string().lines().filter(|l| !l.starts_with(' ')) {
                seen += 1;
                assert!(!line.contains("  "), "`{} --help`: a run of spaces in {line:?}", sub.get_name());
            }
        }
        assert!(seen > 5, "after_help texts found: {seen}");
    }

    #[test]
    fn the_hold_parser_is_used_only_for_hold() {
        let v = |s: &str| s.split_whitespace().map(std::ffi::OsString::from).collect::<Vec<_>>();
        for yes in ["q hold", "q --store /s hold --from x", "q --config=/c --store /s hold", "q --store hold hold"] {
            assert!(starts_with_hold(&v(yes)), "{yes}");
        }
        for no in
            ["q", "q search hold", "q --version hold", "q --store", "q --store /s", "q -h hold", "q --stor x hold"]
        {
            assert!(!starts_with_hold(&v(no)), "{no}");
        }
        // Both parsers read a hold line the same way.
        let line = v("q --store /s hold --verdict V --from <> --queue-id Q -- a@b c@d");
        let full = format!("{:?}", Cli::try_parse_from(&line).unwrap());
        let fast = format!("{:?}", Cli::from(HoldCli::try_parse_from(&line).unwrap()));
        assert_eq!(full, fast);
    }
}
