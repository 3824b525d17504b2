//! The configuration file (TOML) and store discovery (DESIGN section 2). Every key is documented in
//! `docs/config.md`; `packaging/config.toml` is the annotated example the Debian package installs.
//!
//! Store: `--store`, else `$QUARANTINE_STORE`, else the config's `store`, else `/var/lib/quarantine`.
//! Config: `--config`, else `$QUARANTINE_CONFIG`, else `/etc/quarantine/config.toml` if it exists.
//!
//! # Parsed once, into types
//! A file is parsed once, by serde into [`RawConfig`], whose values are `toml::Spanned` so that every problem — a
//! serde error, a bad duration, a bad relay URL — is reported as `line N: KEY: what is wrong` ([`Problem`]). It is
//! then checked and converted, in [`Config::from_raw`], into [`Config`]: durations, sizes, the relay URL and the
//! sendmail command as the types the commands use, with the defaults of [`defaults`] applied. So every command
//! refuses a bad file the same way (`hold` with 75, so the MTA keeps the mail) and none re-parses a value;
//! `config check` adds the checks that look outside the file (is the store there, is the sendmail program there),
//! in [`check_environment`].
//!
//! # Adding a key
//! Add the raw field to [`RawConfig`], the typed one to [`Config`] (converted in [`Config::from_raw`]), its default
//! to [`defaults`], its row to [`Config::settings`], a line to `docs/config.md` and to `packaging/config.toml`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

mod serve;

use quarantine_relay::{Relay, RelayUrl};
use quarantine_store::{
    available_space, human_bytes as human, parse_duration, parse_size, RetentionPolicy, INDEX_FILE,
};

/// A config file that cannot be read or is not valid, with its path.
#[derive(Debug, thiserror::Error)]
#[error("config {path}: {detail}")]
pub struct ConfigError {
    pub path: PathBuf,
    pub detail: String,
}

type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// Every default of the tool, in one place (the flags' help and `docs/config.md` quote these).
pub mod defaults {
    use std::time::Duration;

    pub const CONFIG: &str = "/etc/quarantine/config.toml";
    pub const STORE: &str = "/var/lib/quarantine";
    /// `hold` gives up with 75 after this long (keep it below the MTA's own limit for the pipe: Postfix's
    /// `command_time_limit` is 1000 s).
    pub const HOLD_DEADLINE: Duration = Duration::from_secs(60);
    /// Orphan blobs and temp files younger than this survive purge: an ingest or import may be about to commit
    /// a row for them.
    pub const ORPHAN_GRACE: Duration = Duration::from_secs(24 * 3600);
    /// Below this, purge warns that `--orphan-grace` races concurrent ingests (they fail and retry from the
    /// spool: nothing is lost, but it is never what an admin wants).
    pub const ORPHAN_GRACE_FLOOR: Duration = Duration::from_secs(3600);
    /// `quarantine check` fails below this much free space when `min_free_space` is not set. It is larger than
    /// [`HOLD_RESERVE`] on purpose: monitoring should page someone before hold starts deferring mail.
    pub const MIN_FREE_SPACE: u64 = 100 << 20;
    /// `hold` defers (75) below this much free space when `min_free_space` is not set, so a full disk never
    /// costs a half-written spool file.
    pub const HOLD_RESERVE: u64 = 16 << 20;
    /// Release prepends `X-Quarantine-Released` unless told not to.
    pub const TRACE_HEADER: bool = true;
    /// `quarantine check` fails (75) when the oldest pending spool file is older than this: ingest is not running.
    pub const SPOOL_MAX_AGE: Duration = Duration::from_secs(10 * 60);
    /// How long hold reuses clamd's `VERSION` answer (or its silence) before asking again.
    pub const CLAMD_VERSION_CACHE: Duration = Duration::from_secs(5);
    /// How long hold waits for clamd's `VERSION` before holding without it.
    pub const CLAMD_TIMEOUT: Duration = Duration::from_millis(20);
    /// SMTP connections (or sendmail commands) a release uses at once (`release --connections`,
    /// `release_connections`): enough to keep a local MTA busy, few enough not to look like a flood.
    pub const RELEASE_CONNECTIONS: usize = 4;
    /// The most `release --connections` / `release_connections` accepts.
    pub const RELEASE_CONNECTIONS_MAX: usize = 64;
    /// `release --rescan`: the scanner's exit status for "infected" (clamscan and clamdscan: 1).
    pub const RESCAN_INFECTED_EXIT: i32 = 1;
    /// `release --rescan`: each scan is killed past this.
    pub const RESCAN_TIMEOUT: Duration = Duration::from_secs(60);
    /// `[serve]`'s defaults.
    #[allow(unused_imports)] // part of the documented surface: every default is reachable from here
    pub use quarantine_serve::defaults as serve;
    /// Durations beyond this are refused: they overflow the clocks they are added to and are always a typo.
    pub const LONGEST_DURATION: Duration = Duration::from_secs(100 * 366 * 86_400);
}

