//! Pure: durations as Go writes them (`300ms`, `10s`, `1.5h`, `2h45m`), the one grammar of every
//! duration dbward reads — fields of its objects (`pollInterval`, `timeout`) and its flags
//! (`--lease-duration 15s`), as Kubernetes' own objects and flags spell them.

use std::time::Duration;

/// Seconds in `text`, a Go duration (`"0"` alone may go without a unit); `None` when it is not
/// one.
pub fn seconds(text: &str) -> Option<f64> {
    if text.is_empty() {
        return None;
    }
    if text == "0" {
        return Some(0.0);
    }
    let mut total = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return None;
        }
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += number * factor;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// A flag's value (clap's `value_parser`): a Go duration, with a message that says what would
/// be accepted.
pub fn flag(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration: write it as 500ms, 10s, 2m or 1h30m");
    let seconds = seconds(text.trim()).ok_or_else(invalid)?;
    Duration::try_from_secs_f64(seconds).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(seconds("30s"), Some(30.0));
        assert_eq!(seconds("1h30m"), Some(5400.0));
        assert_eq!(seconds("1.5m"), Some(90.0));
        assert_eq!(seconds("500ms"), Some(0.5));
        assert_eq!(seconds("0"), Some(0.0));
        assert_eq!(seconds("5"), None);
        assert_eq!(seconds("m"), None);
        assert_eq!(seconds("5 m"), None);
        assert_eq!(seconds(""), None);
    }

    #[test]
    fn flags_take_the_same_grammar() {
        assert_eq!(flag("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(flag("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(flag("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(flag("1h30m"), Ok(Duration::from_secs(5400)));
        let error = flag("10 seconds").unwrap_err();
        assert!(error.contains("500ms, 10s, 2m"), "{error}");
        assert!(flag("5").is_err());
    }
}
