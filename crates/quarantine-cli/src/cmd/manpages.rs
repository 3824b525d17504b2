//! `quarantine manpages DIR` (hidden): writes quarantine(1) and one page per subcommand (`quarantine-hold.1`,
//! `quarantine-config-check.1`, ...) from the clap definitions, for scripts/package. clap_mangen renders the name,
//! synopsis, description, options and subcommands; this module adds what a man page needs beyond `--help`:
//! the `after_help` text as EXAMPLES and NOTES (kept as written, not refilled), the workflows (incident, helpdesk,
//! cron retention) as EXAMPLES, and EXIT STATUS, ENVIRONMENT, FILES and SEE ALSO on quarantine(1).

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, CommandFactory};
use clap_mangen::Man;

use super::CmdResult;
use crate::cli::Cli;
use crate::exit::Status;

#[derive(Debug, Args)]
pub struct ManpagesArgs {
    /// Where to write the pages (created if missing).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

pub fn run(a: &ManpagesArgs) -> CmdResult {
    std::fs::create_dir_all(&a.dir)?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut out = std::io::stdout().lock();
    for (name, page) in pages(&cmd)? {
        let path = a.dir.join(&name);
        std::fs::write(&path, page).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        writeln!(out, "{}", path.display())?;
    }
    Ok(Status::Success)
}

/// Every page: (file name, roff text), the top-level page first. Hidden subcommands get none.
pub fn pages(cmd: &clap::Command) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut pages = Vec::new();
    collect(cmd, &mut pages)?;
    Ok(pages)
}

fn collect(cmd: &clap::Command, pages: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
    let man =
        Man::new(cmd.clone()).manual("quarantine manual").source(concat!("quarantine ", env!("CARGO_PKG_VERSION")));
    let mut page = Vec::new();
    render(&man, cmd, &mut page)?;
    pages.push((man.get_filename(), page));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub, pages)?;
    }
    Ok(())
}

fn render(man: &Man, cmd: &clap::Command, w: &mut dyn Write) -> std::io::Result<()> {
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name()).to_string();
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(w)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(w)?;
    }
    let (mut examples, notes) = split_after_help(cmd);
    if let Some((_, extra)) = EXAMPLES.iter().find(|(page, _)| *page == name) {
        if !examples.is_empty() {
            examples.push(Block::Text(String::new()));
        }
        examples.extend(blocks(extra));
    }
    section(w, "EXAMPLES", &examples)?;
    section(w, "NOTES", &notes)?;
    if name == "quarantine" {
        for (title, body) in TOP_LEVEL {
            section(w, title, &blocks(body))?;
        }
    } else {
        section(
            w,
            "SEE ALSO",
            &[Block::Text(
                "quarantine(1), docs/config.md and docs/operations.md in \
            /usr/share/doc/quarantine"
                    .into(),
            )],
        )?;
    }
    if cmd.get_version().is_some() {
        man.render_version_section(w)?;
    }
    Ok(())
}

/// A piece of a section: filled prose, lines kept as written (commands, config snippets), or a term and its
/// description (ENVIRONMENT, FILES).
#[derive(Debug, PartialEq)]
enum Block {
    Text(String),
    Literal(Vec<String>),
    Item(String, String),
}

/// `after_help` as written in cli.rs: paragraphs separated by blank lines; a paragraph whose first line ends with
/// ':' and whose other lines are indented is a titled literal block. `Examples:` blocks go to EXAMPLES, the rest
/// to NOTES.
fn split_after_help(cmd: &clap::Command) -> (Vec<Block>, Vec<Block>) {
    let text = cmd.get_after_long_help().or_else(|| cmd.get_after_help()).map(|s| s.to_string()).unwrap_or_default();
    let (mut examples, mut notes) = (Vec::new(), Vec::new());
    for para in text.split("\n\n").map(str::trim_end).filter(|p| !p.trim().is_empty()) {
        let mut lines = para.lines();
        let first = lines.next().unwrap_or_default();
        let rest: Vec<&str> = lines.collect();
        let literal = first.ends_with(':') && !rest.is_empty() && rest.iter().all(|l| l.starts_with(' '));
        if literal && first == "Examples:" {
            examples.push(Block::Literal(rest.iter().map(|l| l.to_string()).collect()));
        } else if literal {
            notes.push(Block::Text(first.to_string()));
            notes.push(Block::Literal(rest.iter().map(|l| l.to_string()).collect()));
        } else {
            notes.extend(blocks(para));
        }
    }
    (examples, notes)
}

