//! Text search terms as SQL: the conditions behind `--subject` and `--header-from`. `select` builds a selection's
//! `WHERE` clause with them, `search` picks how each term is applied (lookup, row check or walk); neither imports
//! the other for this.
//!
//! Migration 0002 keeps an FTS5 trigram index of each message's Subject and From header (`message_text`, keyed
//! through `message_text_docs`). A trigram phrase query is a case-insensitive substring match (Unicode case
//! folding, no diacritic folding), so it has the same meaning as the scan it replaces. Text shorter than three
//! characters has no trigram; it, and ASCII text checked row by row, use `instr(lower(...))`, whose case folding is
//! ASCII-only (SQLite's `lower`): the same answer for ASCII text, but for the odd Unicode letter that folds to an
//! ASCII one (the Kelvin sign). A short non-ASCII query is tried in each case variant of its non-ASCII letters.

use rusqlite::types::Value;

/// The SQL condition for "column `column` of `m` contains `text`, case-insensitively"; pushes its parameter.
pub(crate) fn text_clause(column: &str, text: &str, narrow: bool, params: &mut Vec<Value>) -> String {
    if text.is_ascii() && (text.len() < 3 || narrow) {
        params.push(Value::Text(text.to_lowercase()));
        return instr_form(column, params.len());
    }
    if text.chars().count() < 3 {
        // No trigram, and SQLite's `lower` folds ASCII only: try each case variant of the non-ASCII letters
        // against the ASCII-lowered column (at most 4 for two letters), so `--subject é` finds `É`.
        let ors: Vec<String> = short_case_variants(text)
            .into_iter()
            .map(|v| {
                params.push(Value::Text(v));
                instr_form(column, params.len())
            })
            .collect();
        return format!("({})", ors.join(" OR "));
    }
    params.push(Value::Text(fts_phrase(column, text)));
    let i = params.len();
    if narrow {
        fts_row_form(i)
    } else {
        lookup_form(i)
    }
}

/// The spellings of a short query that SQLite's ASCII-only `lower(column)` can contain: ASCII letters lowered,
/// every other letter as itself, its lower and its upper case (when each is one character).
fn short_case_variants(text: &str) -> Vec<String> {
    let mut variants = vec![String::new()];
    for c in text.chars() {
        let mut forms: Vec<char> = vec![c.to_ascii_lowercase()];
        if !c.is_ascii() {
            for f in [c.to_lowercase().collect::<Vec<_>>(), c.to_uppercase().collect::<Vec<_>>()] {
                if let [one] = f[..] {
                    if !forms.contains(&one) {
                        forms.push(one);
                    }
                }
            }
        }
        variants = variants
            .iter()
            .flat_map(|v| {
                forms.iter().map(move |f| {
                    let mut v = v.clone();
                    v.push(*f);
                    v
                })
            })
            .collect();
    }
    variants
}

pub(crate) fn instr_form(column: &str, i: usize) -> String {
    format!("instr(lower(m.{column}), ?{i}) > 0")
}

/// "Contains" as a per-row FTS query restricted to the row's docid.
pub(crate) fn fts_row_form(i: usize) -> String {
    format!(
        "EXISTS (SELECT 1 FROM message_text_docs d JOIN message_text f ON f.rowid = d.docid \
         WHERE d.id = m.id AND message_text MATCH ?{i})"
    )
}

/// "Contains" as a lookup that drives the query.
pub(crate) fn lookup_form(i: usize) -> String {
    format!(
        "m.id IN (SELECT d.id FROM message_text f JOIN message_text_docs d ON d.docid = f.rowid \
         WHERE message_text MATCH ?{i})"
    )
}

/// An FTS5 query matching `text` as one phrase in `column`: with the trigram tokenizer, a substring match.
/// Double quotes are the only character special inside an FTS5 string; they are doubled.
pub(crate) fn fts_phrase(column: &str, text: &str) -> String {
    format!("{column} : \"{}\"", text.replace('"', "\"\""))
}

/// The column and text of a phrase made by [`fts_phrase`].
pub(crate) fn parse_phrase(phrase: &str) -> Option<(&str, String)> {
    let (column, quoted) = phrase.split_once(" : ")?;
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    Some((column, inner.replace("\"\"", "\"")))
}
