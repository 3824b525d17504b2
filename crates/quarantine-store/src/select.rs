//! SELECTORS (DESIGN section 5), shared by search, export, release and purge: AND across kinds, OR within one
//! repeated kind. Addresses compare case-insensitively. Compiled to one SQL `WHERE` clause over `messages m`, with
//! recipient, sender, Message-ID and verdict+time selections written so they are index seeks.

use rusqlite::types::Value;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::ids;
use crate::state::RecipientState;
use quarantine_mail::address;

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Selector {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
    /// Envelope recipients (Bcc recipients included).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rcpts: Vec<String>,
    /// Envelope senders; `<>` or `""` selects the null sender.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub froms: Vec<String>,
    /// Case-insensitive substrings of the From header.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub header_froms: Vec<String>,
    /// Case-insensitive substrings of the decoded Subject.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub message_ids: Vec<String>,
    /// Exact verdicts, or globs (`*`, `?`, `[...]`) such as `PMX:*`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scanners: Vec<String>,
    /// Scanner / signature-database versions, exact or globs (as for verdicts), e.g. `ClamAV 1.4.1/27*`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scanner_versions: Vec<String>,
    /// Only messages held again after a release (`requarantined_from` set).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub requarantined: bool,
    /// Case-insensitive substrings of attachment file names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<String>,
    /// Received at or after (unix microseconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_us: Option<i64>,
    /// Received before (unix microseconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until_us: Option<i64>,
    /// Messages with at least one recipient in one of these states; `purged` selects tombstones. Without it,
    /// only live (not purged) messages match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<RecipientState>,
}

/// A `WHERE` clause over `messages m` and its parameters.
#[derive(Clone)]
pub struct Sql {
    pub clause: String,
    pub params: Vec<Value>,
    /// The clause is over `recipients r JOIN messages m` and names one recipient's live rows of the
    /// `recipients_live` index (see `search::by_rcpt`), which gives them newest first.
    pub(crate) by_rcpt: bool,
    /// With `by_rcpt`: the recipients' copies of their message's rowid can be trusted, and the join goes through
    /// them (migration 0007; see `search::refresh_message_rowids`).
    pub(crate) by_rowid: bool,
}

impl Sql {
    /// The tables the clause is over.
    pub(crate) fn from(&self) -> &'static str {
        if self.by_rcpt && self.by_rowid {
            // The id is checked as well: a stale copy can hide a row, never show another message's.
            "recipients r JOIN messages m ON m.rowid = r.message_rowid AND m.id = r.message"
        } else if self.by_rcpt {
            "recipients r JOIN messages m ON m.id = r.message"
        } else {
            "messages m"
        }
    }
}

impl Selector {
    /// True when nothing narrows the selection (release and purge then demand `--all`).
    pub fn is_empty(&self) -> bool {
        *self == Selector::default()
    }

    pub fn validate(&self) -> Result<()> {
        // An empty value (`--subject "$UNSET"`) would match everything, or nothing useful: never a selection.
        let text_flags: [(&str, &Vec<String>); 10] = [
            ("--id", &self.ids),
            ("--rcpt", &self.rcpts),
            ("--from", &self.froms),
            ("--header-from", &self.header_froms),
            ("--subject", &self.subjects),
            ("--message-id", &self.message_ids),
            ("--verdict", &self.verdicts),
            ("--scanner", &self.scanners),
            ("--scanner-version", &self.scanner_versions),
            ("--attachment", &self.attachments),
        ];
        for (flag, values) in text_flags {
            if values.iter().any(|v| v.trim().is_empty()) {
                let hint = if flag == "--from" { " (use '<>' for the null sender)" } else { "" };
                return Err(Error::Invalid(format!("{flag} was given an empty value{hint}: nothing to select on")));
            }
        }
        if let (Some(a), Some(b)) = (self.since_us, self.until_us) {
            if a >= b {
                return Err(Error::Invalid("--since is not before --until: nothing can match".into()));
            }
        }
        Ok(())
    }

