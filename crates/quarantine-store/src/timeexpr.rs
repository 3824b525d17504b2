//! Time expressions for `--since` and `--until` (DESIGN section 5), resolved against a given "now" in local time
//! (`TZ`). Forms: `HH:MM` (today), `YYYY-MM-DD` (midnight), `YYYY-MM-DD HH:MM[:SS]` (also with `T`), RFC 3339 with
//! an offset, durations ago (`90m`, `6h`, `2d`, `1w`), `now`, `today`, `yesterday`.

use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};

/// Resolves `expr` to an instant; `now` is passed in so tests can pin it. The error names the value.
pub fn parse<Tz: TimeZone>(expr: &str, now: &DateTime<Tz>) -> Result<DateTime<Utc>, String> {
    let s = expr.trim();
    let bad = || {
        format!(
            "invalid time {expr:?}: use HH:MM, YYYY-MM-DD, \"YYYY-MM-DD HH:MM[:SS]\", RFC 3339, a duration ago \
             such as 90m, 6h, 2d, 1w, or today/yesterday"
        )
    };
    let tz = now.timezone();
    let today = now.date_naive();
    match s.to_ascii_lowercase().as_str() {
        "now" => return Ok(now.with_timezone(&Utc)),
        "today" => return local_midnight(&tz, today).ok_or_else(bad),
        "yesterday" => return local_midnight(&tz, today.pred_opt().ok_or_else(bad)?).ok_or_else(bad),
        _ => {}
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveTime::parse_from_str(s, "%H:%M") {
        return local(&tz, today.and_time(t)).ok_or_else(bad);
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return local_midnight(&tz, d).ok_or_else(bad);
    }
    for fmt in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return local(&tz, t).ok_or_else(bad);
        }
    }
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        if let Ok(d) = crate::duration::parse(s) {
            let d = Duration::from_std(d).map_err(|_| bad())?;
            return now.with_timezone(&Utc).checked_sub_signed(d).ok_or_else(bad);
        }
    }
    Err(bad())
}

/// A wall-clock time in `tz`. In the autumn overlap the earlier instant wins (so `--since` includes the whole
/// hour); in the spring gap the first valid instant after it.
fn local<Tz: TimeZone>(tz: &Tz, t: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&t) {
        LocalResult::Single(x) => Some(x.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => Some(a.min(b).with_timezone(&Utc)),
        LocalResult::None => {
            // Walk forward minute by minute out of the gap (gaps are at most a few hours).
            (1..=24 * 60).find_map(|m| match tz.from_local_datetime(&(t + Duration::minutes(m))) {
                LocalResult::Single(x) => Some(x.with_timezone(&Utc)),
                LocalResult::Ambiguous(a, b) => Some(a.min(b).with_timezone(&Utc)),
                LocalResult::None => None,
            })
        }
    }
}

fn local_midnight<Tz: TimeZone>(tz: &Tz, d: NaiveDate) -> Option<DateTime<Utc>> {
    local(tz, d.and_time(NaiveTime::MIN))
}

/// Resolves against the real clock in local time (`TZ`).
pub fn parse_now(expr: &str) -> Result<DateTime<Utc>, String> {
    parse(expr, &chrono::Local::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    fn at(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    #[test]
    fn forms_at_a_fixed_offset() {
        let now = at("2026-11-23T10:30:00+01:00");
        let p = |e: &str| parse(e, &now).unwrap().to_rfc3339();
        assert_eq!(p("00:00"), "2026-11-22T23:00:00+00:00");
        assert_eq!(p("today"), "2026-11-22T23:00:00+00:00");
        assert_eq!(p("yesterday"), "2026-11-21T23:00:00+00:00");
        assert_eq!(p("2026-11-01"), "2026-10-31T23:00:00+00:00");
        assert_eq!(p("2026-11-01 06:30"), "2026-11-01T05:30:00+00:00");
        assert_eq!(p("2026-11-01T06:30:15"), "2026-11-01T05:30:15+00:00");
        assert_eq!(p("2026-11-01T06:30:00Z"), "2026-11-01T06:30:00+00:00");
        assert_eq!(p("90m"), "2026-11-23T08:00:00+00:00");
        assert_eq!(p("1w"), "2026-11-16T09:30:00+00:00");
        for bad in ["", "25:00", "2026-13-01", "soon", "-1h", "12", "00:00 tomorrow"] {
            assert!(parse(bad, &now).unwrap_err().contains("invalid time"), "{bad}");
        }
    }
}
