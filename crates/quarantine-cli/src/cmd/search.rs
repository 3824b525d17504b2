//! `quarantine search [SELECTORS] [--json | --csv] [--limit N]`: the helpdesk's view, newest first.
//!
//! The table escapes every field (hostile headers cannot drive the terminal) and, on a terminal, is cut to its
//! width and to `--limit` rows (50 by default) with a line saying how many more match. `--json` (JSON Lines, the
//! `show --json` object per message) and `--csv` stream every match unless `--limit` is given.

use std::io::{BufWriter, IsTerminal, Write};

use clap::Args;
use quarantine_store::MessageRecord;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use super::{selectors, CmdResult, Context};
use crate::cmd::selectors::SelectorArgs;
use crate::exit::Status;
use crate::output::escape;

/// Rows a table shows on a terminal when `--limit` is not given.
const TERMINAL_LIMIT: u64 = 50;
/// How far past the shown rows a count goes when a common text term makes an exact count slow.
const MORE_CAP: u64 = 1_000;

#[derive(Debug, Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pub sel: SelectorArgs,
    /// JSON Lines: one object per message (the `show --json` fields), all recipients with their states.
    #[arg(long, conflicts_with = "csv", help_heading = "Output")]
    pub json: bool,
    /// CSV (RFC 4180) with a header row.
    #[arg(long, help_heading = "Output")]
    pub csv: bool,
    /// At most N messages, newest first (a table on a terminal shows 50 unless this is given).
    #[arg(long, value_name = "N", help_heading = "Output", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
}

pub fn run(ctx: &Context, a: SearchArgs) -> CmdResult {
    let sel = selectors::resolve(&a.sel)?;
    let store = ctx.open()?;
    let stdout = std::io::stdout();
    let tty = stdout.is_terminal();
    let mut out = BufWriter::new(stdout.lock());

    if a.json || a.csv {
        let output = |e: std::io::Error| quarantine_store::Error::Output(e);
        let n = if a.csv {
            let mut w = csv::Writer::from_writer(&mut out);
            w.write_record(CSV_HEADER).map_err(std::io::Error::from)?;
            let n = store.select_each(&sel, a.limit, &mut |rec| {
                w.write_record(csv_record(&rec, tty)).map_err(|e| output(e.into()))
            })?;
            w.flush()?;
            n
        } else {
            // Each line is written into memory and then whole, not in the ~100 pieces a JSON line is made of.
            let mut line = Vec::with_capacity(4096);
            store.select_each(&sel, a.limit, &mut |rec| {
                line.clear();
                crate::output::json_line(&rec, &mut line);
                line.push(b'\n');
                out.write_all(&line).map_err(output)
            })?
        };
        out.flush()?;
        if n == 0 {
            eprintln!("no messages match");
        } else if a.limit == Some(n) && std::io::stderr().is_terminal() {
            let (total, exact) = store.count_matches(&sel, n + MORE_CAP)?;
            if total > n {
                let more = if exact { (total - n).to_string() } else { format!("more than {}", total - n) };
                eprintln!("{more} more match (raise --limit to see them)");
            }
        }
        return Ok(Status::Success);
    }

    let limit = a.limit.or(tty.then_some(TERMINAL_LIMIT));
    let (records, more) = match limit {
        Some(l) => {
            let page = store.search_page(&sel, l, l + MORE_CAP)?;
            let shown = page.records.len() as u64;
            let more = match page.total.saturating_sub(shown) {
                0 => None,
                n if page.exact => Some(n.to_string()),
                n => Some(format!("more than {n}")),
            };
            (page.records, more)
        }
        None => {
            let mut all = Vec::new();
            store.select_each(&sel, None, &mut |r| {
                all.push(r);
                Ok(())
            })?;
            (all, None)
        }
    };
    if records.is_empty() {
        writeln!(out, "no messages match")?;
        out.flush()?;
        return Ok(Status::Success);
    }
    let width = if tty {
        terminal_size::terminal_size().map(|(w, _)| w.0 as usize)
    } else {
        std::env::var("COLUMNS").ok().and_then(|c| c.trim().parse::<usize>().ok())
    };
    for line in table(&records, width) {
        writeln!(out, "{line}")?;
    }
    if let Some(more) = more {
        writeln!(out, "... and {more} more match (use --limit N, or --json or --csv for all)")?;
    }
    out.flush()?;
    Ok(Status::Success)
}

const HEADER: [&str; 8] = ["ID", "RECEIVED", "VERDICT", "FROM", "TO", "SUBJECT", "SIZE", "STATE"];
/// Columns cut to share the width: verdict, envelope sender, recipients, subject. The rest are never cut.
const FLEX: [usize; 4] = [2, 3, 4, 5];
const TO_COLUMN: usize = 4;
const SIZE_COLUMN: usize = 6;
/// A cut column keeps at least this many cells, so a narrow terminal still shows a hint of each field.
const MIN_FLEX: usize = 6;
const GAP: &str = "  ";

/// The table's cells: every field escaped, so hostile headers reach the terminal as visible text.
fn cells(r: &MessageRecord) -> [String; 8] {
    let to = match r.recipients.as_slice() {
        [] => String::new(),
        [one] => one.address.clone(),
        [first, rest @ ..] => format!("{} +{}", first.address, rest.len()),
    };
    let from = if r.from.is_empty() { "<>" } else { r.from.as_str() };
    [
        escape(&r.id),
        escape(&r.received),
        escape(&r.verdict),
        escape(from),
        escape(&to),
        escape(r.subject.as_deref().unwrap_or("")),
        crate::output::human_bytes(r.size),
        escape(&r.state),
    ]
}

