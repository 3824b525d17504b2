//! Turns the SELECTORS flags into the library's `Selector`, resolving times against the clock and `TZ`.

use clap::Args;
use quarantine_store::{RecipientState, Selector};

use super::CmdError;

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
    /// Verdict, exact or a glob such as 'PMX:*' (repeatable); a backslash makes the next character literal.
    #[arg(long = "verdict", value_name = "V")]
    pub verdict: Vec<String>,
    /// Scanner name (repeatable).
    #[arg(long = "scanner", value_name = "S")]
    pub scanner: Vec<String>,
    /// Scanner / signature-database version, exact or a glob such as 'ClamAV 1.4.1/27*' (repeatable).
    #[arg(long = "scanner-version", value_name = "V")]
    pub scanner_version: Vec<String>,
    /// Only messages held again after a release (their trace header carried this store's valid MAC).
    #[arg(long)]
    pub requarantined: bool,
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

/// A time flag (`--since`, `--until`) as unix microseconds, resolved against the clock and `TZ`; the error names
/// the flag and the value.
pub fn time_flag(flag: &str, v: Option<&str>) -> Result<Option<i64>, CmdError> {
    v.map(|s| {
        quarantine_store::parse_time_now(s)
            .map(|t| t.timestamp_micros())
            .map_err(|e| CmdError::Usage(format!("{flag}: {e}")))
    })
    .transpose()
}

pub fn resolve(a: &SelectorArgs) -> Result<Selector, CmdError> {
    let sel = Selector {
        ids: a.id.clone(),
        rcpts: a.rcpt.clone(),
        froms: a.from.clone(),
        header_froms: a.header_from.clone(),
        subjects: a.subject.clone(),
        message_ids: a.message_id.clone(),
        verdicts: a.verdict.clone(),
        scanners: a.scanner.clone(),
        scanner_versions: a.scanner_version.clone(),
        requarantined: a.requarantined,
        attachments: a.attachment.clone(),
        since_us: time_flag("--since", a.since.as_deref())?,
        until_us: time_flag("--until", a.until.as_deref())?,
        states: a
            .state
            .iter()
            .map(|s| s.parse::<RecipientState>().map_err(|e| CmdError::Usage(format!("--state: {e}"))))
            .collect::<Result<_, _>>()?,
    };
    sel.validate().map_err(|e| CmdError::Usage(e.to_string()))?;
    Ok(sel)
}

/// Export, release and purge: an `--id` that names no message is an error (exit 1), never a quiet "nothing to do"
/// (DESIGN section 5). Checked before anything is changed.
pub fn require_known_ids(store: &quarantine_store::Store, sel: &Selector) -> Result<(), CmdError> {
    let unknown = store.unknown_ids(&sel.ids)?;
    match unknown.as_slice() {
        [] => Ok(()),
        [one] => Err(quarantine_store::Error::NoSuchMessage(crate::output::escape(one)).into()),
        many => Err(quarantine_store::Error::NoSuchMessage(
            many.iter().map(|s| crate::output::escape(s)).collect::<Vec<_>>().join(", "),
        )
        .into()),
    }
}
