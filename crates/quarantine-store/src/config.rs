//! The configuration file (TOML) and store discovery (DESIGN section 2). Every key is documented in
//! `docs/config.md`; `packaging/config.toml` is the annotated example the Debian package installs.
//!
//! Store: `--store`, else `$QUARANTINE_STORE`, else the config's `store`, else `/var/lib/quarantine`.
//! Config: `--config`, else `$QUARANTINE_CONFIG`, else `/etc/quarantine/config.toml` if it exists.
//!
//! # Errors name the key and the line
//! A file is parsed twice: by serde into [`Config`] (unknown keys and wrong types are rejected there), and by
//! `toml_edit`, which keeps the position of every key, so that any problem — a serde error, a bad duration, a bad
//! relay URL — is reported as `line N: KEY: what is wrong` ([`Problem`]). Values are checked in [`Config::parse`],
//! so every command refuses a bad file the same way (`hold` with 75, so the MTA keeps the mail); `config check`
//! adds the checks that look outside the file (is the store there, is the sendmail program there), in
//! [`check_environment`].
//!
//! # Adding a key
//! Add the field to [`Config`], its default to [`Config::settings`], a check to [`Config::validate`] if it has a
//! syntax beyond its TOML type, a line to `docs/config.md` and to `packaging/config.toml`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

pub const DEFAULT_CONFIG: &str = "/etc/quarantine/config.toml";
pub const DEFAULT_STORE: &str = "/var/lib/quarantine";
/// `hold` gives up with 75 after this long (keep it below the MTA's own limit for the pipe).
pub const DEFAULT_HOLD_DEADLINE: &str = "60s";
/// Orphan blobs and temp files younger than this survive purge.
pub const DEFAULT_ORPHAN_GRACE: &str = "24h";
/// `quarantine check`'s threshold when `min_free_space` is not set (`check::DEFAULT_MIN_FREE`).
pub const DEFAULT_MIN_FREE_SPACE: &str = "100M";
/// `quarantine check` fails (75) when the oldest pending spool file is older than this (ingest is not running).
pub const DEFAULT_SPOOL_MAX_AGE: &str = "10m";
/// Release prepends `X-Quarantine-Released` unless told not to.
pub const DEFAULT_TRACE_HEADER: bool = true;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The store directory (an absolute path).
    pub store: Option<PathBuf>,
    /// Default relay for release, e.g. `smtp://127.0.0.1:10025` or `smtps://relay.example.org`.
    pub relay: Option<String>,
    /// Require STARTTLS on an `smtp://` relay (as `release --tls` does). `smtps://` always uses TLS.
    pub relay_tls: Option<bool>,
    /// Default sendmail-compatible command for release (used when no relay is set).
    pub sendmail: Option<String>,
    /// Prepend `X-Quarantine-Released` on release (default true).
    pub trace_header: Option<bool>,
    /// How long `hold` may take before it gives up with 75, e.g. `60s`.
    pub hold_deadline: Option<String>,
    /// Orphan blobs younger than this survive purge, e.g. `24h`.
    pub orphan_grace: Option<String>,
    /// `quarantine check` fails (75) when the store's filesystem has less free space than this, e.g. `2G`.
    pub min_free_space: Option<String>,
    /// `quarantine check` fails (75) when the oldest pending spool file is older than this, e.g. `10m`.
    pub spool_max_age: Option<String>,
    pub retention: Option<Retention>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Age after which any message is purged, e.g. `30d`.
    pub default: Option<String>,
    /// Per-verdict ages, e.g. `"PMX:VIRUS" = "90d"`.
    #[serde(default)]
    pub verdict: BTreeMap<String, String>,
}

/// One thing wrong with a config file: which key, on which line, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key, e.g. `retention.verdict."PMX:VIRUS"`; `None` for a syntax error between keys.
    pub key: Option<String>,
    /// 1-based line in the file.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag, e.g. `--store`.
    Flag(&'static str),
    /// An environment variable, e.g. `QUARANTINE_STORE`.
    Env(&'static str),
    /// The config file, at this line.
    File {
        path: PathBuf,
        line: Option<usize>,
    },
    Default,
}

impl Source {
    /// `flag`, `environment`, `file` or `default`.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Flag(_) => "flag",
            Source::Env(_) => "environment",
            Source::File { .. } => "file",
            Source::Default => "default",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "flag {flag}"),
            Source::Env(var) => write!(f, "environment ${var}"),
            Source::File { path, line: Some(line) } => write!(f, "file {}:{line}", path.display()),
            Source::File { path, line: None } => write!(f, "file {}", path.display()),
            Source::Default => f.write_str("default"),
        }
    }
}

