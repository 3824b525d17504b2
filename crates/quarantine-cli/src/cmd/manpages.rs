//! `quarantine manpages DIR` (hidden): writes quarantine(1) and one page per subcommand (`quarantine-hold.1`,
//! `quarantine-config-check.1`, ...) from the clap definitions, for scripts/package. clap_mangen renders the name,
//! synopsis, description, options and subcommands; this module adds what a man page needs beyond `--help`:
//! the `after_long_help`/`after_help` text as EXAMPLES and NOTES (kept as written, not refilled), and EXIT STATUS,
//! ENVIRONMENT, FILES and SEE ALSO on quarantine(1) from `docs/cli.md`. No prose is kept here: the help text and
//! the docs are the one source.

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
    let (examples, notes) = split_after_help(cmd);
    section(w, "EXAMPLES", &examples)?;
    section(w, "NOTES", &notes)?;
    if name == "quarantine" {
        for (title, body) in top_level_sections() {
            section(w, &title, &blocks(&body))?;
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
        if literal && first.starts_with("Examples") {
            // `Examples, the incident drill (...):` keeps its title as a line of prose.
            if first != "Examples:" {
                let title = first.strip_prefix("Examples, ").unwrap_or(first);
                let mut chars = title.chars();
                let title: String = chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default();
                examples.push(Block::Text(title));
            }
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

/// quarantine(1)'s sections beyond the options: `docs/cli.md`, one `## Title` per section (`- `TERM`: text` lines
/// become tagged paragraphs).
const CLI_DOC: &str = include_str!("../../../../docs/cli.md");

/// The `## ` sections of [`CLI_DOC`], as (TITLE, body in the [`blocks`] syntax).
fn top_level_sections() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in CLI_DOC.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            out.push((title.to_uppercase(), String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            let line = match line.strip_prefix("- `").and_then(|l| l.split_once("`: ")) {
                // `- `A`, `B`: text` names two terms.
                Some((term, text)) => format!("{}\t{text}", term.replace("`, `", ", ")),
                None => line.to_string(),
            };
            body.push_str(&line);
            body.push('\n');
        }
    }
    for (_, body) in &mut out {
        *body = body.trim().to_string();
    }
    out
}

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
        let titles: Vec<String> = top_level_sections().into_iter().map(|(t, _)| t).collect();
        assert_eq!(titles, ["EXIT STATUS", "ENVIRONMENT", "FILES", "SEE ALSO"]);
        let top = String::from_utf8(pages(&cmd).unwrap().remove(0).1).unwrap();
        for needle in ["incident drill", "QUARANTINE_STORE", "EX_TEMPFAIL", "purge \\-\\-dry\\-run"] {
            assert!(top.contains(needle), "quarantine.1 lacks {needle:?}");
        }
    }
}
