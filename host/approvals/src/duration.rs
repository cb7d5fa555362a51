//! Durations as people type them: `90s`, `30m`, `2h`, `1d`.

use std::time::Duration;

/// Parses `N` followed by `s`, `m`, `h` or `d`; the error says what forms
/// exist.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || {
        format!(
            "`{text}` is not a duration; write a whole number and a unit, for example 90s, 30m, 2h or 1d"
        )
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(format!("`{text}` is no time at all; give at least 1s"));
    }
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}

/// The largest unit that divides the duration evenly: `2h`, `90s`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        _ if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s.is_multiple_of(3_600) => format!("{}h", s / 3_600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_parse_and_print_back() {
        for (text, secs) in [("90s", 90), ("30m", 1_800), ("2h", 7_200), ("1d", 86_400)] {
            let d = parse_duration(text).unwrap();
            assert_eq!(d.as_secs(), secs);
            assert_eq!(format_duration(d), text);
        }
    }

    #[test]
    fn bad_forms_are_refused_with_the_forms_that_exist() {
        for text in [
            "",
            "m",
            "10",
            "10w",
            "-5m",
            "0s",
            "1.5h",
            "99999999999999999999d",
        ] {
            let e = parse_duration(text).unwrap_err();
            assert!(e.contains(text.trim()), "{e}");
        }
    }
}