/// A config file as found and read: its path, why that path, and its text.
#[derive(Clone, Debug)]
pub struct ConfigFile {
    pub path: PathBuf,
    /// `Flag("--config")`, `Env("QUARANTINE_CONFIG")` or `Default` (the default path exists).
    pub source: Source,
    pub text: String,
}

/// One effective setting, for `config show`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    /// `None`: not set, and no default (e.g. no relay).
    pub value: Option<String>,
    pub source: Source,
}

impl Config {
    /// Loads the config file named by the flag or environment, or the default path if it exists. A file named
    /// explicitly must exist.
    pub fn discover(flag: Option<&Path>) -> Result<(Config, Option<PathBuf>)> {
        match locate(flag) {
            None => Ok((Config::default(), None)),
            Some((path, _)) => {
                let cfg = Config::load(&path)?;
                Ok((cfg, Some(path)))
            }
        }
    }

    pub fn load(path: &Path) -> Result<Config> {
        let text = read(path)?;
        Config::parse(&text).map_err(|detail| Error::Config { path: path.to_path_buf(), detail })
    }

    /// Parses and validates a file's text; the error is the first problem, as `line N: KEY: why`.
    pub fn parse(text: &str) -> Result<Config, String> {
        Config::parse_all(text).map_err(|problems| problems[0].to_string())
    }

