//! Rounding of reported numbers. Every figure a report carries is rounded here once, so the
//! table and the JSON line show the same value.

use jiff::{SignedDuration, Timestamp};

/// One decimal (requests/s).
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Two decimals (CPU seconds and cores).
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Three decimals (seconds, milliseconds, ratios).
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `count` per second over `secs`, to the unit; a zero window counts as a nanosecond.
pub fn per_second(count: u64, secs: f64) -> f64 {
    (count as f64 / secs.max(1e-9)).round()
}

/// `part / whole` to three decimals; `None` when `whole` is not positive.
pub fn ratio(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0).then(|| round3(part / whole))
}

/// A signed duration in seconds, to the millisecond.
pub fn secs(d: SignedDuration) -> f64 {
    round3(d.as_secs_f64())
}

/// Seconds from `a` to `b`, to the millisecond, when both are known.
pub fn secs_between(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<f64> {
    Some(secs(b?.duration_since(a?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_half_away_from_zero() {
        assert_eq!(round1(501.25), 501.3);
        assert_eq!(round2(1.005_1), 1.01);
        assert_eq!(round3(0.123_56), 0.124);
        assert_eq!(round3(-3.500_4), -3.5);
    }

    #[test]
    fn rates_and_ratios() {
        assert_eq!(per_second(1_000, 8.0), 125.0);
        assert_eq!(per_second(3, 0.0), 3e9);
        assert_eq!(ratio(1.0, 3.0), Some(0.333));
        assert_eq!(ratio(1.0, 0.0), None);
    }

    #[test]
    fn seconds_between_timestamps() -> anyhow::Result<()> {
        let a: Timestamp = "2025-01-01T00:00:00Z".parse()?;
        let b: Timestamp = "2025-01-01T00:00:00.2504Z".parse()?;
        assert_eq!(secs_between(Some(a), Some(b)), Some(0.25));
        assert_eq!(secs_between(Some(b), Some(a)), Some(-0.25));
        assert_eq!(secs_between(Some(a), None), None);
        Ok(())
    }
}
