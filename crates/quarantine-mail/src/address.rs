//! Envelope addresses as the MTA hands them over.

/// An envelope address that cannot be used, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid address {addr:?}: {why}")]
pub struct BadAddress {
    pub addr: String,
    pub why: &'static str,
}

type Result<T> = std::result::Result<T, BadAddress>;

/// Normalises an envelope sender: `<>`, `""` and `<addr>` forms are accepted; the null sender becomes `""`.
pub fn envelope_sender(raw: &str) -> Result<String> {
    let a = strip_brackets(raw);
    if !a.is_empty() {
        check(a)?;
    }
    Ok(a.to_string())
}

/// Normalises an envelope recipient, which can never be empty.
pub fn envelope_recipient(raw: &str) -> Result<String> {
    let a = strip_brackets(raw);
    if a.is_empty() {
        return Err(BadAddress { addr: raw.to_string(), why: "a recipient cannot be empty" });
    }
    check(a)?;
    Ok(a.to_string())
}

fn strip_brackets(raw: &str) -> &str {
    let t = raw.trim();
    t.strip_prefix('<').and_then(|s| s.strip_suffix('>')).unwrap_or(t)
}

/// Refuses what can never be put on an SMTP command line: control characters (CR and LF smuggle commands),
/// whitespace outside a quoted local part, and angle brackets. A space inside a quoted local part
/// (`"odd quoted"@example.edu`) is legal SMTP (RFC 5321 section 4.1.2, qtextSMTP) and Postfix hands such addresses
/// over quoted: refusing them made `hold` tempfail that message until the MTA bounced it. Non-ASCII is allowed
/// (SMTPUTF8); release decides whether the relay can take it.
pub fn check(a: &str) -> Result<()> {
    let bad = |why| Err(BadAddress { addr: a.to_string(), why });
    if a.len() > 998 {
        return bad("longer than an SMTP line");
    }
    if a.chars().any(|c| c.is_control()) {
        return bad("contains a control character (CR, LF, NUL or similar)");
    }
    let unquoted = match quoted_local_part(a) {
        Some(end) => &a[end..],
        None => a,
    };
    if unquoted.chars().any(|c| c.is_whitespace()) || a.chars().any(|c| c.is_whitespace() && c != ' ') {
        return bad("contains whitespace outside a quoted local part");
    }
    if a.contains(['<', '>']) {
        return bad("contains an angle bracket");
    }
    Ok(())
}

/// Where a quoted local part (`"..."`, with `\x` escapes) ends, when `a` starts with one that is followed by `@`.
fn quoted_local_part(a: &str) -> Option<usize> {
    let rest = a.strip_prefix('"')?;
    let mut escaped = false;
    for (i, c) in rest.char_indices() {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') => escaped = true,
            (false, '"') => {
                let end = 1 + i + 1;
                return a[end..].starts_with('@').then_some(end);
            }
            _ => {}
        }
    }
    None
}

/// `a` with its local part quoted again when it needs quotes (`odd quoted@d` → `"odd quoted"@d`): an SMTP parser
/// that hands over the local part's content without its quotes (smtp-proto does) would otherwise turn a legal
/// address into one that cannot be put back on an SMTP line. Anything already fine as a dot-atom (RFC 5321
/// section 4.1.2; non-ASCII too, RFC 6531) is returned as it is.
pub fn requote(a: &str) -> std::borrow::Cow<'_, str> {
    let Some((local, domain)) = a.rsplit_once('@') else { return a.into() };
    let atext = |c: char| c.is_alphanumeric() || !c.is_ascii() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    let dot_atom = !local.is_empty() && local.split('.').all(|part| !part.is_empty() && part.chars().all(atext));
    if dot_atom || local.starts_with('"') {
        return a.into();
    }
    let mut q = String::with_capacity(a.len() + 4);
    q.push('"');
    for c in local.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push_str("\"@");
    q.push_str(domain);
    q.into()
}

/// The form addresses are compared in: the whole address lower-cased. Local parts are case-sensitive in theory;
/// in practice every mail system an admin will meet treats them case-insensitively, and a helpdesk search that
/// misses `Alice@` for `alice@` is the worse failure.
pub fn fold(a: &str) -> String {
    a.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders() {
        assert_eq!(envelope_sender("<>").unwrap(), "");
        assert_eq!(envelope_sender("").unwrap(), "");
        assert_eq!(envelope_sender("<a@b.c>").unwrap(), "a@b.c");
        assert!(envelope_sender("a@b.c\r\nRCPT TO:<x@y>").is_err());
        assert!(envelope_sender("a b@c").is_err());
    }

    #[test]
    fn a_space_is_allowed_only_inside_a_quoted_local_part() {
        for ok in ["\"odd quoted\"@example.edu", "\"a\\\" b\"@d.example", "\" \"@d.example"] {
            assert_eq!(envelope_recipient(ok).unwrap(), ok, "{ok}");
        }
        for bad in ["a b@c", "\"a\"b c@d", "\"open b@d", "\"a b\"", "\"a b\"@d e", "\"a\tb\"@d", "\"a\u{a0}b\"@d"] {
            assert!(envelope_recipient(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn local_parts_that_need_quotes_get_them_back() {
        assert_eq!(requote("odd quoted@example.edu"), "\"odd quoted\"@example.edu");
        assert_eq!(requote("a\"b@d"), "\"a\\\"b\"@d");
        assert_eq!(requote("a..b@d"), "\"a..b\"@d");
        for same in ["plain.name+tag@example.edu", "Ünï@exämple.de", "\"already quoted\"@d", "postmaster", ""] {
            assert_eq!(requote(same), same);
        }
        assert!(check(&requote("odd quoted@example.edu")).is_ok());
    }

    #[test]
    fn recipients() {
        assert!(envelope_recipient("<>").is_err());
        assert!(envelope_recipient("x\0@y").is_err());
        assert_eq!(envelope_recipient("Ünï@exämple.de").unwrap(), "Ünï@exämple.de");
    }
}