/// Lays the table out in lines. With a width (the terminal's, or `COLUMNS` when piped), the flexible columns are
/// cut (with `…`) to fit: each gets its full width if it can, and the longest share what is left equally.
/// Without one, fields are printed whole.
fn table(records: &[MessageRecord], width: Option<usize>) -> Vec<String> {
    let rows: Vec<[String; 8]> = records.iter().map(cells).collect();
    let header: [String; 8] = HEADER.map(String::from);
    let mut widths: [usize; 8] = header.each_ref().map(|h| h.width());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.width());
        }
    }
    if let Some(total) = width {
        let fixed: usize = (0..8).filter(|i| !FLEX.contains(i)).map(|i| widths[i]).sum::<usize>() + GAP.len() * 7;
        let mut left = total.saturating_sub(fixed);
        let mut flex = FLEX;
        flex.sort_by_key(|&i| widths[i]);
        // The recipient column never gets narrower than its widest " +N" (a count is never cut).
        let min_to = rows.iter().filter_map(|r| more(&r[TO_COLUMN]).map(|at| r[TO_COLUMN][at..].width())).max();
        for (k, &i) in flex.iter().enumerate() {
            let mut share = (left / (flex.len() - k)).max(MIN_FLEX);
            if i == TO_COLUMN {
                share = share.max(min_to.unwrap_or(0));
            }
            widths[i] = widths[i].min(share);
            left = left.saturating_sub(widths[i]);
        }
    }
    std::iter::once(&header)
        .chain(rows.iter())
        .map(|row| {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                // A cut recipient column keeps its "+N": how many others got the mail matters more than a name.
                let cell = match (i, more(cell)) {
                    (TO_COLUMN, Some(at)) if cell.width() > widths[i] => {
                        let suffix = &cell[at..];
                        cut(&cell[..at], widths[i].saturating_sub(suffix.width())) + suffix
                    }
                    _ => cut(cell, widths[i]),
                };
                let pad = " ".repeat(widths[i].saturating_sub(cell.width()));
                if i > 0 {
                    line.push_str(GAP);
                }
                if i == SIZE_COLUMN {
                    line.push_str(&pad);
                    line.push_str(&cell);
                } else {
                    line.push_str(&cell);
                    line.push_str(&pad);
                }
            }
            line.trim_end().to_string()
        })
        .collect()
}

/// Where the " +N" count of other recipients starts in a recipient cell, if it has one.
fn more(cell: &str) -> Option<usize> {
    let at = cell.rfind(" +")?;
    cell[at + 2..].bytes().all(|b| b.is_ascii_digit()).then_some(at)
}

/// `s` cut to at most `width` terminal cells, ending in `…` when cut.
fn cut(s: &str, width: usize) -> String {
    if s.width() <= width {
        return s.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > width {
            break;
        }
        out.push(c);
        used += w;
    }
    if width > 0 {
        out.push('…');
    }
    out
}

const CSV_HEADER: [&str; 17] = [
    "id",
    "received",
    "verdict",
    "scanner",
    "reason",
    "from",
    "recipients",
    "recipient_states",
    "subject",
    "header_from",
    "header_to",
    "message_id",
    "size",
    "state",
    "queue_id",
    "hash",
    "attachments",
];

/// One CSV row. Recipients and their states are two columns of `, `-separated lists in the same order. Data is
/// written as it is (the csv crate quotes commas, quotes and line breaks), except on a terminal, where control
/// characters are escaped as in the table.
fn csv_record(r: &MessageRecord, tty: bool) -> Vec<String> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let fields = vec![
        r.id.clone(),
        r.received.clone(),
        r.verdict.clone(),
        opt(&r.scanner),
        opt(&r.reason),
        r.from.clone(),
        r.recipients.iter().map(|x| x.address.as_str()).collect::<Vec<_>>().join(", "),
        r.recipients.iter().map(|x| x.state.as_str()).collect::<Vec<_>>().join(", "),
        opt(&r.subject),
        opt(&r.header_from),
        opt(&r.header_to),
        opt(&r.message_id),
        r.size.to_string(),
        r.state.clone(),
        opt(&r.queue_id),
        r.hash.clone(),
        r.attachments.join(", "),
    ];
    let fields = fields.into_iter().map(neutralise_formula);
    if tty {
        fields.map(|f| escape(&f)).collect()
    } else {
        fields.collect()
    }
}

/// A cell a spreadsheet would run as a formula (leading `=`, `+`, `-`, `@`, tab or CR; DESIGN section 5) gets a
/// leading `'`, which spreadsheets show as text and do not evaluate (OWASP's CSV injection advice).
fn neutralise_formula(cell: String) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_formulas_are_neutralised() {
        for bad in ["=1+1", "+1", "-2", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(neutralise_formula(bad.into()), format!("'{bad}"));
        }
        assert_eq!(neutralise_formula("plain = text".into()), "plain = text");
    }

    #[test]
    fn cut_counts_terminal_cells() {
        assert_eq!(cut("hello", 5), "hello");
        assert_eq!(cut("hello world", 6), "hello…");
        assert_eq!(cut("日本語テキスト", 5), "日本…");
        assert_eq!(cut("abc", 0), "");
    }
}
