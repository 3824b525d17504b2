//! One message in, from either listener: map it to verdicts (`verdict`), write one spool file per verdict group,
//! commit them together (`commit`), log one line. All or nothing: when any group fails, every file of the
//! message is discarded and the caller tempfails it (the MTA's retry, with the same queue id and bytes, lands on
//! the same ids: ingest merges).

use std::time::Instant;

use quarantine_store::{HoldRequest, ScanMeta, SpoolStaged};

use crate::config::ServeConfig;
use crate::server::Shared;
use crate::verdict;

/// A message as it arrived.
pub struct Incoming<'a> {
    /// `"smtp"`, `"lmtp"`, `"http"`: for the log.
    pub via: &'static str,
    pub from: &'a str,
    pub rcpts: &'a [String],
    pub bytes: &'a [u8],
    pub scan: Option<ScanMeta>,
    /// A queue id the intake knows (rspamd's `Qid`); else the `Received:` header's, when configured.
    pub queue_id: Option<String>,
    /// Trusted header-like facts for the rules (rspamd's `X-Rspamd-Action` from its metadata).
    pub extra: Vec<(String, String)>,
    pub started: Instant,
    /// The LMTP/SMTP session it came over (the log's `session=`, matching that session's closing line).
    pub session: Option<u64>,
}

/// The ids the message got, one per verdict group, or why it was not taken (one line, for a 451/503).
pub fn deliver(sh: &Shared, cfg: &ServeConfig, m: Incoming) -> Result<Vec<String>, String> {
    let d = verdict::decide(&cfg.mapping, m.from, m.rcpts, m.bytes, &m.extra);
    let queue_id = m.queue_id.clone().or(d.queue_id.clone());
    let gc = &sh.commit;
    gc.writing();
    let mut staged: Vec<SpoolStaged> = Vec::new();
    for g in &d.groups {
        let req = HoldRequest {
            from: d.from.clone(),
            recipients: g.recipients.clone(),
            verdict: g.verdict.clone(),
            scanner: g.scanner.clone(),
            reason: g.reason.clone(),
            queue_id: queue_id.clone(),
            scanner_version: d.scanner_version.clone(),
        };
        match gc.spool().stage(&req, m.scan.as_ref(), &mut &m.bytes[..]) {
            Ok(s) => staged.push(s),
            Err(e) => {
                gc.abandon();
                staged.into_iter().for_each(SpoolStaged::discard);
                let why = e.to_string();
                log(&m, &d, None, Some(&why));
                return Err(why);
            }
        }
    }
    if let Err(e) = gc.commit() {
        staged.into_iter().for_each(SpoolStaged::discard);
        log(&m, &d, None, Some(&e));
        return Err(e);
    }
    let ids: Vec<String> = staged.into_iter().map(|s| s.outcome.id).collect();
    log(&m, &d, Some(&ids), None);
    Ok(ids)
}

/// One line per message on stderr, in the MTA's style (`key=value, ...`).
fn log(m: &Incoming, d: &verdict::Decision, ids: Option<&[String]>, err: Option<&str>) {
    let rcpts: Vec<&str> = d.groups.iter().flat_map(|g| g.recipients.iter().map(String::as_str)).collect();
    let verdicts: Vec<&str> = d.groups.iter().map(|g| g.verdict.as_str()).collect();
    let ms = m.started.elapsed().as_secs_f64() * 1000.0;
    let status = match (ids, err) {
        (Some(ids), _) => format!("status=held id={}", ids.join(",")),
        (None, Some(e)) => format!("status=deferred ({e})"),
        (None, None) => "status=deferred".into(),
    };
    let via = match m.session {
        Some(n) => format!("{}, session={n}", m.via),
        None => m.via.to_string(),
    };
    eprintln!(
        "quarantine serve: {status}, via={via}, from=<{}>, to=<{}>, verdict={}, size={}, ms={ms:.1}",
        printable(&d.from),
        rcpts.iter().map(|r| printable(r)).collect::<Vec<_>>().join(">,<"),
        verdicts.join(","),
        m.bytes.len(),
    );
}

/// Control characters escaped: a log line stays one line whatever the sender wrote.
pub fn printable(s: &str) -> String {
    s.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}
