//! Snippets read out of the repository's docs, so a test runs what the doc shows and the two cannot drift: a
//! change to the doc changes what the test runs, and a heading or fence that moves fails the test by name.

use std::path::{Path, PathBuf};

/// The repository file at `rel` (e.g. `docs/integration/postfix-lmtp.md`).
pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

/// The contents of the first fenced block (```` ``` ````, any info string) after the Markdown heading whose text
/// is `heading` (`## Strip at the border` → `"Strip at the border"`), before the next heading: exactly the lines
/// between the fences, each ending in a newline.
#[track_caller]
pub fn fenced_block(doc: &str, heading: &str) -> String {
    fenced_blocks(doc, heading).swap_remove(0)
}

/// Every fenced block of the section under `heading`, in order; at least one, or the test fails naming the doc.
#[track_caller]
pub fn fenced_blocks(doc: &str, heading: &str) -> Vec<String> {
    let path = repo_file(doc);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let blocks = blocks_under(&text, heading);
    assert!(
        !blocks.is_empty(),
        "{doc}: no fenced block under a heading \"{heading}\" (a test runs that doc snippet: keep the heading and \
         its ``` block, or change the test with it)"
    );
    blocks
}

fn blocks_under(text: &str, heading: &str) -> Vec<String> {
    let mut lines = text.lines();
    let mut out = Vec::new();
    if lines.by_ref().find(|l| l.starts_with('#') && l.trim_start_matches('#').trim() == heading).is_none() {
        return out;
    }
    let mut block: Option<String> = None;
    for l in lines {
        match &mut block {
            None if l.starts_with('#') => break,
            None if l.starts_with("```") => block = Some(String::new()),
            None => {}
            Some(_) if l.starts_with("```") => out.extend(block.take()),
            Some(b) => {
                b.push_str(l);
                b.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::blocks_under;

    #[test]
    fn the_blocks_under_their_heading_only() {
        let doc = "# T\n```\nnot this\n```\n## Strip\ntext\n```sh\na\n# not a heading\n```\n```\nc\n```\n## Next\n```\nd\n```\n";
        assert_eq!(blocks_under(doc, "Strip"), ["a\n# not a heading\n", "c\n"]);
        assert_eq!(blocks_under(doc, "Next"), ["d\n"]);
        assert!(blocks_under("## Empty\ntext\n## Other\n```\nx\n```\n", "Empty").is_empty(), "not the next section's");
        assert!(blocks_under("## Open\n```\nx\n", "Open").is_empty(), "an unclosed fence");
        assert!(blocks_under(doc, "Missing").is_empty());
    }
}