    /// Parses and validates a file's text; on error, every problem found (at least one). A file that TOML or
    /// serde rejects yields exactly one problem (the parser stops there); otherwise every bad value is listed.
    pub fn parse_all(text: &str) -> Result<Config, Vec<Problem>> {
        let keys = Keys::index(text);
        let cfg: Config = toml::from_str(text).map_err(|e| vec![serde_problem(&e, text, &keys)])?;
        let problems = cfg.validate(&keys);
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(problems)
        }
    }

    /// Value checks beyond the TOML types.
    fn validate(&self, keys: &Keys) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut bad = |path: &[&str], message: String| {
            problems.push(Problem { key: Some(dotted(path)), line: keys.line(path), message });
        };
        if let Some(store) = &self.store {
            if store.as_os_str().is_empty() || !store.is_absolute() {
                bad(&["store"], format!("{:?} is not an absolute path", store.display().to_string()));
            }
        }
        for (key, value) in [
            ("hold_deadline", &self.hold_deadline),
            ("orphan_grace", &self.orphan_grace),
            ("spool_max_age", &self.spool_max_age),
        ] {
            if let Some(v) = value {
                match crate::duration::parse(v) {
                    Err(e) => bad(&[key], e),
                    Ok(d) if key == "hold_deadline" && d.is_zero() => {
                        bad(&[key], "must be longer than 0s (hold would defer every message)".into())
                    }
                    Ok(_) => {}
                }
            }
        }
        if let Some(v) = &self.min_free_space {
            if let Err(e) = parse_size(v) {
                bad(&["min_free_space"], e);
            }
        }
        if let Some(url) = &self.relay {
            if let Err(e) = crate::release::RelayUrl::parse(url, self.relay_tls.unwrap_or(false)) {
                let msg = e.to_string();
                let msg = msg.strip_prefix("--relay ").unwrap_or(&msg);
                let key = if self.relay_tls == Some(true) && url.to_ascii_lowercase().starts_with("smtps:") {
                    "relay_tls"
                } else {
                    "relay"
                };
                bad(&[key], msg.replace("--tls", "relay_tls"));
            }
        }
        if let Some(cmd) = &self.sendmail {
            if cmd.split_whitespace().next().is_none() {
                bad(&["sendmail"], "empty command".into());
            }
        }
        if let Some(r) = &self.retention {
            if let Some(d) = &r.default {
                if let Err(e) = crate::duration::parse(d) {
                    bad(&["retention", "default"], e);
                }
            }
            for (verdict, d) in &r.verdict {
                if verdict.trim().is_empty() {
                    bad(&["retention", "verdict", verdict], "empty verdict".into());
                } else if verdict.contains(['*', '?', '[']) {
                    // The default age excludes the listed verdicts exactly; a glob here would let it purge them.
                    let why = "a retention verdict is matched exactly: list each verdict, without * ? [";
                    bad(&["retention", "verdict", verdict], why.into());
                } else if let Err(e) = crate::duration::parse(d) {
                    bad(&["retention", "verdict", verdict], e);
                }
            }
        }
        problems
    }

    /// Where the store is: the flag, else `$QUARANTINE_STORE`, else this config's `store`, else the default.
    pub fn store_path(&self, flag: Option<&Path>) -> PathBuf {
        self.store_path_with_source(flag, None).0
    }

    /// [`Config::store_path`], and which rule chose it. `file` is the config file this config came from, for
    /// the source.
    pub fn store_path_with_source(&self, flag: Option<&Path>, file: Option<&ConfigFile>) -> (PathBuf, Source) {
        if let Some(p) = flag {
            return (p.to_path_buf(), Source::Flag("--store"));
        }
        if let Some(p) = std::env::var_os("QUARANTINE_STORE").filter(|s| !s.is_empty()) {
            return (PathBuf::from(p), Source::Env("QUARANTINE_STORE"));
        }
        if let Some(p) = &self.store {
            return (p.clone(), file_source(file, &["store"]));
        }
        (PathBuf::from(DEFAULT_STORE), Source::Default)
    }

    /// `min_free_space` in bytes (0 when not set: `quarantine check` then uses its default, 100M). The value was
    /// checked by `parse`.
    pub fn min_free_space_bytes(&self) -> u64 {
        self.min_free_space.as_deref().and_then(|v| parse_size(v).ok()).unwrap_or(0)
    }

    /// Every setting with its effective value and where it came from. `store_flag` is the global `--store`.
    pub fn settings(&self, store_flag: Option<&Path>, file: Option<&ConfigFile>) -> Vec<Setting> {
        let mut out = Vec::new();
        let (config_value, config_source) = match file {
            Some(f) => (Some(f.path.display().to_string()), f.source.clone()),
            None => (None, Source::Default),
        };
        out.push(Setting { key: "config".into(), value: config_value, source: config_source });
        let (store, source) = self.store_path_with_source(store_flag, file);
        out.push(Setting { key: "store".into(), value: Some(store.display().to_string()), source });

        let mut add = |key: &str, value: Option<String>, default: Option<String>| {
            let path: Vec<&str> = split_dotted(key);
            let (value, source) = match value {
                Some(v) => (Some(v), file_source(file, &path)),
                None => (default, Source::Default),
            };
            out.push(Setting { key: key.to_string(), value, source });
        };
        add("relay", self.relay.clone(), None);
        add("relay_tls", self.relay_tls.map(|b| b.to_string()), Some("false".into()));
        add("sendmail", self.sendmail.clone(), None);
        add("trace_header", self.trace_header.map(|b| b.to_string()), Some(DEFAULT_TRACE_HEADER.to_string()));
        add("hold_deadline", self.hold_deadline.clone(), Some(DEFAULT_HOLD_DEADLINE.into()));
        add("orphan_grace", self.orphan_grace.clone(), Some(DEFAULT_ORPHAN_GRACE.into()));
        add("min_free_space", self.min_free_space.clone(), Some(DEFAULT_MIN_FREE_SPACE.into()));
        add("spool_max_age", self.spool_max_age.clone(), Some(DEFAULT_SPOOL_MAX_AGE.into()));
        let retention = self.retention.clone().unwrap_or_default();
        add("retention.default", retention.default.clone(), None);
        for (verdict, age) in &retention.verdict {
            let key = dotted(&["retention", "verdict", verdict]);
            let source = file_source(file, &["retention", "verdict", verdict]);
            out.push(Setting { key, value: Some(age.clone()), source });
        }
        out
    }
}