/// The file as serde reads it: every value with its span, so problems can name their line.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    store: Option<Spanned<PathBuf>>,
    index: Option<Spanned<String>>,
    relay: Option<Spanned<String>>,
    relay_tls: Option<Spanned<bool>>,
    sendmail: Option<Spanned<String>>,
    trace_header: Option<Spanned<bool>>,
    release_connections: Option<Spanned<i64>>,
    hold_deadline: Option<Spanned<String>>,
    orphan_grace: Option<Spanned<String>>,
    min_free_space: Option<Spanned<String>>,
    spool_max_age: Option<Spanned<String>>,
    clamd: Option<Spanned<String>>,
    blobs: Option<Spanned<String>>,
    s3: Option<RawS3>,
    spike: Option<RawSpike>,
    retention: Option<RawRetention>,
    serve: Option<serve::RawServe>,
}

/// `[s3]`: the object store's endpoint, region and credentials, each falling back to the standard `AWS_*`
/// variable (see `quarantine_objects`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawS3 {
    endpoint: Option<Spanned<String>>,
    region: Option<Spanned<String>>,
    access_key_id: Option<Spanned<String>>,
    secret_access_key: Option<Spanned<String>>,
    credentials_file: Option<Spanned<PathBuf>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpike {
    factor: Option<Spanned<f64>>,
    min: Option<Spanned<u64>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    default: Option<Spanned<String>>,
    #[serde(default)]
    /// Keys cannot carry a span in serde's model; a verdict's line is its value's (`"PMX:VIRUS" = "90d"`).
    verdict: BTreeMap<String, Spanned<String>>,
}

/// The configuration as the commands use it: checked, typed, defaults applied.
#[derive(Clone, Debug)]
pub struct Config {
    /// The store directory (an absolute path), if the file names one.
    pub store: Option<PathBuf>,
    /// Where the index is: `STORE/index.sqlite`, or the shared PostgreSQL database `index` names.
    pub index: quarantine_store::IndexLocation,
    /// Default relay for release, with `relay_tls` applied.
    pub relay: Option<RelayUrl>,
    /// Default sendmail-compatible command for release (used when no relay is set).
    pub sendmail: Option<Relay>,
    pub trace_header: bool,
    /// `release_connections`: how many connections a release uses unless `--connections` says otherwise.
    pub release_connections: usize,
    pub hold_deadline: Duration,
    pub orphan_grace: Duration,
    /// `min_free_space` when set (and not 0): both `check`'s threshold and `hold`'s reserve.
    pub min_free_space: Option<u64>,
    /// `check` exits 75 when the oldest pending spool file is older than this.
    pub spool_max_age: Duration,
    /// clamd's socket, asked for its `VERSION` by hold when `--scanner-version` is not given.
    pub clamd: Option<Clamd>,
    /// `blobs = "s3://bucket/prefix"` with `[s3]`: the blobs in an object store instead of `STORE/blobs/`.
    pub blobs: Option<RemoteBlobs>,
    /// `[s3]` (endpoint, region, credentials) even without `blobs`: `migrate --to-blobs` connects with it.
    pub s3: quarantine_objects::Settings,
    /// `[spike]`: freeze purges when one verdict's last hour is far above its usual level.
    pub spike: Option<quarantine_store::SpikeRule>,
    /// `[retention]`: what a purge with no selector removes.
    pub retention: RetentionPolicy,
    /// `[serve]`: listeners, limits and verdict mapping of `quarantine serve`.
    pub serve: quarantine_serve::ServeConfig,
    /// The file as written, for `config show` and line numbers.
    raw: RawConfig,
    /// Byte offset of the start of each line of the file.
    line_starts: Vec<usize>,
}

