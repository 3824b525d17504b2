//! Message ids: 10 characters of Crockford base32 (no I, L, O, U), random, so they are short enough to read out
//! over the phone and carry no information about the mail.

use rand::Rng;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
pub const ID_LEN: usize = 10;

pub fn new_id() -> String {
    let mut rng = rand::thread_rng();
    (0..ID_LEN).map(|_| ALPHABET[rng.gen_range(0..32)] as char).collect()
}

/// An id taken from a digest instead of drawn at random (the spool derives a retried delivery's id from its
/// queue id, sender and bytes, so the retry lands on the same message): same alphabet and length.
pub fn from_digest(digest: &[u8; 32]) -> String {
    let mut bits = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
    (0..ID_LEN)
        .map(|_| {
            let c = ALPHABET[(bits & 31) as usize] as char;
            bits >>= 5;
            c
        })
        .collect()
}

/// Canonical form of an id typed by a person: upper case, with the look-alike letters Crockford allows mapped.
pub fn normalise(input: &str) -> String {
    input
        .trim()
        .chars()
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        })
        .collect()
}

/// `s` with terminal control characters (and bidi overrides) escaped, for an id typed by a person and echoed back
/// in an error: nothing from the command line may drive the terminal.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let cp = c as u32;
        if c.is_control() || (0x202A..=0x202E).contains(&cp) || (0x2066..=0x2069).contains(&cp) {
            if cp < 0x100 {
                out.push_str(&format!("\\x{cp:02x}"));
            } else {
                out.push_str(&format!("\\u{{{cp:04x}}}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_canonical() {
        for _ in 0..100 {
            let id = new_id();
            assert_eq!(id.len(), ID_LEN);
            assert_eq!(normalise(&id.to_lowercase()), id);
        }
    }
}
