//! Snowflake id generation on top of the pure arithmetic in `stampede_domain::snowflake`:
//! this adds the clock and the waiting policy. A clock that moves backwards by up to
//! `max_backwards` is waited out; further back, ids are refused with a clear error rather
//! than risk a duplicate.
//!
//! Distributed mode leases the worker id; an [`IdGate`] stops the generator once the lease
//! may be about to lapse (another node could then take the id), and `set_worker` switches
//! to a newly leased id.

use crate::clock::Clock;
use stampede_domain::snowflake::{Snowflake, SnowflakeError};
use stampede_domain::time::to_ms;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum IdError {
    #[error("the clock moved backwards by {0} ms, more than the {1} ms we wait out")]
    ClockMovedBackwards(i64, u64),
    #[error("4,096 ids were made this millisecond and the clock does not move on")]
    ClockStalled,
    #[error(transparent)]
    Config(SnowflakeError),
    /// The worker-id lease could not be renewed in time: minting now could duplicate ids.
    #[error("this node's worker-id lease is not confirmed; no ids until Redis renews it")]
    NoWorkerLease,
}

/// Whether a leased worker id may be used now: open until a moment the lease owner sets
/// after each good renewal, closed after it without anyone having to act.
#[derive(Debug)]
pub struct IdGate {
    origin: Instant,
    /// Nanoseconds after `origin` until which ids may be minted (0: closed).
    open_until_ns: AtomicU64,
}

impl Default for IdGate {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            open_until_ns: AtomicU64::new(0),
        }
    }
}

impl IdGate {
    /// Ids may be minted until `until` (later calls may move it either way).
    pub fn open_until(&self, until: Instant) {
        let ns = u64::try_from(until.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX);
        self.open_until_ns.store(ns, Ordering::Release);
    }

    pub fn close(&self) {
        self.open_until_ns.store(0, Ordering::Release);
    }

    pub fn is_open(&self) -> bool {
        let now = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        now < self.open_until_ns.load(Ordering::Acquire)
    }
}

pub struct IdGenerator {
    state: Mutex<Snowflake>,
    clock: Arc<dyn Clock>,
    max_backwards: Duration,
    gate: Option<Arc<IdGate>>,
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
            gate: None,
        })
    }

    /// Mints only while `gate` is open (a leased worker id).
    pub fn with_gate(mut self, gate: Arc<IdGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Mints with `worker` from now on (a re-leased id); the same id keeps its sequence.
    pub fn set_worker(&self, worker: u16) -> Result<(), IdError> {
        let fresh = Snowflake::new(worker).map_err(IdError::Config)?;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.worker() != worker {
            *state = fresh;
        }
        Ok(())
    }

    /// The next id. May block the calling thread for at most `max_backwards` (a few ms) when
    /// the clock stepped back or this millisecond's 4,096 ids are used.
    pub fn next(&self) -> Result<i64, IdError> {
        if self.gate.as_ref().is_some_and(|g| !g.is_open()) {
            return Err(IdError::NoWorkerLease);
        }
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
    fn a_closed_gate_refuses_and_a_new_worker_takes_over() {
        let gate = Arc::new(IdGate::default());
        let Ok(ids) = IdGenerator::new(3, Arc::new(crate::clock::SystemClock), Duration::ZERO)
        else {
            panic!("worker 3 is valid")
        };
        let ids = ids.with_gate(gate.clone());
        assert!(matches!(ids.next(), Err(IdError::NoWorkerLease)));
        gate.open_until(Instant::now() + Duration::from_secs(60));
        let a = ids.next().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((a >> 12) & 0x3ff, 3);
        gate.open_until(Instant::now() - Duration::from_millis(1));
        assert!(matches!(ids.next(), Err(IdError::NoWorkerLease)));
        gate.open_until(Instant::now() + Duration::from_secs(60));
        ids.set_worker(9).unwrap_or_else(|e| panic!("{e}"));
        let b = ids.next().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((b >> 12) & 0x3ff, 9);
        gate.close();
        assert!(!gate.is_open());
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