impl Default for Config {
    fn default() -> Config {
        Config::from_raw(RawConfig::default(), "").expect("the defaults are valid")
    }
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

/// A duration as the config and the flags take it: `parse_duration`, bounded by [`defaults::LONGEST_DURATION`].
pub fn duration(v: &str) -> Result<Duration, String> {
    let d = parse_duration(v)?;
    if d > defaults::LONGEST_DURATION {
        return Err(format!("{v:?} is longer than 100 years: not a duration this tool can use"));
    }
    Ok(d)
}

/// `hold`'s deadline: at least 1 s, at most a day (the MTA gives up on a pipe long before).
pub fn hold_deadline(v: &str) -> Result<Duration, String> {
    let d = duration(v)?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(86_400) {
        return Err(format!("{v:?} is out of range: use between 1s and 1d (keep it below the MTA's pipe time limit)"));
    }
    Ok(d)
}

/// Collects the problems of [`Config::from_raw`], each with its key and line.
struct Checker {
    starts: Vec<usize>,
    has_text: bool,
    problems: Vec<Problem>,
}

impl Checker {
    fn bad(&mut self, path: &[&str], span: std::ops::Range<usize>, message: String) {
        let line = self.has_text.then(|| line_at(&self.starts, span.start));
        self.problems.push(Problem { key: Some(dotted(path)), line, message });
    }

    /// `f` of the value, or the problem it names.
    fn parse<T>(&mut self, path: &[&str], v: &Spanned<String>, f: fn(&str) -> Result<T, String>) -> Option<T> {
        f(v.get_ref()).map_err(|e| self.bad(path, v.span(), e)).ok()
    }
}

fn line_starts(text: &str) -> Vec<usize> {
    let mut v = vec![0];
    v.extend(text.match_indices('\n').map(|(i, _)| i + 1));
    v
}

fn line_at(starts: &[usize], offset: usize) -> usize {
    starts.partition_point(|&s| s <= offset)
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
        Config::parse(&text).map_err(|detail| ConfigError { path: path.to_path_buf(), detail })
    }

    /// Parses and checks a file's text; the error is the first problem, as `line N: KEY: why`.
    pub fn parse(text: &str) -> Result<Config, String> {
        Config::parse_all(text).map_err(|problems| problems[0].to_string())
    }

