//! Durations as people write them in flags and environment variables (`90`, `1.5`, `500ms`,
//! `90s`, `10m`, `24h`, `1d`): parsed once here for the server's flags and `lockctl`'s.

use std::time::Duration;

/// A duration flag that cannot be read.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum DurationError {
    /// The unit is not one of ms, s, m, h, d.
    #[error("unknown unit `{0}`: use ms, s, m, h or d")]
    Unit(String),
    /// The number cannot be read.
    #[error("`{0}` is not a duration")]
    NotANumber(String),
    /// The number is negative or too large.
    #[error("`{0}` is out of range")]
    OutOfRange(String),
}

/// Parses `90`, `1.5`, `500ms`, `90s`, `10m`, `24h` or `1d` into a duration.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        other => return Err(DurationError::Unit(other.to_string())),
    };
    let number: f64 = number.parse().map_err(|_| DurationError::NotANumber(text.to_string()))?;
    Duration::try_from_secs_f64(number * scale).map_err(|_| DurationError::OutOfRange(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