    pub fn to_sql(&self) -> Sql {
        let mut parts: Vec<String> = Vec::new();
        let mut params: Vec<Value> = Vec::new();
        let mut any =
            |parts: &mut Vec<String>, items: &[String], one: &dyn Fn(usize) -> String, f: &dyn Fn(&str) -> String| {
                if items.is_empty() {
                    return;
                }
                let ors: Vec<String> = items
                    .iter()
                    .map(|it| {
                        params.push(Value::Text(f(it)));
                        one(params.len())
                    })
                    .collect();
                parts.push(format!("({})", ors.join(" OR ")));
            };
        let same = |s: &str| s.to_string();
        let lower = |s: &str| s.to_lowercase();
        any(&mut parts, &self.ids, &|i| format!("m.id = ?{i}"), &|s| ids::normalise(s));
        any(&mut parts, &self.rcpts, &|i| rcpt_lookup_form(i), &|s| address::fold(strip_brackets(s)));
        any(&mut parts, &self.froms, &|i| format!("m.env_from_lc = ?{i}"), &|s| address::fold(strip_brackets(s)));
        any(&mut parts, &self.message_ids, &|i| format!("m.message_id = ?{i}"), &|s| strip_brackets(s).to_string());
        for (column, values) in [("m.verdict", &self.verdicts), ("m.scanner_version", &self.scanner_versions)] {
            let (mut globs, mut exact) = (Vec::new(), Vec::new());
            for v in values {
                match verdict_pattern(v) {
                    VerdictPattern::Exact(s) => exact.push(s),
                    VerdictPattern::Glob(g) => globs.push(g),
                }
            }
            match (globs.is_empty(), exact.is_empty()) {
                (true, true) => {}
                (true, false) => any(&mut parts, &exact, &|i| format!("{column} = ?{i}"), &same),
                (false, true) => any(&mut parts, &globs, &|i| format!("{column} GLOB ?{i}"), &same),
                // Mixed: exact values as one-item GLOBs of themselves would misread `[`; keep both kinds in one OR.
                (false, false) => {
                    any(&mut parts, &exact, &|i| format!("{column} = ?{i}"), &same);
                    let exact_clause = parts.pop().expect("just pushed");
                    any(&mut parts, &globs, &|i| format!("{column} GLOB ?{i}"), &same);
                    let glob_clause = parts.pop().expect("just pushed");
                    parts.push(format!("({exact_clause} OR {glob_clause})"));
                }
            }
        }
        if self.requarantined {
            parts.push("m.requarantined_from IS NOT NULL".into());
        }
        // Scanner names are free text typed by whoever configured the filter: `pmx` and `PMX` are the same one.
        any(&mut parts, &self.scanners, &|i| format!("m.scanner = ?{i} COLLATE NOCASE"), &same);
        any(
            &mut parts,
            &self.attachments,
            &|i| format!("m.id IN (SELECT message FROM attachments WHERE instr(lower(name), ?{i}) > 0)"),
            &lower,
        );
        // Subject and From-header text: the trigram index (search.rs), checked per row when a narrower selector
        // already picks a few messages, looked up first otherwise.
        let narrow = [&self.ids, &self.rcpts, &self.froms, &self.message_ids].iter().any(|v| !v.is_empty());
        for (column, texts) in [("hdr_from", &self.header_froms), ("subject", &self.subjects)] {
            if !texts.is_empty() {
                let ors: Vec<String> =
                    texts.iter().map(|t| crate::text::text_clause(column, t, narrow, &mut params)).collect();
                parts.push(format!("({})", ors.join(" OR ")));
            }
        }
        if let Some(t) = self.since_us {
            params.push(Value::Integer(t));
            parts.push(format!("m.received_us >= ?{}", params.len()));
        }
        if let Some(t) = self.until_us {
            params.push(Value::Integer(t));
            parts.push(format!("m.received_us < ?{}", params.len()));
        }
        let want_purged = self.states.contains(&RecipientState::Purged);
        let live_states: Vec<RecipientState> =
            self.states.iter().copied().filter(|s| *s != RecipientState::Purged).collect();
        let mut state_ors: Vec<String> = Vec::new();
        if want_purged {
            state_ors.push("m.purged_us IS NOT NULL".into());
        }
        if !live_states.is_empty() {
            let mut qs = Vec::new();
            for s in live_states {
                params.push(Value::Text(s.as_str().into()));
                qs.push(format!("?{}", params.len()));
            }
            state_ors.push(format!(
                "(m.purged_us IS NULL AND m.id IN (SELECT message FROM recipients WHERE state IN ({})))",
                qs.join(", ")
            ));
        }
        if state_ors.is_empty() {
            parts.push(crate::search::LIVE.into());
        } else {
            parts.push(format!("({})", state_ors.join(" OR ")));
        }
        Sql { clause: parts.join(" AND "), params, by_rcpt: false, by_rowid: false }
    }
}

