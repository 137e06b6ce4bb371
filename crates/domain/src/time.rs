//! Time helpers. Storage keeps epoch milliseconds (sqlx has no jiff support), the API speaks
//! RFC 3339; both go through these two functions so precision is the same everywhere.

use jiff::Timestamp;

/// Epoch milliseconds of `ts` (sub-millisecond precision is dropped).
pub fn to_ms(ts: Timestamp) -> i64 {
    ts.as_millisecond()
}

/// The timestamp of `ms` epoch milliseconds; out-of-range values clamp to jiff's limits so a
/// corrupt row cannot panic a reader.
pub fn from_ms(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// `ts` truncated to whole milliseconds, the precision every stored time has.
pub fn truncate_ms(ts: Timestamp) -> Timestamp {
    from_ms(to_ms(ts))
}
