//! The configuration file (TOML) and store discovery (DESIGN section 2).
//!
//! Store: `--store`, else `$QUARANTINE_STORE`, else the config's `store`, else `/var/lib/quarantine`.
//! Config: `--config`, else `$QUARANTINE_CONFIG`, else `/etc/quarantine/config.toml` if it exists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

pub const DEFAULT_CONFIG: &str = "/etc/quarantine/config.toml";
pub const DEFAULT_STORE: &str = "/var/lib/quarantine";

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub store: Option<PathBuf>,
    /// Default relay for release, e.g. `smtp://127.0.0.1:10025`.
    pub relay: Option<String>,
    /// Default sendmail-compatible command for release.
    pub sendmail: Option<String>,
    /// Prepend `X-Quarantine-Released` on release (default true).
    pub trace_header: Option<bool>,
    /// How long `hold` may take before it gives up with 75, e.g. `60s`.
    pub hold_deadline: Option<String>,
    /// Orphan blobs younger than this survive purge, e.g. `24h`.
    pub orphan_grace: Option<String>,
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

impl Config {
    /// Loads the config file named by the flag or environment, or the default path if it exists. A file named
    /// explicitly must exist.
    pub fn discover(flag: Option<&Path>) -> Result<(Config, Option<PathBuf>)> {
        let explicit = flag.map(Path::to_path_buf).or_else(|| std::env::var_os("QUARANTINE_CONFIG").map(PathBuf::from));
        let path = match explicit {
            Some(p) => p,
            None => {
                let p = PathBuf::from(DEFAULT_CONFIG);
                if !p.exists() {
                    return Ok((Config::default(), None));
                }
                p
            }
        };
        let cfg = Config::load(&path)?;
        Ok((cfg, Some(path)))
    }

    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config { path: path.to_path_buf(), detail: e.to_string() })?;
        Config::parse(&text).map_err(|detail| Error::Config { path: path.to_path_buf(), detail })
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let cfg: Config = toml::from_str(text).map_err(|e| e.to_string().trim_end().replace('\n', " "))?;
        for (key, v) in [("hold_deadline", &cfg.hold_deadline), ("orphan_grace", &cfg.orphan_grace)] {
            if let Some(v) = v {
                crate::duration::parse(v).map_err(|e| format!("{key}: {e}"))?;
            }
        }
        if let Some(r) = &cfg.retention {
            if let Some(d) = &r.default {
                crate::duration::parse(d).map_err(|e| format!("retention.default: {e}"))?;
            }
            for (verdict, d) in &r.verdict {
                crate::duration::parse(d).map_err(|e| format!("retention.verdict.{verdict:?}: {e}"))?;
            }
        }
        Ok(cfg)
    }

    /// Where the store is: the flag, else `$QUARANTINE_STORE`, else this config's `store`, else the default.
    pub fn store_path(&self, flag: Option<&Path>) -> PathBuf {
        flag.map(Path::to_path_buf)
            .or_else(|| std::env::var_os("QUARANTINE_STORE").filter(|s| !s.is_empty()).map(PathBuf::from))
            .or_else(|| self.store.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STORE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn unknown_key_and_bad_duration_are_named() {
        let e = Config::parse("stroe = \"/x\"\n").unwrap_err();
        assert!(e.contains("stroe"), "{e}");
        let e = Config::parse("hold_deadline = \"soon\"\n").unwrap_err();
        assert!(e.contains("hold_deadline"), "{e}");
    }
}
