//! One dependency's circuit breaker, shared by every caller on the node.
//!
//! Cost: the state and the end of an open period are mirrored in atomics, so reading the
//! state (readiness, metrics) and refusing calls while open never lock. Admitting a call in
//! the closed state and recording outcomes take a `std::sync::Mutex` held for a few
//! instructions and never across an `.await`.

use crate::machine::{Admission, BreakerConfig, BreakerState, Machine};
use stampede_core::ports::{Dependency, StoreError};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The breaker's time source; tests pass a manual one.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
}

/// `Instant::now()`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told (tests).
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    offset_ns: AtomicU64,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            offset_ns: AtomicU64::new(0),
        }
    }
}

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.offset_ns.fetch_add(ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + Duration::from_nanos(self.offset_ns.load(Ordering::SeqCst))
    }
}

/// Why a call to a dependency counted as a failure (the `kind` label of
/// `stampede_dependency_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Connection refused or reset, I/O error, pool exhausted: the dependency did not answer.
    Unreachable,
    /// It did not answer within the call's deadline.
    Timeout,
    /// Not tried: the breaker is open.
    BreakerOpen,
}

impl FailureKind {
    pub const ALL: [FailureKind; 3] = [
        FailureKind::Unreachable,
        FailureKind::Timeout,
        FailureKind::BreakerOpen,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Unreachable => "unreachable",
            FailureKind::Timeout => "timeout",
            FailureKind::BreakerOpen => "breaker_open",
        }
    }
}

/// The source of the `StoreError::Unavailable` a refused call gets.
#[derive(Debug, thiserror::Error)]
#[error("{dependency} is unavailable: its circuit breaker is open")]
pub struct BreakerOpen {
    pub dependency: Dependency,
}

/// The source of the `StoreError::Unavailable` of a call that ran out of time.
#[derive(Debug, thiserror::Error)]
#[error("{dependency} did not answer within {deadline:?}")]
pub struct DeadlineExceeded {
    pub dependency: Dependency,
    pub deadline: Duration,
}

pub struct Breaker {
    dependency: Dependency,
    clock: Arc<dyn Clock>,
    machine: Mutex<Machine>,
    /// `BreakerState::gauge` of `machine`, for lock-free reads.
    state: AtomicU8,
    /// While open: nanoseconds after `origin` until which calls are refused without locking.
    open_until_ns: AtomicU64,
    origin: Instant,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("dependency", &self.dependency)
            .field("state", &self.state())
            .finish()
    }
}

impl Breaker {
    pub fn new(dependency: Dependency, config: BreakerConfig) -> Self {
        Self::with_clock(dependency, config, Arc::new(SystemClock))
    }

    pub fn with_clock(
        dependency: Dependency,
        config: BreakerConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let origin = clock.now();
        let breaker = Self {
            dependency,
            clock,
            machine: Mutex::new(Machine::new(config)),
            state: AtomicU8::new(BreakerState::Closed.gauge()),
            open_until_ns: AtomicU64::new(0),
            origin,
        };
        breaker.publish(BreakerState::Closed);
        breaker
    }

    pub fn dependency(&self) -> Dependency {
        self.dependency
    }

    pub fn state(&self) -> BreakerState {
        BreakerState::from_gauge(self.state.load(Ordering::Acquire))
    }

    /// Whether a call now would be refused without being tried.
    pub fn is_open(&self) -> bool {
        self.state() == BreakerState::Open && !self.open_period_over()
    }

    fn open_period_over(&self) -> bool {
        self.nanos(self.clock.now()) >= self.open_until_ns.load(Ordering::Acquire)
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        // A panic cannot leave the machine half-changed (each step is one assignment).
        self.machine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May a call go to the dependency now? The permit records its outcome; a permit dropped
    /// without one (the caller was cancelled) counts as nothing.
    pub fn admit(&self) -> Result<Permit<'_>, BreakerOpen> {
        let refused = || {
            self.count(FailureKind::BreakerOpen);
            BreakerOpen {
                dependency: self.dependency,
            }
        };
        if self.state() == BreakerState::Open && !self.open_period_over() {
            return Err(refused());
        }
        let now = self.clock.now();
        let mut m = self.lock();
        let before = m.state();
        let admission = m.admit(now);
        self.sync(&m, before);
        drop(m);
        match admission {
            Admission::Allowed { probe } => Ok(Permit {
                breaker: self,
                probe,
                done: false,
            }),
            Admission::Refused => Err(refused()),
        }
    }

