//! The closed vocabularies of the index: a recipient's release state and an audit row's action. Stored as the
//! lowercase words below (the schema's CHECK constraints and `--state` use the same words), compared as enums.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// Where one recipient of a held message stands (DESIGN section 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientState {
    Held,
    /// Claimed by a release that has not recorded the relay's answer yet (or died before it did: in doubt).
    Releasing,
    Released,
    Failed,
    Purged,
}

impl RecipientState {
    pub const ALL: [RecipientState; 5] = [
        RecipientState::Held,
        RecipientState::Releasing,
        RecipientState::Released,
        RecipientState::Failed,
        RecipientState::Purged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecipientState::Held => "held",
            RecipientState::Releasing => "releasing",
            RecipientState::Released => "released",
            RecipientState::Failed => "failed",
            RecipientState::Purged => "purged",
        }
    }
}

impl FromStr for RecipientState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        RecipientState::ALL.into_iter().find(|st| st.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| {
            let all: Vec<&str> = RecipientState::ALL.iter().map(|s| s.as_str()).collect();
            format!("invalid state {s:?}: use one of {}", all.join(", "))
        })
    }
}

impl fmt::Display for RecipientState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl rusqlite::types::FromSql for RecipientState {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let s = v.as_str()?;
        s.parse().map_err(|e: String| rusqlite::types::FromSqlError::Other(e.into()))
    }
}

impl rusqlite::ToSql for RecipientState {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

/// What an audit row records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditAction {
    /// One ingest batch of held messages (the spool files `hold` and `serve` acknowledged).
    Hold,
    Import,
    /// Written when a release claims its first batch, so a release killed before its summary still shows.
    ReleaseStart,
    Release,
    Purge,
    Export,
    Freeze,
    Thaw,
}

impl AuditAction {
    pub const ALL: [AuditAction; 8] = [
        AuditAction::Hold,
        AuditAction::Import,
        AuditAction::ReleaseStart,
        AuditAction::Release,
        AuditAction::Purge,
        AuditAction::Export,
        AuditAction::Freeze,
        AuditAction::Thaw,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Hold => "hold",
            AuditAction::Import => "import",
            AuditAction::ReleaseStart => "release-start",
            AuditAction::Release => "release",
            AuditAction::Purge => "purge",
            AuditAction::Export => "export",
            AuditAction::Freeze => "freeze",
            AuditAction::Thaw => "thaw",
        }
    }
}

impl FromStr for AuditAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        AuditAction::ALL.into_iter().find(|a| a.as_str() == s).ok_or_else(|| format!("unknown audit action {s:?}"))
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for st in RecipientState::ALL {
            assert_eq!(st.as_str().parse::<RecipientState>().unwrap(), st);
            assert_eq!(serde_json::to_string(&st).unwrap(), format!("\"{st}\""));
        }
        for a in AuditAction::ALL {
            assert_eq!(a.as_str().parse::<AuditAction>().unwrap(), a);
            assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{a}\""));
        }
        assert_eq!("HELD".parse::<RecipientState>().unwrap(), RecipientState::Held);
        assert!("gone".parse::<RecipientState>().unwrap_err().contains("held, releasing, released, failed, purged"));
    }
}