/// The same reading for the texts below: indented lines are literal, `TERM<tab>text` lines are items, others
/// prose.
fn blocks(text: &str) -> Vec<Block> {
    let mut out: Vec<Block> = Vec::new();
    for line in text.lines() {
        if let Some((term, text)) = line.split_once('\t') {
            out.push(Block::Item(term.to_string(), text.to_string()));
        } else if line.starts_with("  ") {
            match out.last_mut() {
                Some(Block::Literal(lines)) => lines.push(line.to_string()),
                _ => out.push(Block::Literal(vec![line.to_string()])),
            }
        } else {
            match out.last_mut() {
                Some(Block::Text(t)) if !line.is_empty() && !t.is_empty() => {
                    t.push(' ');
                    t.push_str(line);
                }
                _ => out.push(Block::Text(line.to_string())),
            }
        }
    }
    out
}

fn section(w: &mut dyn Write, title: &str, body: &[Block]) -> std::io::Result<()> {
    if body.is_empty() {
        return Ok(());
    }
    writeln!(w, ".SH {title}")?;
    for b in body {
        match b {
            Block::Text(t) if t.is_empty() => writeln!(w, ".PP")?,
            Block::Text(t) => writeln!(w, ".PP\n{}", escape(t))?,
            Block::Literal(lines) => {
                writeln!(w, ".PP\n.nf\n.RS 2")?;
                for l in lines {
                    writeln!(w, "{}", escape(l.strip_prefix("  ").unwrap_or(l)))?;
                }
                writeln!(w, ".RE\n.fi")?;
            }
            Block::Item(term, text) => writeln!(w, ".TP\n\\fB{}\\fR\n{}", escape(term), escape(text))?,
        }
    }
    Ok(())
}