    /// Parses and checks a file's text; on error, every problem found (at least one). A file that TOML or serde
    /// rejects yields exactly one problem (the parser stops there); otherwise every bad value is listed.
    pub fn parse_all(text: &str) -> Result<Config, Vec<Problem>> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| vec![serde_problem(&e, text)])?;
        Config::from_raw(raw, text)
    }

    /// Checks every value and converts it to its type, with the defaults applied.
    fn from_raw(raw: RawConfig, text: &str) -> Result<Config, Vec<Problem>> {
        let mut c = Checker { starts: line_starts(text), has_text: !text.is_empty(), problems: Vec::new() };
        let hold_deadline = raw.hold_deadline.as_ref().and_then(|v| c.parse(&["hold_deadline"], v, hold_deadline));
        let orphan_grace = raw.orphan_grace.as_ref().and_then(|v| c.parse(&["orphan_grace"], v, duration));
        let spool_max_age = raw.spool_max_age.as_ref().and_then(|v| c.parse(&["spool_max_age"], v, duration));
        let clamd = raw.clamd.as_ref().and_then(|v| c.parse(&["clamd"], v, Clamd::parse));
        let spike = match &raw.spike {
            None => None,
            Some(RawSpike { factor: Some(f), min: Some(m) }) => {
                if !(f.get_ref().is_finite() && *f.get_ref() >= 1.0) {
                    c.bad(&["spike", "factor"], f.span(), "must be a number of at least 1 (e.g. 10)".into());
                    None
                } else {
                    Some(quarantine_store::SpikeRule { factor: *f.get_ref(), min: *m.get_ref() })
                }
            }
            Some(RawSpike { factor, min }) => {
                let span = factor.as_ref().map(Spanned::span).or(min.as_ref().map(Spanned::span)).unwrap_or(0..0);
                c.bad(&["spike"], span, "needs both factor and min (e.g. factor = 10, min = 100)".into());
                None
            }
        };
        let mut retention = RetentionPolicy::default();
        if let Some(r) = &raw.retention {
            retention.default = r.default.as_ref().and_then(|v| c.parse(&["retention", "default"], v, duration));
            for (verdict, age) in &r.verdict {
                let path = ["retention", "verdict", verdict.as_str()];
                if verdict.trim().is_empty() {
                    c.bad(&path, age.span(), "empty verdict".into());
                } else if verdict.contains(['*', '?', '[']) {
                    // The default age excludes the listed verdicts exactly; a glob here would let it purge them.
                    let why = "a retention verdict is matched exactly: list each verdict, without * ? [";
                    c.bad(&path, age.span(), why.into());
                } else if let Some(d) = c.parse(&path, age, duration) {
                    retention.per_verdict.insert(verdict.clone(), d);
                }
            }
        }
        let store = raw.store.as_ref().map(|s| s.get_ref().clone());
        if let (Some(p), Some(s)) = (&store, &raw.store) {
            if p.as_os_str().is_empty() || !p.is_absolute() {
                c.bad(&["store"], s.span(), format!("{:?} is not an absolute path", p.display().to_string()));
            }
        }
        // 0 means "not set": check and hold then use their own defaults.
        let min_free_space = raw.min_free_space.as_ref().and_then(|v| c.parse(&["min_free_space"], v, parse_size));
        let min_free_space = min_free_space.filter(|&n| n > 0);
        let relay_tls = raw.relay_tls.as_ref().is_some_and(|t| *t.get_ref());
        let relay = raw.relay.as_ref().and_then(|url| match RelayUrl::parse(url.get_ref(), relay_tls) {
            Ok(u) => Some(u),
            Err(e) => {
                let msg = e.to_string();
                let msg = msg.strip_prefix("--relay ").unwrap_or(&msg).replace("--tls", "relay_tls");
                match &raw.relay_tls {
                    Some(t) if relay_tls && url.get_ref().to_ascii_lowercase().starts_with("smtps:") => {
                        c.bad(&["relay_tls"], t.span(), msg)
                    }
                    _ => c.bad(&["relay"], url.span(), msg),
                }
                None
            }
        });
        let sendmail = raw.sendmail.as_ref().and_then(|cmd| match Relay::sendmail(cmd.get_ref()) {
            Ok(r) => Some(r),
            Err(_) => {
                c.bad(&["sendmail"], cmd.span(), "empty command".into());
                None
            }
        });
        let release_connections = match &raw.release_connections {
            None => defaults::RELEASE_CONNECTIONS,
            Some(n) if (1..=defaults::RELEASE_CONNECTIONS_MAX as i64).contains(n.get_ref()) => *n.get_ref() as usize,
            Some(n) => {
                c.bad(
                    &["release_connections"],
                    n.span(),
                    format!("{}: must be between 1 and {}", n.get_ref(), defaults::RELEASE_CONNECTIONS_MAX),
                );
                defaults::RELEASE_CONNECTIONS
            }
        };
        let serve = serve::from_raw(raw.serve.as_ref(), &mut c);
        let index = match &raw.index {
            None => quarantine_store::IndexLocation::Sqlite,
            Some(u) => {
                let v = u.get_ref().trim();
                let pg = v.starts_with("postgresql://") || v.starts_with("postgres://") || v.contains('=');
                if !pg {
                    c.bad(
                        &["index"],
                        u.span(),
                        format!(
                            "{v:?}: not a PostgreSQL URL (postgresql://USER@HOST/DB) or conninfo (host=... dbname=...)"
                        ),
                    );
                }
                quarantine_store::IndexLocation::Postgres(v.to_string())
            }
        };
        let s3 = {
            let s3 = raw.s3.clone().unwrap_or_default();
            let s = |v: &Option<Spanned<String>>| v.as_ref().map(|v| v.get_ref().clone());
            quarantine_objects::Settings {
                endpoint: s(&s3.endpoint),
                region: s(&s3.region),
                access_key_id: s(&s3.access_key_id),
                secret_access_key: s(&s3.secret_access_key),
                credentials_file: s3.credentials_file.as_ref().map(|v| v.get_ref().clone()),
            }
        };
        let blobs = raw.blobs.as_ref().and_then(|url| match quarantine_objects::S3Url::parse(url.get_ref()) {
            Ok(_) => Some(RemoteBlobs { url: url.get_ref().clone(), settings: s3.clone() }),
            Err(e) => {
                c.bad(&["blobs"], url.span(), e.to_string());
                None
            }
        });
        if !c.problems.is_empty() {
            c.problems.sort_by_key(|p| p.line);
            return Err(c.problems);
        }
        Ok(Config {
            release_connections,
            store,
            index,
            relay,
            sendmail,
            trace_header: raw.trace_header.as_ref().map_or(defaults::TRACE_HEADER, |t| *t.get_ref()),
            hold_deadline: hold_deadline.unwrap_or(defaults::HOLD_DEADLINE),
            orphan_grace: orphan_grace.unwrap_or(defaults::ORPHAN_GRACE),
            min_free_space,
            spool_max_age: spool_max_age.unwrap_or(defaults::SPOOL_MAX_AGE),
            clamd,
            blobs,
            s3,
            spike,
            retention,
            serve,
            raw,
            line_starts: c.starts,
        })
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
            return (p.clone(), self.file_source(file, &["store"]));
        }
        (PathBuf::from(defaults::STORE), Source::Default)
    }

    /// The line a key is set on in the file this config was parsed from, if it is set.
    pub fn line(&self, path: &[&str]) -> Option<usize> {
        let r = &self.raw;
        let span = |v: Option<std::ops::Range<usize>>| v.map(|s| line_at(&self.line_starts, s.start));
        match path {
            ["store"] => span(r.store.as_ref().map(Spanned::span)),
            ["index"] => span(r.index.as_ref().map(Spanned::span)),
            ["relay"] => span(r.relay.as_ref().map(Spanned::span)),
            ["relay_tls"] => span(r.relay_tls.as_ref().map(Spanned::span)),
            ["sendmail"] => span(r.sendmail.as_ref().map(Spanned::span)),
            ["trace_header"] => span(r.trace_header.as_ref().map(Spanned::span)),
            ["release_connections"] => span(r.release_connections.as_ref().map(Spanned::span)),
            ["hold_deadline"] => span(r.hold_deadline.as_ref().map(Spanned::span)),
            ["orphan_grace"] => span(r.orphan_grace.as_ref().map(Spanned::span)),
            ["min_free_space"] => span(r.min_free_space.as_ref().map(Spanned::span)),
            ["spool_max_age"] => span(r.spool_max_age.as_ref().map(Spanned::span)),
            ["clamd"] => span(r.clamd.as_ref().map(Spanned::span)),
            ["blobs"] => span(r.blobs.as_ref().map(Spanned::span)),
            ["s3", "endpoint"] => span(r.s3.as_ref().and_then(|t| t.endpoint.as_ref().map(Spanned::span))),
            ["s3", "region"] => span(r.s3.as_ref().and_then(|t| t.region.as_ref().map(Spanned::span))),
            ["s3", "access_key_id"] => span(r.s3.as_ref().and_then(|t| t.access_key_id.as_ref().map(Spanned::span))),
            ["s3", "secret_access_key"] => {
                span(r.s3.as_ref().and_then(|t| t.secret_access_key.as_ref().map(Spanned::span)))
            }
            ["s3", "credentials_file"] => {
                span(r.s3.as_ref().and_then(|t| t.credentials_file.as_ref().map(Spanned::span)))
            }
            ["spike", "factor"] => span(r.spike.as_ref().and_then(|s| s.factor.as_ref().map(Spanned::span))),
            ["spike", "min"] => span(r.spike.as_ref().and_then(|s| s.min.as_ref().map(Spanned::span))),
            ["retention", "default"] => span(r.retention.as_ref().and_then(|t| t.default.as_ref().map(Spanned::span))),
            ["retention", "verdict", v] => span(
                r.retention.as_ref().and_then(|t| t.verdict.iter().find(|(k, _)| k == v).map(|(_, age)| age.span())),
            ),
            _ => None,
        }
    }

    fn file_source(&self, file: Option<&ConfigFile>, path: &[&str]) -> Source {
        match file {
            Some(f) => Source::File { path: f.path.clone(), line: self.line(path) },
            None => Source::Default,
        }
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

        let r = &self.raw;
        let mut add = |key: &str, written: Option<String>, default: Option<String>| {
            let path: Vec<&str> = key.split('.').collect();
            let (value, source) = match written {
                Some(v) => (Some(v), self.file_source(file, &path)),
                None => (default, Source::Default),
            };
            out.push(Setting { key: key.to_string(), value, source });
        };
        let s = |v: &Option<Spanned<String>>| v.as_ref().map(|v| v.get_ref().clone());
        let b = |v: &Option<Spanned<bool>>| v.as_ref().map(|v| v.get_ref().to_string());
        add(
            "index",
            r.index.as_ref().map(|v| quarantine_store::redact_url(v.get_ref())),
            Some("STORE/index.sqlite".into()),
        );
        add("relay", s(&r.relay), None);
        add("relay_tls", b(&r.relay_tls), Some("false".into()));
        add("sendmail", s(&r.sendmail), None);
        add("trace_header", b(&r.trace_header), Some(defaults::TRACE_HEADER.to_string()));
        add(
            "release_connections",
            r.release_connections.as_ref().map(|v| v.get_ref().to_string()),
            Some(defaults::RELEASE_CONNECTIONS.to_string()),
        );
        add("hold_deadline", s(&r.hold_deadline), Some(format_duration(defaults::HOLD_DEADLINE)));
        add("orphan_grace", s(&r.orphan_grace), Some(format_duration(defaults::ORPHAN_GRACE)));
        add("min_free_space", s(&r.min_free_space), Some(format_size(defaults::MIN_FREE_SPACE)));
        add("spool_max_age", s(&r.spool_max_age), Some(format_duration(defaults::SPOOL_MAX_AGE)));
        add("clamd", s(&r.clamd), None);
        add("blobs", s(&r.blobs), Some("STORE/blobs/".into()));
        let s3 = r.s3.clone().unwrap_or_default();
        add("s3.endpoint", s(&s3.endpoint), None);
        add("s3.region", s(&s3.region), None);
        add("s3.access_key_id", s(&s3.access_key_id), None);
        // Never printed: `config show` output ends up in tickets.
        add("s3.secret_access_key", s3.secret_access_key.as_ref().map(|_| "(set)".to_string()), None);
        add("s3.credentials_file", s3.credentials_file.as_ref().map(|v| v.get_ref().display().to_string()), None);
        let spike = r.spike.clone().unwrap_or_default();
        add("spike.factor", spike.factor.as_ref().map(|v| v.get_ref().to_string()), None);
        add("spike.min", spike.min.as_ref().map(|v| v.get_ref().to_string()), None);
        let retention = r.retention.clone().unwrap_or_default();
        add("retention.default", s(&retention.default), None);
        for (verdict, age) in &retention.verdict {
            let key = dotted(&["retention", "verdict", verdict]);
            let source = self.file_source(file, &["retention", "verdict", verdict]);
            out.push(Setting { key, value: Some(age.get_ref().clone()), source });
        }
        out
    }
}