/// Which config file applies: `--config`, else `$QUARANTINE_CONFIG`, else the default path if it exists.
pub fn locate(flag: Option<&Path>) -> Option<(PathBuf, Source)> {
    if let Some(p) = flag {
        return Some((p.to_path_buf(), Source::Flag("--config")));
    }
    if let Some(p) = std::env::var_os("QUARANTINE_CONFIG").filter(|s| !s.is_empty()) {
        return Some((PathBuf::from(p), Source::Env("QUARANTINE_CONFIG")));
    }
    let p = PathBuf::from(DEFAULT_CONFIG);
    p.exists().then_some((p, Source::Default))
}

impl ConfigFile {
    /// Reads the file [`locate`] names, if any.
    pub fn discover(flag: Option<&Path>) -> Result<Option<ConfigFile>> {
        match locate(flag) {
            None => Ok(None),
            Some((path, source)) => ConfigFile::read(path, source).map(Some),
        }
    }

    pub fn read(path: PathBuf, source: Source) -> Result<ConfigFile> {
        let text = read(&path)?;
        Ok(ConfigFile { path, source, text })
    }

    pub fn parse(&self) -> Result<Config, Vec<Problem>> {
        Config::parse_all(&self.text)
    }

    /// The line of a key (`["retention", "default"]`), if the file sets it.
    pub fn line(&self, path: &[&str]) -> Option<usize> {
        Keys::index(&self.text).line(path)
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::Config { path: path.to_path_buf(), detail: e.to_string() })
}

fn file_source(file: Option<&ConfigFile>, path: &[&str]) -> Source {
    match file {
        Some(f) => Source::File { path: f.path.clone(), line: f.line(path) },
        None => Source::Default,
    }
}

/// Checks that look outside the file, for `config check`: the store is a store this user can reach, the
/// sendmail program exists, the store's filesystem has `min_free_space`. `store` is the effective store path and
/// `store_source` where it came from; `file` is the config file (for line numbers).
pub fn check_environment(cfg: &Config, file: Option<&ConfigFile>, store: &Path, store_source: &Source) -> Vec<Problem> {
    let mut problems = Vec::new();
    let line_of = |path: &[&str]| file.and_then(|f| f.line(path));
    let (key, line) = match store_source {
        Source::Flag(flag) => (flag.to_string(), None),
        Source::Env(var) => (format!("${var}"), None),
        Source::File { line, .. } => ("store".to_string(), *line),
        Source::Default => ("store".to_string(), None),
    };
    let mut store_problem = |message: String| {
        problems.push(Problem { key: Some(key.clone()), line, message });
    };
    let shown = store.display();
    match std::fs::metadata(store) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            store_problem(format!("{shown} does not exist (create it with `quarantine init`)"))
        }
        Err(e) => store_problem(format!("{shown} is unreachable: {e}")),
        Ok(m) if !m.is_dir() => store_problem(format!("{shown} is not a directory")),
        Ok(_) => {
            let index = store.join(crate::store::INDEX_FILE);
            if let Err(e) = std::fs::read_dir(store) {
                store_problem(format!("{shown} is unreachable: {e} (run as the store's owner or root)"));
            } else if !index.is_file() {
                store_problem(format!(
                    "{shown} is not a quarantine store: no {} (run `quarantine init`)",
                    index.display()
                ));
            } else if let Err(e) = std::fs::File::open(&index) {
                store_problem(format!("{}: {e}", index.display()));
            } else if !store.join("blobs").is_dir() {
                store_problem(format!("{shown} is not a complete store: no blobs/ directory (run `quarantine init`)"));
            }
        }
    }
    let min = cfg.min_free_space_bytes();
    if min > 0 && store.is_dir() {
        if let Ok(free) = available_space(store) {
            if free < min {
                problems.push(Problem {
                    key: Some("min_free_space".into()),
                    line: line_of(&["min_free_space"]),
                    message: format!(
                        "{shown} has {} free, less than min_free_space {}: `quarantine check` fails now",
                        human(free),
                        human(min)
                    ),
                });
            }
        }
    }
    if let Some(program) = cfg.sendmail.as_deref().and_then(|c| c.split_whitespace().next()) {
        let found = if program.contains('/') {
            is_executable(Path::new(program))
        } else {
            std::env::var_os("PATH")
                .is_some_and(|path| std::env::split_paths(&path).any(|d| is_executable(&d.join(program))))
        };
        if !found {
            problems.push(Problem {
                key: Some("sendmail".into()),
                line: line_of(&["sendmail"]),
                message: format!("{program}: no such executable (give its absolute path, e.g. /usr/sbin/sendmail)"),
            });
        }
    }
    problems
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Bytes available to an unprivileged user on the filesystem holding `path`.
pub fn available_space(path: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// `1.5 GiB`-style sizes for messages.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// Sizes as admins write them: `0`, `4096`, `500M`, `2G`, `1.5G`, `10GiB`, `500MB`. `K`, `M`, `G`, `T` (alone
/// or with `iB`) are powers of 1024; `kB`, `MB`, `GB`, `TB` powers of 1000; a bare number (or `B`) is bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid size {s:?}: expected a number and a unit, such as 500M, 2G or 10GiB");
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let factor: u64 = match unit {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.matches('.').count() > 1 {
        return Err(bad());
    }
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(factor).ok_or_else(bad);
    }
    let f: f64 = num.parse().map_err(|_| bad())?;
    let v = f * factor as f64;
    if !(v.is_finite() && v < u64::MAX as f64) {
        return Err(bad());
    }
    Ok(v as u64)
}

