//! Freeze on a spike (DESIGN section 9, issue 15): the night a bad signature update calls ordinary mail a virus,
//! one verdict's hourly count jumps far above its usual level. Evaluated by ingest after each committed batch, so
//! it works with no service beyond ingest itself: when one verdict's count in the last hour exceeds `factor` times
//! its trailing 7-day hourly median (and at least `min`), purges freeze — the same freeze as `quarantine freeze`,
//! with the figures in its reason — and the audit trail says so. Thawing stays a human decision.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::error::Result;
use crate::purge::Freeze;
use crate::store::{now_us, Store};

/// The actor of a freeze the spike rule wrote: `check` and `stats` tell an incident from a human's freeze by it.
pub const SPIKE_ACTOR: &str = "quarantine (spike rule)";

const HOUR_US: i64 = 3_600_000_000;
/// The trailing window the median is taken over, in hours.
const TRAILING_HOURS: i64 = 7 * 24;

/// The configured rule: freeze when a verdict's last-hour count is above `factor` × its 7-day hourly median and at
/// least `min`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SpikeRule {
    pub factor: f64,
    pub min: u64,
}

/// What the rule found for one verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Spike {
    pub verdict: String,
    pub last_hour: u64,
    pub median: f64,
}

impl Spike {
    fn reason(&self, rule: &SpikeRule) -> String {
        let times =
            if self.median > 0.0 { format!("{:.1}x", self.last_hour as f64 / self.median) } else { "∞x".into() };
        format!(
            "spike of {}: {} in the last hour, {times} its 7-day hourly median of {} (rule: above {}x and at least {})",
            self.verdict, self.last_hour, self.median, rule.factor, rule.min
        )
    }
}

/// The median of `hourly` (every hour of the window, zeros included).
fn median(mut hourly: Vec<u64>) -> f64 {
    hourly.sort_unstable();
    let n = hourly.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        hourly[n / 2] as f64
    } else {
        (hourly[n / 2 - 1] + hourly[n / 2]) as f64 / 2.0
    }
}

impl Store {
    /// Checks `verdicts` (those of a batch just committed) against `rule` as of `now_us`; on the first spike,
    /// freezes the store (unless it already is) and returns it.
    pub(crate) fn evaluate_spike(
        &mut self,
        rule: &SpikeRule,
        verdicts: &BTreeSet<String>,
        now_us: i64,
    ) -> Result<Option<Spike>> {
        if verdicts.is_empty() || self.frozen()?.is_some() {
            return Ok(None);
        }
        let index_path = self.index_path.clone();
        let e = crate::index::sql_err(&index_path);
        for verdict in verdicts {
            let last_hour: u64 = self
                .conn
                .prepare_cached("SELECT count(*) FROM messages WHERE verdict = ?1 AND received_us >= ?2")
                .and_then(|mut s| s.query_row(rusqlite::params![verdict, now_us - HOUR_US], |r| r.get::<_, i64>(0)))
                .map_err(&e)? as u64;
            if last_hour < rule.min {
                continue;
            }
            // The 168 hours before the last one, by hour; hours with no message count as 0.
            let start = now_us - HOUR_US * (TRAILING_HOURS + 1);
            let mut hourly = vec![0u64; TRAILING_HOURS as usize];
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT (?3 - received_us) / ?4, count(*) FROM messages
                     WHERE verdict = ?1 AND received_us >= ?2 AND received_us < ?3 GROUP BY 1",
                )
                .map_err(&e)?;
            let rows = stmt
                .query_map(rusqlite::params![verdict, start, now_us - HOUR_US, HOUR_US], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })
                .map_err(&e)?;
            for row in rows {
                let (ago, n) = row.map_err(&e)?;
                if let Some(slot) = hourly.get_mut(ago as usize) {
                    *slot += n as u64;
                }
            }
            drop(stmt);
            let median = median(hourly);
            if last_hour as f64 > rule.factor * median {
                let spike = Spike { verdict: verdict.clone(), last_hour, median };
                self.freeze(&spike.reason(rule), SPIKE_ACTOR)?;
                return Ok(Some(spike));
            }
        }
        Ok(None)
    }

    /// The freeze the spike rule wrote, while it is in force: an incident someone must look at.
    pub fn incident(&self) -> Result<Option<Freeze>> {
        Ok(self.frozen()?.filter(|f| f.actor == SPIKE_ACTOR))
    }

    /// [`Store::evaluate_spike`] now, for ingest.
    pub(crate) fn evaluate_spike_now(
        &mut self,
        rule: &SpikeRule,
        verdicts: &BTreeSet<String>,
    ) -> Result<Option<Spike>> {
        self.evaluate_spike(rule, verdicts, now_us())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_counts_empty_hours() {
        assert_eq!(median(vec![0, 0, 5]), 0.0);
        assert_eq!(median(vec![1, 3, 2, 4]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }
}
