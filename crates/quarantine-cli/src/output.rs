//! Printing helpers shared by the commands: safe text for terminals, and progress bars.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// Makes untrusted text (headers of hostile mail) safe to print on a terminal: control characters (C0, DEL, C1)
/// and bidirectional overrides become visible escapes, so no header can clear the screen, set the title or reverse
/// the text around it.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let cp = c as u32;
        let dangerous = c.is_control() || (0x202A..=0x202E).contains(&cp) || (0x2066..=0x2069).contains(&cp);
        if dangerous {
            match c {
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                _ if cp < 0x100 => out.push_str(&format!("\\x{cp:02x}")),
                _ => out.push_str(&format!("\\u{{{cp:04x}}}")),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// indicatif on a terminal, silence in cron. The bar is created on `start`, when the total is known.
pub struct TermProgress {
    /// The current bar: each `start` replaces it (purge runs two: rows, then blobs).
    bar: std::sync::Mutex<Option<ProgressBar>>,
    enabled: bool,
}

impl TermProgress {
    pub fn new() -> TermProgress {
        TermProgress { bar: std::sync::Mutex::new(None), enabled: std::io::stderr().is_terminal() }
    }

    fn bar(&self) -> std::sync::MutexGuard<'_, Option<ProgressBar>> {
        self.bar.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl quarantine_store::Progress for TermProgress {
    fn start(&self, what: &str, total: u64) {
        if !self.enabled {
            return;
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {human_pos}/{human_len} {per_sec} eta {eta}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        if let Some(old) = self.bar().replace(bar) {
            old.finish_and_clear();
        }
    }
    fn advance(&self, n: u64) {
        if let Some(b) = self.bar().as_ref() {
            b.inc(n);
        }
    }
    fn finish(&self) {
        if let Some(b) = self.bar().as_ref() {
            b.finish_and_clear();
        }
    }
}

/// Asks a yes/no question on the terminal. Only called when stdin is a terminal: cron never waits on a prompt.
pub fn confirm(question: &str) -> std::io::Result<bool> {
    use std::io::Write;
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// True when a person is at the keyboard (stdin and stderr are terminals).
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Bytes for people: 1.2 MiB.
pub use quarantine_store::human_bytes;

/// Counts for people: 14212 → "14,212".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_controls() {
        assert_eq!(escape("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(escape("\x1b]0;title\x07"), "\\x1b]0;title\\x07");
        assert_eq!(escape("x\0y"), "x\\x00y");
        assert_eq!(escape("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(escape("\u{9b}31m"), "\\x9b31m");
        assert_eq!(escape("café ünï"), "café ünï");
    }

    #[test]
    fn numbers_and_sizes() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(14212), "14,212");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
    }
}