    /// `admit`, as the `StoreError` a store call returns when refused.
    pub fn admit_call(&self) -> Result<Permit<'_>, StoreError> {
        self.admit().map_err(|e| StoreError::Unavailable {
            dependency: self.dependency,
            source: Box::new(e),
        })
    }

    /// Records the outcome of a call made without a permit (a background probe that must run
    /// even while the breaker is open, e.g. readiness): success closes, failure counts.
    pub fn observe(&self, outcome: Result<(), FailureKind>) {
        let now = self.clock.now();
        let mut m = self.lock();
        let before = m.state();
        match outcome {
            Ok(()) => m.observed_up(),
            Err(kind) => {
                self.count(kind);
                m.observed_down(now);
            }
        }
        self.sync(&m, before);
    }

    fn count(&self, kind: FailureKind) {
        self.add_errors(kind, 1);
    }

    fn add_errors(&self, kind: FailureKind, n: u64) {
        metrics::counter!(
            "stampede_dependency_errors_total",
            "dependency" => self.dependency.as_str(),
            "kind" => kind.as_str()
        )
        .increment(n);
    }

    fn finish(&self, probe: bool, outcome: Option<Result<(), FailureKind>>) {
        let now = self.clock.now();
        let mut m = self.lock();
        let before = m.state();
        match outcome {
            Some(Ok(())) => m.success(probe),
            Some(Err(kind)) => {
                self.count(kind);
                m.failure(probe, now);
            }
            None => m.abandon(probe),
        }
        self.sync(&m, before);
    }

    /// Mirrors the machine into the atomics and reports a transition.
    fn sync(&self, m: &Machine, before: BreakerState) {
        let after = m.state();
        if let Some(until) = m.open_until() {
            self.open_until_ns
                .store(self.nanos(until), Ordering::Release);
        }
        self.state.store(after.gauge(), Ordering::Release);
        if after != before {
            match after {
                BreakerState::Open => tracing::warn!(
                    dependency = %self.dependency,
                    "circuit breaker open: calls fail fast until a probe succeeds"
                ),
                BreakerState::HalfOpen => {
                    tracing::info!(dependency = %self.dependency, "circuit breaker half-open: probing")
                }
                BreakerState::Closed => {
                    tracing::info!(dependency = %self.dependency, "circuit breaker closed: dependency is back")
                }
            }
            self.publish(after);
        }
    }

    /// Sets this breaker's gauges to its current state (at metrics render time, so they
    /// exist even before the first transition).
    pub fn publish_state(&self) {
        self.publish(self.state());
    }

    /// Registers this breaker's error counters at zero, one per kind (alerts `rate()` them
    /// from the first scrape, not from the first failure).
    pub fn register_metrics(&self) {
        for kind in FailureKind::ALL {
            self.add_errors(kind, 0);
        }
    }

    fn publish(&self, state: BreakerState) {
        metrics::gauge!("stampede_breaker_state", "dependency" => self.dependency.as_str())
            .set(f64::from(state.gauge()));
        metrics::gauge!("stampede_dependency_up", "dependency" => self.dependency.as_str()).set(
            if state == BreakerState::Closed {
                1.0
            } else {
                0.0
            },
        );
    }
}

/// Leave to make one call; say how it went with `success` / `failure`.
#[must_use = "a permit records the call's outcome"]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    done: bool,
}

impl Permit<'_> {
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    pub fn success(mut self) {
        self.done = true;
        self.breaker.finish(self.probe, Some(Ok(())));
    }

    pub fn failure(mut self, kind: FailureKind) {
        self.done = true;
        self.breaker.finish(self.probe, Some(Err(kind)));
    }

    /// `failure(kind)` when `kind` is `Some`, else `success()`.
    pub fn record(self, failure: Option<FailureKind>) {
        match failure {
            Some(kind) => self.failure(kind),
            None => self.success(),
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.finish(self.probe, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(clock: Arc<ManualClock>) -> Breaker {
        Breaker::with_clock(
            Dependency::Redis,
            BreakerConfig {
                failure_threshold: 2,
                open_for: Duration::from_millis(100),
                ..BreakerConfig::default()
            },
            clock,
        )
    }

    fn fail(b: &Breaker) {
        match b.admit() {
            Ok(p) => p.failure(FailureKind::Unreachable),
            Err(e) => panic!("refused: {e}"),
        }
    }

    #[test]
    fn refuses_while_open_and_probes_once_after() {
        let clock = Arc::new(ManualClock::default());
        let b = breaker(clock.clone());
        fail(&b);
        fail(&b);
        assert!(b.is_open());
        assert!(b.admit().is_err());
        clock.advance(Duration::from_millis(100));
        assert!(!b.is_open());
        let probe = b.admit().unwrap_or_else(|e| panic!("{e}"));
        assert!(probe.is_probe());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.admit().is_err(), "second probe refused");
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.admit().is_ok_and(|p| !p.is_probe()));
    }

    #[test]
    fn a_dropped_probe_lets_the_next_call_probe() {
        let clock = Arc::new(ManualClock::default());
        let b = breaker(clock.clone());
        fail(&b);
        fail(&b);
        clock.advance(Duration::from_millis(100));
        drop(b.admit());
        let next = b.admit().unwrap_or_else(|e| panic!("{e}"));
        assert!(next.is_probe());
        next.failure(FailureKind::Timeout);
        assert!(b.is_open());
    }

    #[test]
    fn observations_open_and_close_without_permits() {
        let clock = Arc::new(ManualClock::default());
        let b = breaker(clock.clone());
        b.observe(Err(FailureKind::Timeout));
        b.observe(Err(FailureKind::Timeout));
        assert_eq!(b.state(), BreakerState::Open);
        b.observe(Ok(()));
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn admit_call_names_the_dependency() {
        let clock = Arc::new(ManualClock::default());
        let b = breaker(clock);
        fail(&b);
        fail(&b);
        match b.admit_call() {
            Err(StoreError::Unavailable { dependency, .. }) => {
                assert_eq!(dependency, Dependency::Redis)
            }
            _ => panic!("an open breaker refuses with Unavailable"),
        }
    }

    #[test]
    fn concurrent_callers_see_one_probe() {
        let clock = Arc::new(ManualClock::default());
        let b = Arc::new(breaker(clock.clone()));
        fail(&b);
        fail(&b);
        clock.advance(Duration::from_millis(100));
        let probes: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let b = b.clone();
                    s.spawn(move || {
                        // Keep the permit: nobody reports, so at most one may exist.
                        let p = b.admit().ok();
                        let n = usize::from(p.is_some());
                        std::mem::forget(p);
                        n
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        assert_eq!(probes, 1);
    }
}