/// `blobs = "s3://..."` and its `[s3]` settings, checked for form; [`RemoteBlobs::connect`] builds the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteBlobs {
    pub url: String,
    pub settings: quarantine_objects::Settings,
}

impl RemoteBlobs {
    /// The client the store is opened with; no request is made yet.
    pub fn connect(&self) -> Result<std::sync::Arc<dyn quarantine_store::ObjectStore>, quarantine_objects::Error> {
        quarantine_objects::S3Store::shared(&self.url, &self.settings)
    }

    /// Connects and lists one key: the object store's problem in one line, or `Ok`.
    pub fn probe(&self) -> Result<(), String> {
        let store = self.connect().map_err(|e| e.to_string())?;
        store.probe().map_err(|e| e.to_string())
    }
}

/// Where clamd listens, for its `VERSION` (`clamd = "/run/clamav/clamd.ctl"`, `"unix:PATH"` or `"tcp:HOST:PORT"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Clamd {
    Unix(PathBuf),
    Tcp(String),
}

impl Clamd {
    fn parse(v: &str) -> Result<Clamd, String> {
        if let Some(addr) = v.strip_prefix("tcp:") {
            return match addr.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0) => Ok(Clamd::Tcp(addr.into())),
                _ => Err(format!("{v:?}: use tcp:HOST:PORT, unix:PATH or an absolute socket path")),
            };
        }
        let path = Path::new(v.strip_prefix("unix:").unwrap_or(v));
        if !path.is_absolute() {
            return Err(format!("{v:?}: use an absolute socket path (unix:/run/clamav/clamd.ctl) or tcp:HOST:PORT"));
        }
        Ok(Clamd::Unix(path.to_path_buf()))
    }
}

