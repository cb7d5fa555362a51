//! Time without a date library: the log stores microseconds since the Unix
//! epoch and renders them as RFC 3339 UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `2026-11-25T21:06:08.123456Z`.
pub fn format_micros(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

// Howard Hinnant's days-to-civil algorithm, valid for the whole i64 range
// the log can hold.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// An age that does not parse; the text shows how to write one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadAge(pub String);

/// Parses an age such as `90s`, `15m`, `1h`, `7d`.
pub fn parse_age(text: &str) -> Result<Duration, BadAge> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
        BadAge(format!(
            "`{text}` has no unit: write e.g. 90s, 15m, 1h or 7d"
        ))
    })?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        BadAge(format!(
            "`{text}` does not start with a number: write e.g. 1h or 7d"
        ))
    })?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        other => {
            return Err(BadAge(format!(
                "`{text}` has unknown unit `{other}`: use s, m, h, d or w"
            )));
        }
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| BadAge(format!("`{text}` is too long an age")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_micros(0), "1970-01-01T00:00:00.000000Z");
        // 2026-11-25T21:06:08Z, checked with `date -u -d @1795640768`.
        assert_eq!(
            format_micros(1_795_640_768_000_001),
            "2026-11-25T21:06:08.000001Z"
        );
        assert_eq!(
            format_micros(951_782_400_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
    }

    #[test]
    fn parses_ages_and_names_bad_ones() {
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("90s"), Ok(Duration::from_secs(90)));
        assert!(parse_age("7").unwrap_err().0.contains("no unit"));
        assert!(parse_age("7y").unwrap_err().0.contains("unknown unit `y`"));
        assert!(parse_age("h").unwrap_err().0.contains("number"));
    }
}
