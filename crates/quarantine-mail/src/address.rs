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
/// spaces and angle brackets. Non-ASCII is allowed (SMTPUTF8); release decides whether the relay can take it.
pub fn check(a: &str) -> Result<()> {
    let bad = |why| Err(BadAddress { addr: a.to_string(), why });
    if a.len() > 998 {
        return bad("longer than an SMTP line");
    }
    if a.chars().any(|c| c.is_control()) {
        return bad("contains a control character (CR, LF, NUL or similar)");
    }
    if a.chars().any(|c| c.is_whitespace()) {
        return bad("contains whitespace");
    }
    if a.contains(['<', '>']) {
        return bad("contains an angle bracket");
    }
    Ok(())
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
    fn recipients() {
        assert!(envelope_recipient("<>").is_err());
        assert!(envelope_recipient("x\0@y").is_err());
        assert_eq!(envelope_recipient("Ünï@exämple.de").unwrap(), "Ünï@exämple.de");
    }
}