/// Roff-safe text: backslashes and hyphens escaped (so `--flag` stays two ASCII hyphens, copy-pastable), and a
/// line cannot start a request.
fn escape(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// Extra EXAMPLES per page (page name without section), after the command's own `after_help` examples.
const EXAMPLES: &[(&str, &str)] = &[
    (
        "quarantine",
        "The incident drill: a bad signature update made the scanner call a night of ordinary mail PMX:VIRUS. \
Stop the retention purge, find the batch, look before sending, release it, and let the stragglers go later:
  quarantine freeze --reason \"PMX signature incident\"
  quarantine stats
  quarantine search --verdict PMX:VIRUS --since 00:00 --limit 20
  quarantine release --verdict PMX:VIRUS --since 00:00 --until 07:00 --dry-run
  quarantine release --verdict PMX:VIRUS --since 00:00 --until 07:00 \\
      --relay smtp://127.0.0.1:10025 --reason \"FP storm\"
  quarantine release --verdict PMX:VIRUS --since 00:00 --until 07:00   # later: only the deferred ones
  quarantine thaw
  quarantine log --since 00:00

Helpdesk: \"Alice never got the invoice from ACME.\"
  quarantine search --rcpt alice@example.edu --since yesterday
  quarantine search --rcpt alice@example.edu --header-from acme --subject invoice
  quarantine show Q7K2M9ABCD
  quarantine release --id Q7K2M9ABCD --rcpt alice@example.edu
  quarantine search --state purged --rcpt alice@example.edu     # gone: when, and why

Retention from cron (/etc/cron.d/quarantine; an example is in /usr/share/doc/quarantine/examples), or the \
packaged systemd timer, which is installed but not enabled:
  17 3 * * *  quarantine  /usr/bin/quarantine purge --yes --reason \"nightly retention\" >/dev/null
  41 4 * * 0  quarantine  /usr/bin/quarantine verify --deep
  systemctl enable --now quarantine-purge.timer
  quarantine purge --dry-run                 # what tonight's purge would remove

Set-up checks:
  quarantine config check
  quarantine config show",
    ),
    (
        "quarantine-search",
        "Helpdesk lookups:
  quarantine search --rcpt alice@example.edu --since yesterday
  quarantine search --message-id '<4711@mail.acme.example>'
  quarantine search --from '<>' --since 6h                  # bounces
  quarantine search --state failed                          # releases the relay refused (5xx)
  quarantine search --state purged --rcpt alice@example.edu  # tombstones: when and why it went",
    ),
    (
        "quarantine-release",
        "The incident workflow: find the batch, dry-run, release, re-run for the deferred ones:
  quarantine search --verdict PMX:VIRUS --since 00:00 --limit 20
  quarantine release --verdict PMX:VIRUS --since 00:00 --until 07:00 --dry-run
  quarantine release --verdict PMX:VIRUS --since 00:00 --until 07:00 --yes --reason \"FP storm\"
  quarantine release --verdict PMX:VIRUS --since 00:00 --until 07:00 --yes",
    ),
    (
        "quarantine-purge",
        "Retention from cron, or the packaged systemd timer (installed, not enabled):
  17 3 * * *  quarantine  /usr/bin/quarantine purge --yes --reason \"nightly retention\" >/dev/null
  systemctl enable --now quarantine-purge.timer
The policy is the config's [retention] table (see quarantine-config-check(1) and docs/config.md):
  [retention]
  default = \"30d\"
  [retention.verdict]
  SPAM = \"14d\"
  \"PMX:VIRUS\" = \"90d\"",
    ),
    (
        "quarantine-completions",
        "The Debian package installs all three. From source:
  quarantine completions bash > /usr/share/bash-completion/completions/quarantine
  quarantine completions zsh > /usr/share/zsh/vendor-completions/_quarantine
  quarantine completions fish > /usr/share/fish/vendor_completions.d/quarantine.fish",
    ),
    (
        "quarantine-config-show",
        "  quarantine config show
  quarantine --store /srv/q config show --json | jq -r .store.source     # flag",
    ),
];

/// The sections only quarantine(1) has.
const TOP_LEVEL: &[(&str, &str)] = &[
    (
        "EXIT STATUS",
        "hold exits 0 once the message is durable and 75 (EX_TEMPFAIL) on every failure, usage errors and \
panics included, so the MTA keeps the message queued and retries; it never exits with a code that makes an MTA \
bounce mail. Every other command exits 0 on success, 1 on failure (verify: a missing or corrupt blob; release: \
anything deferred, failed or not sent; config check: any problem), 2 on a usage error. search with no match \
exits 0.",
    ),
    (
        "ENVIRONMENT",
        "QUARANTINE_STORE\tThe store directory, unless --store is given.
QUARANTINE_CONFIG\tThe config file, unless --config is given.
SUDO_USER, USER\tThe actor recorded in the audit log, unless --actor is given.
TZ\tThe local time zone for --since and --until (HH:MM, today, yesterday).",
    ),
    (
        "FILES",
        "/etc/quarantine/config.toml\tThe configuration (docs/config.md). Check it with quarantine config check.
/var/lib/quarantine\tThe store: index.sqlite, blobs/, tmp/. Mode 0700, owned by the account that runs hold \
(quarantine). Removing or purging the package never deletes it.
/lib/systemd/system/quarantine-purge.timer\tThe nightly retention purge (and its .service): installed, not enabled.
/usr/share/doc/quarantine/examples/cron.d-quarantine\tThe same from cron, and a weekly verify --deep.",
    ),
    (
        "SEE ALSO",
        "pipe(8) for the Postfix transport that runs hold, zstd(1) (every blob is a plain zstd frame), sqlite3(1). \
docs/config.md, docs/operations.md and docs/storage.md in /usr/share/doc/quarantine.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_keep_commands_literal() {
        let b = blocks("Say:\n  a --b\n  c\nmore\ntext\n\nnext");
        assert_eq!(
            b,
            vec![
                Block::Text("Say:".into()),
                Block::Literal(vec!["  a --b".into(), "  c".into()]),
                Block::Text("more text".into()),
                Block::Text(String::new()),
                Block::Text("next".into()),
            ]
        );
        assert_eq!(escape(".x -y \\z"), "\\&.x \\-y \\ez");
    }

    #[test]
    fn every_visible_subcommand_gets_a_page() {
        let mut cmd = Cli::command().disable_help_subcommand(true);
        cmd.build();
        let names: Vec<String> = pages(&cmd).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names[0], "quarantine.1");
        for sub in cmd.get_subcommands() {
            let page = format!("quarantine-{}.1", sub.get_name());
            assert_eq!(names.contains(&page), !sub.is_hide_set(), "{page}");
        }
        assert!(names.contains(&"quarantine-config-check.1".to_string()), "{names:?}");
        for (page, _) in EXAMPLES {
            assert!(names.contains(&format!("{page}.1")), "EXAMPLES for a page that does not exist: {page}");
        }
    }
}
