//! Durations as admins write them: `90s`, `90m`, `6h`, `2d`, `1w`, also combined (`1d12h`).

use std::time::Duration;

/// Parses a duration; the error names the value and says what is accepted.
pub fn parse(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}: expected a number and a unit, such as 90m, 6h, 2d or 1w");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(bad)?;
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse("90m").unwrap().as_secs(), 5400);
        assert_eq!(parse("2d").unwrap().as_secs(), 172_800);
        assert_eq!(parse("1w").unwrap().as_secs(), 604_800);
        assert_eq!(parse("1d12h").unwrap().as_secs(), 129_600);
        for bad in ["", "5", "d", "3x", "-1d", "99999999999999999999d"] {
            assert!(parse(bad).unwrap_err().contains("invalid duration"), "{bad}");
        }
    }
}
