//! `quarantine show ID`: one message, readable, as JSON, its header block, or its original bytes.

use clap::Args;
use std::io::{IsTerminal, Write};

use quarantine_store::header_block;
use quarantine_store::MessageRecord;

use super::{CmdResult, Context};
use crate::exit::Status;
use crate::output::escape;

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

pub fn run(ctx: &Context, a: ShowArgs) -> CmdResult {
    let store = ctx.open()?;
    let rec = store.message(&a.id)?;
    let mut out = std::io::stdout().lock();
    if a.raw || a.headers {
        // Verified in full before the first byte is written: corrupt data is never passed off as the original.
        let bytes = store.original(&rec)?;
        let wanted = if a.raw { &bytes[..] } else { header_block(&bytes) };
        if std::io::stdout().is_terminal() {
            // A person is reading: hostile mail must not drive the terminal. Pipes and files get the exact bytes.
            out.write_all(escape_lines(wanted).as_bytes())?;
        } else {
            out.write_all(wanted)?;
        }
    } else if a.json {
        serde_json::to_writer(&mut out, &rec).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        out.write_all(summary(&rec).as_bytes())?;
    }
    out.flush()?;
    Ok(Status::Success)
}

fn summary(r: &MessageRecord) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: &str| s.push_str(&format!("{k:<13} {}\n", escape(v)));
    line("id", &r.id);
    line("received", &r.received);
    line("state", &r.state);
    line("verdict", &r.verdict);
    if let Some(v) = &r.scanner {
        line("scanner", v);
    }
    if let Some(v) = &r.scanner_version {
        line("scanner ver.", v);
    }
    if let Some(v) = &r.requarantined_from {
        line("requarantined", &format!("held again after the release of {v} (its trace MAC is valid)"));
    }
    if let Some(v) = &r.reason {
        line("reason", v);
    }
    if let Some(v) = &r.queue_id {
        line("queue id", v);
    }
    if let Some(scan) = &r.scan {
        let mut v = scan.action.clone().unwrap_or_else(|| "-".into());
        if let Some(score) = scan.score {
            v.push_str(&format!(", score {score}"));
        }
        let names: Vec<String> = scan
            .symbols
            .iter()
            .flat_map(|s| s.as_array().into_iter().flatten())
            .filter_map(|s| s.get("name").and_then(|n| n.as_str()).map(str::to_string))
            .collect();
        if !names.is_empty() {
            v.push_str(&format!(", symbols {}", names.join(" ")));
        }
        line("scan", &v);
    }
    line("envelope from", &format!("<{}>", r.from));
    for (i, rc) in r.recipients.iter().enumerate() {
        let mut v = format!("<{}>  {}", rc.address, rc.state);
        if rc.attempts > 0 {
            v.push_str(&format!(", {} attempt(s)", rc.attempts));
        }
        if let Some(t) = &rc.released_at {
            v.push_str(&format!(", at {t}"));
        }
        if let Some(reply) = rc.reply.as_ref().or(rc.last_error.as_ref()) {
            v.push_str(&format!(": {reply}"));
        }
        line(if i == 0 { "envelope to" } else { "" }, &v);
    }
    for (k, v) in [
        ("From", &r.header_from),
        ("To", &r.header_to),
        ("Cc", &r.header_cc),
        ("Subject", &r.subject),
        ("Message-ID", &r.message_id),
        ("Date", &r.date),
    ] {
        if let Some(v) = v {
            line(k, v);
        }
    }
    if !r.attachments.is_empty() {
        line("attachments", &r.attachments.join(", "));
    }
    if let Some(n) = &r.parse_note {
        line("parse note", n);
    }
    line("size", &format!("{} bytes", r.size));
    line("blob", &r.hash);
    if let Some(t) = &r.purged_at {
        line("purged at", t);
        line("purged by", r.purged_by.as_deref().unwrap_or("?"));
        if let Some(why) = &r.purge_reason {
            line("purge reason", why);
        }
    }
    s
}

/// Escapes each line's content for a terminal, keeping the line breaks.
fn escape_lines(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .split_inclusive('\n')
        .map(|line| {
            let body = line.trim_end_matches(['\r', '\n']);
            let end = if line.ends_with('\n') { "\n" } else { "" };
            format!("{}{end}", escape(body))
        })
        .collect()
}