// ---------------------------------------------------------------------------------------------------------------
// Key positions

/// Every key of a file with the byte spans of the key and of its value, from `toml_edit` (which, unlike serde,
/// keeps positions). Empty when the text is not TOML (serde then reports the syntax error with its own span).
struct Keys {
    /// (key path, key span, value span), in file order.
    entries: Vec<Entry>,
    /// Byte offset of the start of each line.
    line_starts: Vec<usize>,
}

impl Keys {
    fn index(text: &str) -> Keys {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let mut entries = Vec::new();
        if let Ok(doc) = toml_edit::ImDocument::parse(text) {
            walk(doc.as_table(), &mut Vec::new(), &mut entries);
        }
        Keys { entries, line_starts }
    }

    fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= offset)
    }

    fn line(&self, path: &[&str]) -> Option<usize> {
        self.entries
            .iter()
            .find(|(p, _, _)| p.len() == path.len() && p.iter().zip(path).all(|(a, b)| a == b))
            .map(|(_, k, _)| self.line_of(k.start))
    }

    /// The innermost key whose key or value span holds `offset`.
    fn at(&self, offset: usize) -> Option<&[String]> {
        self.entries
            .iter()
            .filter(|(_, k, v)| k.contains(&offset) || v.as_ref().is_some_and(|v| v.contains(&offset)))
            .max_by_key(|(p, _, _)| p.len())
            .map(|(p, _, _)| p.as_slice())
    }
}

type Entry = (Vec<String>, std::ops::Range<usize>, Option<std::ops::Range<usize>>);

fn walk(table: &dyn toml_edit::TableLike, prefix: &mut Vec<String>, out: &mut Vec<Entry>) {
    for (name, item) in table.iter() {
        let Some((key, _)) = table.get_key_value(name) else {
            continue;
        };
        prefix.push(name.to_string());
        let key_span = key.span().or_else(|| item.span()).unwrap_or(0..0);
        // A [table] header has no value span of its own worth matching: its keys are walked below.
        let value_span = if item.is_table_like() { None } else { item.span() };
        out.push((prefix.clone(), key_span, value_span));
        if let Some(inner) = item.as_table_like() {
            walk(inner, prefix, out);
        }
        prefix.pop();
    }
}

