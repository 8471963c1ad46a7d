//! The one duration syntax of every command-line flag that takes a time: a number of
//! seconds (`30`, `2.5`) or a number with a unit (`500ms`, `30s`, `2m`, `250us`).

/// Units, longest suffix first so `ms` is not read as `m` then `s`.
const UNITS: &[(&str, f64)] = &[
    ("ms", 1e-3),
    ("us", 1e-6),
    ("µs", 1e-6),
    ("ns", 1e-9),
    ("s", 1.0),
    ("m", 60.0),
    ("h", 3600.0),
];

/// `s` in seconds. Range checks (zero, negative, NaN) are left to the caller, which knows
/// the flag and its bounds; a sign is kept so the caller can name the bad value.
pub fn parse_secs(s: &str) -> Result<f64, String> {
    let t = s.trim();
    if let Ok(v) = t.parse::<f64>() {
        return Ok(v);
    }
    for (suffix, scale) in UNITS {
        if let Some(num) = t.strip_suffix(suffix) {
            let num = num.trim_end();
            // Only plain decimals before a unit: "infs" or "NaNms" are not durations.
            if !num.is_empty()
                && num
                    .trim_start_matches(['-', '+'])
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '.')
            {
                if let Ok(v) = num.parse::<f64>() {
                    return Ok(v * scale);
                }
            }
        }
    }
    Err(format!(
        "`{s}` is not a duration: give seconds (30, 2.5) or a number with a unit \
         (500ms, 30s, 2m)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_units() {
        assert_eq!(parse_secs("30"), Ok(30.0));
        assert_eq!(parse_secs("2.5"), Ok(2.5));
        assert_eq!(parse_secs("30s"), Ok(30.0));
        assert_eq!(parse_secs("500ms"), Ok(0.5));
        assert_eq!(parse_secs("2m"), Ok(120.0));
        assert_eq!(parse_secs("1h"), Ok(3600.0));
        assert_eq!(parse_secs("250us"), Ok(0.00025));
        assert_eq!(parse_secs("250µs"), Ok(0.00025));
        assert_eq!(parse_secs("1.5 s"), Ok(1.5));
        assert_eq!(parse_secs("-1s"), Ok(-1.0));
        assert!(parse_secs("NaN").unwrap().is_nan());
    }

    #[test]
    fn nonsense_is_refused_with_the_syntax() {
        for bad in ["", "s", "abc", "10x", "NaNms", "infs", "1e3ms", "1..2s"] {
            let e = parse_secs(bad).unwrap_err();
            assert!(e.contains("500ms, 30s"), "{bad}: {e}");
        }
    }
}
