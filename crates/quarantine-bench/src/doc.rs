//! Rewriting one generated section of a Markdown document, between `<!-- bench:NAME:start -->` and
//! `<!-- bench:NAME:end -->`. Everything outside the markers is left byte for byte.

use std::fs;
use std::io::Write;
use std::path::Path;

pub fn replace_section(text: &str, name: &str, body: &str) -> Result<String, String> {
    let start = format!("<!-- bench:{name}:start -->");
    let end = format!("<!-- bench:{name}:end -->");
    let s = text.find(&start).ok_or_else(|| format!("marker {start} not found"))?;
    let after_start = s + start.len();
    let e =
        text[after_start..].find(&end).ok_or_else(|| format!("marker {end} not found after {start}"))? + after_start;
    let body = body.trim_matches('\n');
    Ok(format!("{}\n{body}\n{}", &text[..after_start], &text[e..]))
}

/// Replaces the section in the file at `path`, atomically (temp file in the same directory, then rename).
pub fn update_file(path: &Path, name: &str, body: &str) -> Result<(), String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let new = replace_section(&text, name, body).map_err(|e| format!("{}: {e}", path.display()))?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    tmp.write_all(new.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Ok(meta) = fs::metadata(path) {
        let _ = fs::set_permissions(tmp.path(), meta.permissions());
    }
    tmp.persist(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_between_markers() {
        let t = "# T\n\nintro\n<!-- bench:hold:start -->\nold\nstuff\n<!-- bench:hold:end -->\ntail\n";
        let n = replace_section(t, "hold", "\nnew table\n").unwrap();
        assert_eq!(n, "# T\n\nintro\n<!-- bench:hold:start -->\nnew table\n<!-- bench:hold:end -->\ntail\n");
        assert_eq!(replace_section(&n, "hold", "new table").unwrap(), n);
    }

    #[test]
    fn missing_markers_are_an_error() {
        assert!(replace_section("no markers", "hold", "x").is_err());
        assert!(replace_section("<!-- bench:hold:start -->", "hold", "x").is_err());
        assert!(replace_section("<!-- bench:other:start --><!-- bench:other:end -->", "hold", "x").is_err());
    }
}