fn strip_brackets(s: &str) -> &str {
    let t = s.trim();
    t.strip_prefix('<').and_then(|x| x.strip_suffix('>')).unwrap_or(t)
}

enum VerdictPattern {
    Exact(String),
    /// An SQLite GLOB pattern.
    Glob(String),
}

/// A `--verdict` value: exact unless it has an unescaped `*`, `?` or `[`. A backslash makes the next character
/// literal (`PMX\*` selects the verdict `PMX*` exactly; `\\` is one backslash), so any verdict can be selected.
fn verdict_pattern(v: &str) -> VerdictPattern {
    let (mut literal, mut glob, mut wild) = (String::new(), String::new(), false);
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let lit = chars.next().unwrap_or('\\');
                literal.push(lit);
                match lit {
                    '*' | '?' | '[' => glob.push_str(&format!("[{lit}]")),
                    _ => glob.push(lit),
                }
            }
            '*' | '?' | '[' => {
                wild = true;
                glob.push(c);
            }
            _ => {
                literal.push(c);
                glob.push(c);
            }
        }
    }
    if wild {
        VerdictPattern::Glob(glob)
    } else {
        VerdictPattern::Exact(literal)
    }
}

/// The query `Store::select` runs: matching messages, newest first.
pub(crate) fn select_query(sql: &Sql, limit: Option<u64>) -> String {
    query_of(crate::message::MESSAGE_COLUMNS, sql, limit, true)
}

/// The query `search` runs: as [`select_query`], with each message's attachment names (migration 0006) and rowid
/// after its columns (`message::NAMES_AT`, `message::ROWID_AT`). Driven by one recipient, ties in `received_us`
/// come in index order unless `ties` (an SQL sort of each run of them): `search` sorts them itself.
pub(crate) fn search_query(sql: &Sql, limit: Option<u64>, ties: bool) -> String {
    use crate::message::{MESSAGE_COLUMNS, RECIPIENT_COLUMNS};
    let columns = if sql.by_rcpt {
        // The driving recipient, and whether it is the message's only one (`message::COUNT_AT`, `RCPT_AT`).
        format!("{MESSAGE_COLUMNS}, m.attachment_names, m.rowid, m.recipient_count, r.rowid, {RECIPIENT_COLUMNS}")
    } else {
        format!("{MESSAGE_COLUMNS}, m.attachment_names, m.rowid")
    };
    query_of(&columns, sql, limit, ties)
}

fn query_of(columns: &str, sql: &Sql, limit: Option<u64>, ties: bool) -> String {
    let order = match (sql.by_rcpt, ties) {
        (true, true) => "r.received_us DESC, m.rowid DESC",
        (true, false) => "r.received_us DESC",
        (false, _) => "m.received_us DESC, m.rowid DESC",
    };
    let mut q = format!("SELECT {columns} FROM {} WHERE {} ORDER BY {order}", sql.from(), sql.clause);
    if let Some(n) = limit {
        q.push_str(&format!(" LIMIT {n}"));
    }
    q
}

