//! Turns the SELECTORS flags into the library's `Selector`, resolving times against the clock and `TZ`.

use quarantine_store::{RecipientState, Selector};

use super::CmdError;
use crate::cli::SelectorArgs;

pub fn resolve(a: &SelectorArgs) -> Result<Selector, CmdError> {
    let time = |flag: &str, v: &Option<String>| -> Result<Option<i64>, CmdError> {
        v.as_deref()
            .map(|s| {
                quarantine_store::parse_time_now(s)
                    .map(|t| t.timestamp_micros())
                    .map_err(|e| CmdError::Usage(format!("{flag}: {e}")))
            })
            .transpose()
    };
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
        since_us: time("--since", &a.since)?,
        until_us: time("--until", &a.until)?,
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
