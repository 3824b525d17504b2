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
    // RFC 3339 as people type it: without seconds (2026-11-23T08:00+02:00).
    for fmt in ["%Y-%m-%dT%H:%M%#z", "%Y-%m-%d %H:%M%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    if let Ok(t) = NaiveTime::parse_from_str(s, "%H:%M") {
        return local(&tz, today.and_time(t)).ok_or_else(bad);
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return local_midnight(&tz, d).ok_or_else(bad);
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
    ] {
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

    // Time zones by name, as TZ gives them, DST days included (tz data from chrono-tz).

    use chrono_tz::Tz;

    /// `now` given as a local wall-clock time in `tz` (must be unambiguous).
    fn local_now(tz: Tz, wall: &str) -> DateTime<Tz> {
        let t = NaiveDateTime::parse_from_str(wall, "%Y-%m-%d %H:%M").unwrap();
        tz.from_local_datetime(&t).single().expect("an unambiguous wall-clock time")
    }

    fn utc(expr: &str, now: &DateTime<Tz>) -> String {
        parse(expr, now).unwrap_or_else(|e| panic!("{e}")).format("%Y-%m-%dT%H:%MZ").to_string()
    }

    fn wall(tz: Tz, s: &str) -> LocalResult<DateTime<Tz>> {
        tz.from_local_datetime(&NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap())
    }

    #[test]
    fn berlin_spring_forward() {
        let tz = chrono_tz::Europe::Berlin;
        // 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:00-02:59 does not exist.
        assert!(matches!(wall(tz, "2026-03-29 02:30"), LocalResult::None), "tz data: spring gap");
        let now = local_now(tz, "2026-03-29 10:00");
        assert_eq!(utc("00:00", &now), "2026-03-28T23:00Z", "midnight is still CET");
        assert_eq!(utc("today", &now), "2026-03-28T23:00Z");
        assert_eq!(utc("yesterday", &now), "2026-03-27T23:00Z");
        assert_eq!(utc("01:59", &now), "2026-03-29T00:59Z");
        assert_eq!(utc("02:30", &now), "2026-03-29T01:00Z", "a time in the gap is the first instant after it");
        assert_eq!(utc("03:00", &now), "2026-03-29T01:00Z");
        assert_eq!(utc("09:30", &now), "2026-03-29T07:30Z", "CEST");
        assert_eq!(utc("2026-03-29 02:15", &now), "2026-03-29T01:00Z");
        assert_eq!(utc("2026-03-29 04:15:30.5", &now), "2026-03-29T02:15Z", "fractional seconds");
        assert_eq!(utc("2026-03-29", &now), "2026-03-28T23:00Z");
        assert_eq!(utc("6h", &now), "2026-03-29T02:00Z", "durations are real elapsed time, not wall-clock");
        // The day after: yesterday's midnight was CET, today's is CEST.
        let next = local_now(tz, "2026-03-30 09:00");
        assert_eq!(utc("yesterday", &next), "2026-03-28T23:00Z");
        assert_eq!(utc("today", &next), "2026-03-29T22:00Z");
        assert_eq!(utc("00:00", &next), "2026-03-29T22:00Z");
    }

    #[test]
    fn berlin_fall_back() {
        let tz = chrono_tz::Europe::Berlin;
        // 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:00-02:59 happens twice.
        assert!(matches!(wall(tz, "2026-10-25 02:30"), LocalResult::Ambiguous(..)), "tz data: autumn overlap");
        let now = local_now(tz, "2026-10-25 12:00");
        assert_eq!(utc("00:00", &now), "2026-10-24T22:00Z", "midnight is still CEST");
        assert_eq!(utc("today", &now), "2026-10-24T22:00Z");
        assert_eq!(utc("yesterday", &now), "2026-10-23T22:00Z");
        assert_eq!(utc("02:30", &now), "2026-10-25T00:30Z", "an ambiguous time is the earlier instant");
        assert_eq!(utc("03:00", &now), "2026-10-25T02:00Z", "CET");
        assert_eq!(utc("11:00", &now), "2026-10-25T10:00Z");
        assert_eq!(utc("2026-10-25 02:00:00", &now), "2026-10-25T00:00Z");
        assert_eq!(utc("12h", &now), "2026-10-24T23:00Z", "the repeated hour counts once in a duration");
        let next = local_now(tz, "2026-10-26 09:00");
        assert_eq!(utc("yesterday", &next), "2026-10-24T22:00Z");
        assert_eq!(utc("today", &next), "2026-10-25T23:00Z");
    }

    #[test]
    fn new_york_dst_days() {
        let tz = chrono_tz::America::New_York;
        // 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST.
        let spring = local_now(tz, "2026-03-08 12:00");
        assert_eq!(utc("today", &spring), "2026-03-08T05:00Z");
        assert_eq!(utc("02:30", &spring), "2026-03-08T07:00Z");
        assert_eq!(utc("12:00", &spring), "2026-03-08T16:00Z");
        let fall = local_now(tz, "2026-11-01 12:00");
        assert_eq!(utc("today", &fall), "2026-11-01T04:00Z");
        assert_eq!(utc("01:30", &fall), "2026-11-01T05:30Z", "earlier of 01:30 EDT and 01:30 EST");
        assert_eq!(utc("yesterday", &local_now(tz, "2026-11-02 08:00")), "2026-11-01T04:00Z");
    }

    /// Where DST starts at midnight, midnight itself does not exist: `today` is the first instant of the day.
    #[test]
    fn midnight_in_a_spring_gap() {
        let tz = chrono_tz::America::Sao_Paulo;
        assert!(matches!(wall(tz, "2018-11-04 00:00"), LocalResult::None), "tz data: Brazil DST began at 00:00");
        let now = local_now(tz, "2018-11-04 10:00");
        assert_eq!(utc("today", &now), "2018-11-04T03:00Z", "01:00 -02");
        assert_eq!(utc("00:00", &now), "2018-11-04T03:00Z");
        assert_eq!(utc("2018-11-04", &now), "2018-11-04T03:00Z");
        assert_eq!(utc("yesterday", &local_now(tz, "2018-11-05 10:00")), "2018-11-04T03:00Z");
    }

    /// Where DST ends at 01:00 -> 00:00, midnight happens twice: `today` is the earlier one, so the whole day is in.
    #[test]
    fn midnight_in_an_autumn_overlap() {
        let tz = chrono_tz::America::Havana;
        assert!(matches!(wall(tz, "2024-11-03 00:30"), LocalResult::Ambiguous(..)), "tz data: Cuba 01:00 -> 00:00");
        let now = local_now(tz, "2024-11-03 10:00");
        assert_eq!(utc("today", &now), "2024-11-03T04:00Z", "00:00 CDT, not 00:00 CST");
        assert_eq!(utc("yesterday", &local_now(tz, "2024-11-04 10:00")), "2024-11-03T04:00Z");
    }

    /// The date of "today" is the local one: at 00:30 UTC it is already tomorrow in Kiritimati and still
    /// yesterday in Pago Pago. Half-hour offsets work too.
    #[test]
    fn far_offsets_and_half_hours() {
        let instant = Utc.with_ymd_and_hms(2026, 1, 1, 0, 30, 0).unwrap();
        let at = |tz: Tz| instant.with_timezone(&tz);
        assert_eq!(utc("today", &at(chrono_tz::Pacific::Kiritimati)), "2025-12-31T10:00Z");
        assert_eq!(utc("today", &at(chrono_tz::Pacific::Pago_Pago)), "2025-12-31T11:00Z");
        assert_eq!(utc("yesterday", &at(chrono_tz::Pacific::Pago_Pago)), "2025-12-30T11:00Z");
        assert_eq!(utc("06:00", &at(chrono_tz::Asia::Kolkata)), "2026-01-01T00:30Z");
        assert_eq!(utc("2026-06-01 12:00", &at(chrono_tz::America::St_Johns)), "2026-06-01T14:30Z");
        assert_eq!(utc("2026-01-01", &at(chrono_tz::UTC)), "2026-01-01T00:00Z");
    }

    #[test]
    fn offsets_and_durations_ignore_the_zone() {
        for tz in [chrono_tz::UTC, chrono_tz::Europe::Berlin, chrono_tz::Australia::Lord_Howe] {
            let now = Utc.with_ymd_and_hms(2026, 4, 5, 12, 0, 0).unwrap().with_timezone(&tz);
            assert_eq!(utc("2026-04-05T08:00:00+02:00", &now), "2026-04-05T06:00Z");
            assert_eq!(utc("2026-04-05 08:00:00-03:30", &now), "2026-04-05T11:30Z");
            assert_eq!(utc("2026-04-05T08:00+02:00", &now), "2026-04-05T06:00Z", "no seconds");
            assert_eq!(utc("2026-04-05 08:00+0200", &now), "2026-04-05T06:00Z");
            assert_eq!(utc("2026-04-05 08:00-03", &now), "2026-04-05T11:00Z");
            assert_eq!(utc("90m", &now), "2026-04-05T10:30Z");
            assert_eq!(utc("1w", &now), "2026-03-29T12:00Z");
            assert_eq!(utc("now", &now), "2026-04-05T12:00Z");
            assert_eq!(utc("Yesterday", &now), utc("yesterday", &now));
        }
    }
}
