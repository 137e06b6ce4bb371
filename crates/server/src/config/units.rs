//! How durations are written in the configuration. Each key keeps its unit in its name
//! (`poll_interval_ms`, `lease_secs`, `retention_hours`: operators and scripts set those),
//! while the field holds a typed duration, converted once here. Use as
//! `#[serde(rename = "poll_interval_ms", with = "units::millis")] poll_interval: Duration`.
//!
//! Infrastructure timing (intervals, leases, timeouts) is a `std::time::Duration`; business
//! time that is added to timestamps (token lifetimes, lock lifetimes, retention) is a
//! `jiff::SignedDuration`, the type the use cases compute with.

use jiff::SignedDuration;
use serde::{Deserialize, Deserializer, Serializer};
use std::time::Duration;

/// Whole milliseconds (`…_ms`).
pub mod millis {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Optional whole milliseconds (`…_ms` whose absence means "pick a default by mode").
pub mod opt_millis {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// Optional whole seconds (`…_secs` whose absence means "pick a default by mode").
pub mod opt_secs {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_secs))
    }
}

/// Whole seconds (`…_secs`).
pub mod secs {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// Whole seconds of business time (`…_secs`). Signed on the wire, so a negative value
/// reaches the settings check and is refused there with the key's name.
pub mod signed_secs {
    use super::*;

    pub fn serialize<S: Serializer>(d: &SignedDuration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SignedDuration, D::Error> {
        i64::deserialize(d).map(SignedDuration::from_secs)
    }
}

/// Whole hours of business time (`…_hours`); absurdly large values saturate rather than
/// overflow (they mean "keep forever").
pub mod signed_hours {
    use super::*;

    const SECS_PER_HOUR: i64 = 3_600;

    pub fn serialize<S: Serializer>(d: &SignedDuration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_secs() / SECS_PER_HOUR).unwrap_or(0))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SignedDuration, D::Error> {
        let hours = i64::try_from(u64::deserialize(d)?).unwrap_or(i64::MAX);
        Ok(SignedDuration::from_secs(
            hours.saturating_mul(SECS_PER_HOUR),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Keys {
        #[serde(rename = "a_ms", with = "millis")]
        a: Duration,
        #[serde(rename = "b_secs", with = "secs")]
        b: Duration,
        #[serde(rename = "c_ms", with = "opt_millis")]
        c: Option<Duration>,
        #[serde(rename = "d_secs", with = "signed_secs")]
        d: SignedDuration,
        #[serde(rename = "e_hours", with = "signed_hours")]
        e: SignedDuration,
    }

    #[test]
    fn keys_keep_their_units_and_round_trip() {
        let json = r#"{"a_ms":250,"b_secs":30,"c_ms":null,"d_secs":-5,"e_hours":48}"#;
        let k: Keys = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            k,
            Keys {
                a: Duration::from_millis(250),
                b: Duration::from_secs(30),
                c: None,
                d: SignedDuration::from_secs(-5),
                e: SignedDuration::from_hours(48),
            }
        );
        assert_eq!(serde_json::to_string(&k).unwrap_or_default(), json);
    }

    #[test]
    fn huge_hours_saturate() {
        let k: SignedDuration =
            signed_hours::deserialize(serde_json::json!(u64::MAX)).unwrap_or_default();
        assert!(k > SignedDuration::from_hours(24 * 365 * 1_000_000));
    }
}