impl crate::store::Store {
    /// Messages matching `sel`, newest first, at most `limit`, with recipients and attachments filled in.
    pub fn select(&self, sel: &Selector, limit: Option<u64>) -> Result<Vec<crate::MessageRecord>> {
        let sql = sel.to_sql();
        let e = self.sql_err();
        let q = select_query(&sql, limit);
        self.read_cache()?;
        let mut stmt = self.conn.prepare(&q).map_err(&e)?;
        let mut out: Vec<crate::MessageRecord> = stmt
            .query_map(crate::db::params_from_iter(sql.params.iter()), crate::message::message_from_row)
            .map_err(&e)?
            .collect::<rusqlite::Result<_>>()
            .map_err(&e)?;
        self.fill_details_many(&mut out)?;
        Ok(out)
    }

    /// How many messages match `sel`.
    pub fn count(&self, sel: &Selector) -> Result<u64> {
        let sql = sel.to_sql();
        if sql.clause == crate::search::LIVE {
            return self.live_count();
        }
        let e = self.sql_err();
        let n: i64 = self
            .conn
            .query_row(
                &format!("SELECT count(*) FROM messages m WHERE {}", sql.clause),
                crate::db::params_from_iter(sql.params.iter()),
                |r| r.get(0),
            )
            .map_err(&e)?;
        Ok(n as u64)
    }
}

/// A recipient selection as a lookup: every message of the address, from the (address_lc, message) index, then
/// sorted. Right when the address has few messages; see [`rcpt_walk_form`].
pub(crate) fn rcpt_lookup_form(i: usize) -> String {
    format!("m.id IN (SELECT message FROM recipients WHERE address_lc = ?{i})")
}

/// A recipient selection over `recipients r JOIN messages m` (see `search::by_rcpt`): the address's entries of
/// the partial index `recipients_live`, whose messages are not purged.
pub(crate) fn rcpt_live_form(i: usize) -> String {
    format!("(r.address_lc = ?{i} AND r.live = 1)")
}

/// The same selection as a per-row check, so a query can walk messages newest first and stop after the first
/// matches (`search` on a busy address with `--limit`): one probe of the same index per message walked.
pub(crate) fn rcpt_walk_form(i: usize) -> String {
    format!("EXISTS (SELECT 1 FROM recipients r WHERE r.address_lc = ?{i} AND r.message = m.id)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_selector_is_live_messages_only() {
        let s = Selector::default();
        assert!(s.is_empty());
        assert_eq!(s.to_sql().clause, "m.purged_us IS NULL");
    }

    #[test]
    fn and_across_or_within() {
        let s = Selector {
            rcpts: vec!["A@x".into(), "<b@x>".into()],
            verdicts: vec!["PMX:*".into(), "SPAM".into()],
            ..Default::default()
        };
        let sql = s.to_sql();
        assert!(sql.clause.contains(" AND "), "{}", sql.clause);
        assert_eq!(sql.params[0], Value::Text("a@x".into()));
        assert_eq!(sql.params[1], Value::Text("b@x".into()));
        assert!(sql.clause.contains("m.verdict = ?") && sql.clause.contains("m.verdict GLOB ?"), "{}", sql.clause);
    }

    #[test]
    fn backslash_escapes_glob_characters_in_verdicts() {
        let exact = |v: &str| match verdict_pattern(v) {
            VerdictPattern::Exact(s) => Some(s),
            VerdictPattern::Glob(_) => None,
        };
        assert_eq!(exact("PMX\\*").as_deref(), Some("PMX*"));
        assert_eq!(exact("a\\\\b").as_deref(), Some("a\\b"));
        assert_eq!(exact("trailing\\").as_deref(), Some("trailing\\"));
        assert!(matches!(verdict_pattern("PMX\\**"), VerdictPattern::Glob(g) if g == "PMX[*]*"));
        let empty = Selector { subjects: vec![String::new()], ..Default::default() };
        assert!(empty.validate().unwrap_err().to_string().contains("--subject"));
    }
}
