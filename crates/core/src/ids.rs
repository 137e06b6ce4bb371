//! Snowflake id generation on top of the pure arithmetic in `stampede_domain::snowflake`:
//! this adds the clock and the waiting policy. A clock that moves backwards by up to
//! `max_backwards` is waited out; further back, ids are refused with a clear error rather
//! than risk a duplicate.

use crate::clock::Clock;
use stampede_domain::snowflake::{Snowflake, SnowflakeError};
use stampede_domain::time::to_ms;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum IdError {
    #[error("the clock moved backwards by {0} ms, more than the {1} ms we wait out")]
    ClockMovedBackwards(i64, u64),
    #[error("4,096 ids were made this millisecond and the clock does not move on")]
    ClockStalled,
    #[error(transparent)]
    Config(SnowflakeError),
}

pub struct IdGenerator {
    state: Mutex<Snowflake>,
    clock: Arc<dyn Clock>,
    max_backwards: Duration,
}

impl IdGenerator {
    pub fn new(
        worker: u16,
        clock: Arc<dyn Clock>,
        max_backwards: Duration,
    ) -> Result<Self, IdError> {
        let state = Snowflake::new(worker).map_err(IdError::Config)?;
        Ok(Self {
            state: Mutex::new(state),
            clock,
            max_backwards,
        })
    }

    /// The next id. May block the calling thread for at most `max_backwards` (a few ms) when
    /// the clock stepped back or this millisecond's 4,096 ids are used.
    pub fn next(&self) -> Result<i64, IdError> {
        let deadline = std::time::Instant::now() + self.max_backwards;
        loop {
            // Read the clock under the lock: a reading taken before it could be older than
            // an id another thread issued meanwhile, which would look like the clock going back.
            let attempt = {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                state.next(to_ms(self.clock.now()))
            };
            match attempt {
                Ok(id) => return Ok(id),
                Err(SnowflakeError::SequenceExhausted) if std::time::Instant::now() < deadline => {
                    std::thread::yield_now()
                }
                Err(SnowflakeError::SequenceExhausted) => return Err(IdError::ClockStalled),
                Err(SnowflakeError::ClockBehind { behind_ms }) => {
                    if std::time::Instant::now() >= deadline {
                        let max = u64::try_from(self.max_backwards.as_millis()).unwrap_or(u64::MAX);
                        return Err(IdError::ClockMovedBackwards(behind_ms, max));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(IdError::Config(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use jiff::SignedDuration;

    #[test]
    fn clock_far_behind_is_refused_not_duplicated() {
        let clock = Arc::new(ManualClock::default());
        let ids = IdGenerator::new(1, clock.clone(), Duration::from_millis(5));
        let Ok(ids) = ids else {
            panic!("worker 1 is valid")
        };
        let first = ids.next().ok();
        clock.advance(SignedDuration::from_secs(-10));
        assert!(matches!(ids.next(), Err(IdError::ClockMovedBackwards(..))));
        clock.advance(SignedDuration::from_secs(11));
        let later = ids.next().ok();
        assert!(later > first);
    }

    #[test]
    fn many_ids_are_unique() {
        let Ok(ids) = IdGenerator::new(
            2,
            Arc::new(crate::clock::SystemClock),
            Duration::from_millis(20),
        ) else {
            panic!("worker 2 is valid")
        };
        let mut all: Vec<i64> = (0..20_000).filter_map(|_| ids.next().ok()).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(n, 20_000);
        assert_eq!(all.len(), n);
    }
}