/// `60s`, `90m`, `1h`, `24h`, `30d`: a whole duration as an admin would write it (and as `docs/config.md` does).
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 2 * 86_400 && s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s >= 3600 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s >= 120 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// `100M`, `2G`, `4096`: a size in the largest binary unit that divides it, in the config's own syntax.
pub fn format_size(n: u64) -> String {
    for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        if n > 0 && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

/// Which config file applies: `--config`, else `$QUARANTINE_CONFIG`, else the default path if it exists.
pub fn locate(flag: Option<&Path>) -> Option<(PathBuf, Source)> {
    if let Some(p) = flag {
        return Some((p.to_path_buf(), Source::Flag("--config")));
    }
    if let Some(p) = std::env::var_os("QUARANTINE_CONFIG").filter(|s| !s.is_empty()) {
        return Some((PathBuf::from(p), Source::Env("QUARANTINE_CONFIG")));
    }
    let p = PathBuf::from(defaults::CONFIG);
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
}

/// A config file is a few lines of TOML; anything this large is a mistake (`--config /dev/zero`, a log file).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

fn read(path: &Path) -> Result<String> {
    use std::io::Read;
    let err = |detail: String| ConfigError { path: path.to_path_buf(), detail };
    let f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut bytes = Vec::new();
    f.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes).map_err(|e| err(e.to_string()))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(err(format!("larger than {} MiB: not a config file", MAX_CONFIG_BYTES >> 20)));
    }
    String::from_utf8(bytes).map_err(|_| err("stream did not contain valid UTF-8".into()))
}

