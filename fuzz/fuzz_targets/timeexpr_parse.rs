//! The time-expression parser behind `--since`/`--until` (`timeexpr::parse`) at fixed "now"s (UTC, a positive and
//! a negative offset, the edges of chrono's range): never panics, and an error names the value it refused.
#![no_main]

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use quarantine_store::fuzzing::parse_time;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let nows: [DateTime<FixedOffset>; 4] = [
        DateTime::parse_from_rfc3339("2026-03-29T01:30:00+01:00").unwrap(),
        DateTime::parse_from_rfc3339("2026-11-01T23:59:59-09:30").unwrap(),
        Utc.timestamp_opt(0, 0).unwrap().fixed_offset(),
        DateTime::<Utc>::MAX_UTC.fixed_offset(),
    ];
    for now in &nows {
        match parse_time(s, now) {
            Ok(_) => {}
            Err(e) => assert!(e.contains(&format!("{s:?}")), "the error does not name the value: {e}"),
        }
    }
    let _ = parse_time(s, &Utc.timestamp_opt(1_700_000_000, 0).unwrap());
});
