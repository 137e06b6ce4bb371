//! Snowflake id arithmetic: 41 bits of milliseconds since `EPOCH_MS`, 10 bits of worker id,
//! 12 bits of sequence. Pure state machine: the caller supplies the clock reading and decides
//! how to wait when it is told the clock went backwards, so this never sleeps or panics.

/// 2024-01-01T00:00:00Z: 41 bits of milliseconds from here last until 2093.
pub const EPOCH_MS: i64 = 1_704_067_200_000;
pub const WORKER_BITS: u32 = 10;
pub const SEQUENCE_BITS: u32 = 12;
pub const MAX_WORKER: u16 = (1 << WORKER_BITS) - 1;
const MAX_SEQUENCE: u16 = (1 << SEQUENCE_BITS) - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SnowflakeError {
    #[error("worker id {0} is above {MAX_WORKER}")]
    WorkerOutOfRange(u16),
    #[error("clock is {behind_ms} ms behind the last id issued")]
    ClockBehind { behind_ms: i64 },
    /// All 4,096 ids of this millisecond are used; ask again in the next one.
    #[error("sequence exhausted for this millisecond")]
    SequenceExhausted,
    #[error("clock reading is before the snowflake epoch")]
    BeforeEpoch,
}

#[derive(Debug, Clone)]
pub struct Snowflake {
    worker: u16,
    last_ms: i64,
    sequence: u16,
}

impl Snowflake {
    pub fn new(worker: u16) -> Result<Self, SnowflakeError> {
        if worker > MAX_WORKER {
            return Err(SnowflakeError::WorkerOutOfRange(worker));
        }
        Ok(Self {
            worker,
            last_ms: -1,
            sequence: 0,
        })
    }

    pub fn worker(&self) -> u16 {
        self.worker
    }

    /// The next id at clock reading `now_ms` (epoch milliseconds). Never returns an id twice:
    /// a reading older than the last one used is refused with `ClockBehind`.
    pub fn next(&mut self, now_ms: i64) -> Result<i64, SnowflakeError> {
        let rel = now_ms - EPOCH_MS;
        if rel < 0 {
            return Err(SnowflakeError::BeforeEpoch);
        }
        if rel < self.last_ms {
            return Err(SnowflakeError::ClockBehind {
                behind_ms: self.last_ms - rel,
            });
        }
        if rel == self.last_ms {
            if self.sequence == MAX_SEQUENCE {
                return Err(SnowflakeError::SequenceExhausted);
            }
            self.sequence += 1;
        } else {
            self.last_ms = rel;
            self.sequence = 0;
        }
        Ok((rel << (WORKER_BITS + SEQUENCE_BITS))
            | (i64::from(self.worker) << SEQUENCE_BITS)
            | i64::from(self.sequence))
    }
}

/// The millisecond timestamp an id was made at.
pub fn id_time_ms(id: i64) -> i64 {
    (id >> (WORKER_BITS + SEQUENCE_BITS)) + EPOCH_MS
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn rejects_worker_out_of_range() {
        assert!(Snowflake::new(MAX_WORKER + 1).is_err());
    }

    #[test]
    fn exhausts_sequence_then_moves_on() {
        let Ok(mut s) = Snowflake::new(3) else {
            panic!("worker 3 is valid")
        };
        let t = EPOCH_MS + 1_000;
        for _ in 0..=MAX_SEQUENCE {
            assert!(s.next(t).is_ok());
        }
        assert_eq!(s.next(t), Err(SnowflakeError::SequenceExhausted));
        assert!(s.next(t + 1).is_ok());
    }

    proptest! {
        /// Whatever the clock does (standing still, jumping back, jumping ahead), every id
        /// handed out is unique, positive and increasing, and carries the worker id.
        #[test]
        fn ids_unique_and_increasing(worker in 0u16..=MAX_WORKER, steps in proptest::collection::vec(-50i64..50, 1..2000)) {
            let mut s = Snowflake::new(worker).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut now = EPOCH_MS + 10_000;
            let mut seen = HashSet::new();
            let mut last = 0i64;
            for step in steps {
                now += step.max(-20);
                match s.next(now) {
                    Ok(id) => {
                        prop_assert!(id > last);
                        prop_assert!(seen.insert(id));
                        prop_assert_eq!((id >> SEQUENCE_BITS) & i64::from(MAX_WORKER), i64::from(worker));
                        last = id;
                    }
                    Err(SnowflakeError::ClockBehind { behind_ms }) => prop_assert!(behind_ms > 0),
                    Err(SnowflakeError::SequenceExhausted) => {}
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                }
            }
        }
    }
}