/// Checks that look outside the file, for `config check`: the store is a store this user can reach, the
/// sendmail program exists, the store's filesystem has `min_free_space`. `store` is the effective store path and
/// `store_source` where it came from; `file` is the config file (for line numbers).
pub fn check_environment(cfg: &Config, file: Option<&ConfigFile>, store: &Path, store_source: &Source) -> Vec<Problem> {
    let mut problems = Vec::new();
    let line_of = |path: &[&str]| file.and(cfg.line(path));
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
            let index = store.join(INDEX_FILE);
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
    if let quarantine_store::IndexLocation::Postgres(url) = &cfg.index {
        if let Err(e) = quarantine_store::probe_shared_index(url) {
            // The error names itself "index ...", and the problem line names the key already.
            let text = e.to_string();
            let message = text.strip_prefix("index ").unwrap_or(&text).to_string();
            problems.push(Problem { key: Some("index".into()), line: line_of(&["index"]), message });
        }
    }
    if let (Some(min), true) = (cfg.min_free_space, store.is_dir()) {
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
    if let Some(b) = &cfg.blobs {
        if let Err(message) = b.probe() {
            problems.push(Problem { key: Some("blobs".into()), line: line_of(&["blobs"]), message });
        }
    }
    if let Some(Relay::Sendmail(argv)) = &cfg.sendmail {
        let program = argv[0].as_str();
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

// ---------------------------------------------------------------------------------------------------------------
// Key names

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

/// A serde/TOML error as a [`Problem`]: the line from its span; the key from the table header above that line
/// and the key on it (or, for an unknown key, from the message); the message in an admin's words.
fn serde_problem(e: &toml::de::Error, text: &str) -> Problem {
    let starts = line_starts(text);
    let offset = e.span().map(|s| s.start.min(text.len()));
    let line = offset.map(|o| line_at(&starts, o));
    let original = e.message().trim();
    let mut message = original.to_string();
    let (table, here) = match line {
        Some(l) => key_context(text, l),
        None => (Vec::new(), None),
    };
    let mut key = here.map(|k| {
        let mut p = table.clone();
        p.extend(k);
        dotted(&p)
    });
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
            // The unknown key itself, under the table it was found in (an inline table's keys are on its line).
            let mut p = table;
            if p.last().map(String::as_str) != Some(name) {
                p.push(name.to_string());
            }
            key = Some(dotted(&p));
        }
    }
    Problem { key, line, message }
}

/// For 1-based `line` of a TOML text: the path of the `[table]` header above it (or on it), and the dotted key the
/// line assigns, if it is `key = value`. Good enough to name a key in an error; serde has already parsed the file.
fn key_context(text: &str, line: usize) -> (Vec<String>, Option<Vec<String>>) {
    let split = |k: &str| -> Vec<String> {
        k.split('.')
            .map(|p| p.trim().trim_matches('"').trim_matches('\'').to_string())
            .filter(|p| !p.is_empty())
            .collect()
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut table = Vec::new();
    for l in lines.iter().take(line) {
        let t = l.trim();
        if let Some(h) = t.strip_prefix('[').and_then(|h| h.split(']').next()) {
            table = split(h.trim_start_matches('['));
        }
    }
    let this = lines.get(line.wrapping_sub(1)).map(|l| l.trim()).unwrap_or("");
    if this.starts_with('[') {
        return (Vec::new(), Some(table));
    }
    let here = this.split_once('=').map(|(k, _)| split(k)).filter(|k| !k.is_empty());
    (table, here)
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
        assert_eq!(c.retention.per_verdict["PMX:VIRUS"], Duration::from_secs(90 * 86_400));
        assert_eq!(c.hold_deadline, Duration::from_secs(30));
        assert_eq!(c.orphan_grace, defaults::ORPHAN_GRACE);
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
        assert_eq!(c.store.as_deref(), Some(Path::new(defaults::STORE)));
    }

    #[test]
    fn unknown_key_and_bad_duration_are_named_with_their_line() {
        let p = problem("store = \"/x\"\n\nstroe = \"/x\"\n");
        assert_eq!((p.key.as_deref(), p.line), (Some("stroe"), Some(3)), "{p}");
        assert!(p.message.contains("did you mean `store`"), "{p}");
        let p = problem("hold_deadline = \"soon\"\n");
        assert_eq!((p.key.as_deref(), p.line), (Some("hold_deadline"), Some(1)), "{p}");
        assert_eq!(p.to_string(), format!("line 1: hold_deadline: {}", parse_duration("soon").unwrap_err()));
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
        assert_eq!(get("orphan_grace").value.as_deref(), Some("24h"));
        assert_eq!(get("min_free_space").value.as_deref(), Some("100M"));
        assert_eq!(get("hold_deadline").value.as_deref(), Some("30s"));
        for d in [defaults::HOLD_DEADLINE, defaults::ORPHAN_GRACE, defaults::ORPHAN_GRACE_FLOOR] {
            assert_eq!(duration(&format_duration(d)).unwrap(), d);
        }
        assert_eq!(parse_size(&format_size(defaults::MIN_FREE_SPACE)).unwrap(), defaults::MIN_FREE_SPACE);
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