/// `retention.verdict."PMX:VIRUS"`: a path as it would be written in TOML.
pub fn dotted<S: AsRef<str>>(path: &[S]) -> String {
    path.iter()
        .map(|s| {
            let s = s.as_ref();
            let bare = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if bare {
                s.to_string()
            } else {
                format!("{s:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn split_dotted(key: &str) -> Vec<&str> {
    key.split('.').collect()
}

/// A serde/TOML error as a [`Problem`]: the line from its span, the key from the span (or, for an unknown key,
/// from the message), and the message in an admin's words.
fn serde_problem(e: &toml::de::Error, text: &str, keys: &Keys) -> Problem {
    let offset = e.span().map(|s| s.start.min(text.len()));
    let line = offset.map(|o| keys.line_of(o));
    let original = e.message().trim();
    let mut message = original.to_string();
    let mut key = offset.and_then(|o| keys.at(o)).map(dotted);
    if let Some(rest) = original.strip_prefix("unknown field `") {
        if let Some((name, expected)) = rest.split_once('`') {
            let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            let mut m = "unknown key".to_string();
            if let Some(close) = known.iter().copied().min_by_key(|k| edit_distance(k, name)) {
                if edit_distance(close, name) <= 2 {
                    m.push_str(&format!(" (did you mean `{close}`?)"));
                }
            }
            if !known.is_empty() {
                m.push_str(&format!("; known keys here: {}", known.join(", ")));
            }
            message = m;
            if key.is_none() {
                key = Some(name.to_string());
            }
        }
    }
    Problem { key, line, message }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(text: &str) -> Problem {
        let p = Config::parse_all(text).unwrap_err();
        p[0].clone()
    }

    #[test]
    fn good_file() {
        let c = Config::parse(
            "store = \"/srv/q\"\nhold_deadline = \"30s\"\n[retention]\ndefault = \"30d\"\n[retention.verdict]\n\"PMX:VIRUS\" = \"90d\"\n",
        )
        .unwrap();
        assert_eq!(c.store.unwrap(), PathBuf::from("/srv/q"));
        assert_eq!(c.retention.unwrap().verdict["PMX:VIRUS"], "90d");
    }

    #[test]
    fn the_shipped_example_is_valid_and_sets_every_key() {
        let text = include_str!("../../../packaging/config.toml");
        let c = Config::parse(text).unwrap();
        let uncommented: String = text
            .lines()
            .map(|l| l.strip_prefix("# ").filter(|r| r.contains(" = ") || r.starts_with('[')).unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let file = ConfigFile { path: "example".into(), source: Source::Default, text: uncommented };
        let all = file.parse().unwrap();
        assert!(all.store.is_some());
        // Every setting `config show` knows (a new key is added there) is in the example, commented out.
        for s in all.settings(None, Some(&file)) {
            if s.key != "config" && s.key != "store" {
                assert!(
                    matches!(s.source, Source::File { line: Some(_), .. }),
                    "packaging/config.toml does not show {}",
                    s.key
                );
            }
        }
        assert_eq!(c.store.as_deref(), Some(Path::new(DEFAULT_STORE)));
    }

    #[test]
    fn unknown_key_and_bad_duration_are_named_with_their_line() {
        let p = problem("store = \"/x\"\n\nstroe = \"/x\"\n");
        assert_eq!((p.key.as_deref(), p.line), (Some("stroe"), Some(3)), "{p}");
        assert!(p.message.contains("did you mean `store`"), "{p}");
        let p = problem("hold_deadline = \"soon\"\n");
        assert_eq!((p.key.as_deref(), p.line), (Some("hold_deadline"), Some(1)), "{p}");
        assert_eq!(p.to_string(), format!("line 1: hold_deadline: {}", crate::duration::parse("soon").unwrap_err()));
        let e = Config::parse("hold_deadline = \"soon\"\n").unwrap_err();
        assert!(e.contains("hold_deadline") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn nested_keys_and_wrong_types() {
        let p = problem("[retention]\ndefault = \"30d\"\ndefualt = \"1d\"\n");
        assert_eq!((p.key.as_deref(), p.line), (Some("retention.defualt"), Some(3)), "{p}");
        let p = problem("# c\n[retention.verdict]\nSPAM = \"14d\"\n\"PMX:VIRUS\" = \"ninety days\"\n");
        assert_eq!((p.key.as_deref(), p.line), (Some("retention.verdict.\"PMX:VIRUS\""), Some(4)), "{p}");
        let p = problem("relay = \"smtp://x\"\ntrace_header = \"yes\"\n");
        assert_eq!((p.key.as_deref(), p.line), (Some("trace_header"), Some(2)), "{p}");
        assert!(p.message.contains("boolean"), "{p}");
        let p = problem("hold_deadline = 60\n");
        assert_eq!((p.key.as_deref(), p.line), (Some("hold_deadline"), Some(1)), "{p}");
        let p = problem("[retention]\nverdict = 3\n");
        assert_eq!((p.key.as_deref(), p.line), (Some("retention.verdict"), Some(2)), "{p}");
        let p = problem("[retentoin]\ndefault = \"1d\"\n");
        assert_eq!((p.key.as_deref(), p.line), (Some("retentoin"), Some(1)), "{p}");
        let p = problem("retention = { default = \"1d\", verdcit = {} }\n");
        assert_eq!(p.line, Some(1), "{p}");
        assert!(p.key.as_deref().unwrap().contains("verdcit"), "{p}");
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let p = problem("store = \"/x\"\nrelay = smtp://x\n");
        assert_eq!(p.line, Some(2), "{p}");
        let p = problem("store = \"/x\"\nstore = \"/y\"\n");
        assert_eq!(p.line, Some(2), "{p}");
    }

    #[test]
    fn every_bad_value_is_listed() {
        let problems = Config::parse_all(
            "store = \"relative/q\"\nhold_deadline = \"0s\"\norphan_grace = \"1x\"\nmin_free_space = \"lots\"\n\
             relay = \"ftp://x\"\nsendmail = \" \"\n[retention]\ndefault = \"1y\"\n",
        )
        .unwrap_err();
        let got: Vec<(String, usize)> = problems.iter().map(|p| (p.key.clone().unwrap(), p.line.unwrap())).collect();
        let want =
            ["store", "hold_deadline", "orphan_grace", "min_free_space", "relay", "sendmail", "retention.default"];
        assert_eq!(
            got,
            want.iter().enumerate().map(|(i, k)| (k.to_string(), i + 1 + usize::from(i == 6))).collect::<Vec<_>>()
        );
        let p = problem("[retention.verdict]\n\"PMX:*\" = \"90d\"\n");
        assert_eq!((p.key.as_deref(), p.line), (Some("retention.verdict.\"PMX:*\""), Some(2)), "{p}");
        let p = problem("relay = \"smtps://relay.example\"\nrelay_tls = true\n");
        assert_eq!((p.key.as_deref(), p.line), (Some("relay_tls"), Some(2)), "{p}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size(" 1 G ").unwrap(), 1 << 30);
        for bad in ["", "G", "-1G", "1.G", ".5G", "1.2.3G", "5Q", "99999999999T"] {
            assert!(parse_size(bad).unwrap_err().contains("invalid size"), "{bad}");
        }
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(parse_size(DEFAULT_MIN_FREE_SPACE).unwrap(), crate::check::DEFAULT_MIN_FREE);
        assert_eq!(human(12), "12 B");
    }

    #[test]
    fn settings_say_where_each_value_came_from() {
        let text = "store = \"/srv/q\"\n\nhold_deadline = \"30s\"\n[retention.verdict]\nSPAM = \"14d\"\n";
        let file = ConfigFile { path: "/etc/q.toml".into(), source: Source::Flag("--config"), text: text.into() };
        let cfg = file.parse().unwrap();
        let s = cfg.settings(None, Some(&file));
        let get = |k: &str| s.iter().find(|s| s.key == k).unwrap().clone();
        assert_eq!(get("config").source, Source::Flag("--config"));
        assert_eq!(get("hold_deadline").source, Source::File { path: "/etc/q.toml".into(), line: Some(3) });
        assert_eq!(get("hold_deadline").value.as_deref(), Some("30s"));
        assert_eq!(get("orphan_grace").source, Source::Default);
        assert_eq!(get("orphan_grace").value.as_deref(), Some(DEFAULT_ORPHAN_GRACE));
        assert_eq!(get("relay").value, None);
        assert_eq!(get("retention.verdict.SPAM").source.to_string(), "file /etc/q.toml:5");
        let s = cfg.settings(Some(Path::new("/flag")), Some(&file));
        assert_eq!(s[1].source, Source::Flag("--store"));
        assert_eq!(s[1].value.as_deref(), Some("/flag"));
    }

    #[test]
    fn dotted_paths_quote_what_toml_would() {
        assert_eq!(dotted(&["retention", "verdict", "PMX:VIRUS"]), "retention.verdict.\"PMX:VIRUS\"");
        assert_eq!(dotted(&["retention", "verdict", "SPAM"]), "retention.verdict.SPAM");
    }
}
