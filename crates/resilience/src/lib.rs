//! `stampede-resilience`: how a node stops waiting for a dependency that is down.
//!
//! Owns the per-dependency circuit breaker (`breaker`, with its pure state machine in
//! `machine`), the set of a node's breakers (`Breakers`), the `guard` that runs one call
//! under a breaker and a deadline, and the rule for which failures count (`classify`). The
//! breakers' state is what `/readyz` and the `stampede_breaker_state{dependency}`,
//! `stampede_dependency_up{dependency}` and `stampede_dependency_errors_total{dependency,kind}`
//! metrics show. Adapters (MySQL, Redis) put their calls through it at their choke points.
//!
//! Written here rather than taken from a crate: `failsafe` wraps calls in its own error
//! type and its futures API predates async/await's `Send` needs, and `tower-resilience`'s
//! breaker is a tower `Layer`, i.e. it wraps *services*, while our dependency calls are
//! adapter methods, Redis connections and pool acquisitions that are not tower services.
//! We also need one breaker shared by every adapter of a dependency (state read by
//! readiness and metrics) and outcomes judged by our `StoreError`. The state machine is
//! ~150 lines and tested exhaustively below with a controllable clock.

mod breaker;
mod machine;

pub use breaker::{
    Breaker, BreakerOpen, Clock, DeadlineExceeded, FailureKind, ManualClock, Permit, SystemClock,
};
pub use machine::{Admission, BreakerConfig, BreakerState, Machine};

use stampede_core::ports::{Dependency, StoreError};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Whether a failed call says the dependency is unreachable or slow (counts against its
/// breaker), and how. A duplicate key, a refused change or bad stored data is an answer: the
/// dependency is up.
pub fn classify(e: &StoreError) -> Option<FailureKind> {
    match e {
        StoreError::Unavailable { source, .. } => {
            if source.downcast_ref::<DeadlineExceeded>().is_some() {
                Some(FailureKind::Timeout)
            } else if source.downcast_ref::<BreakerOpen>().is_some() {
                // Refused without trying: already counted, says nothing new.
                None
            } else {
                Some(FailureKind::Unreachable)
            }
        }
        // The request went out and its answer was lost: the link failed.
        StoreError::OutcomeUnknown { source, .. } => {
            if source.downcast_ref::<DeadlineExceeded>().is_some() {
                Some(FailureKind::Timeout)
            } else {
                Some(FailureKind::Unreachable)
            }
        }
        StoreError::Duplicate(_) | StoreError::Corrupt(_) | StoreError::Backend(_) => None,
    }
}

/// Runs `fut` against `breaker`'s dependency: refused at once while the breaker is open,
/// else given `deadline` to finish; the outcome (as `classify` judges it) goes to the
/// breaker. A deadline passed is `StoreError::Unavailable` with a [`DeadlineExceeded`] source.
pub async fn guard<T, F>(breaker: &Breaker, deadline: Duration, fut: F) -> Result<T, StoreError>
where
    F: Future<Output = Result<T, StoreError>>,
{
    let permit = breaker.admit_call()?;
    match tokio::time::timeout(deadline, fut).await {
        Ok(Ok(v)) => {
            permit.success();
            Ok(v)
        }
        Ok(Err(e)) => {
            permit.record(classify(&e));
            Err(e)
        }
        Err(_) => {
            permit.failure(FailureKind::Timeout);
            Err(deadline_exceeded(breaker.dependency(), deadline))
        }
    }
}

/// The error of a call to `dependency` that did not finish within `deadline`.
pub fn deadline_exceeded(dependency: Dependency, deadline: Duration) -> StoreError {
    StoreError::Unavailable {
        dependency,
        source: Box::new(DeadlineExceeded {
            dependency,
            deadline,
        }),
    }
}

/// A node's breakers, one per dependency it uses; cheap to clone (shared state).
#[derive(Clone, Debug)]
pub struct Breakers {
    database: Arc<Breaker>,
    redis: Arc<Breaker>,
    broker: Arc<Breaker>,
}

impl Breakers {
    pub fn new(config: BreakerConfig) -> Self {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    pub fn with_clock(config: BreakerConfig, clock: Arc<dyn Clock>) -> Self {
        let make = |d| Arc::new(Breaker::with_clock(d, config, clock.clone()));
        Self {
            database: make(Dependency::Database),
            redis: make(Dependency::Redis),
            broker: make(Dependency::Broker),
        }
    }

    /// Sets the gauges of the breakers of `used` (the dependencies the node talks to; call
    /// when rendering metrics).
    pub fn publish(&self, used: &[Dependency]) {
        for d in used {
            self.get(*d).publish_state();
        }
    }

    /// Registers the error counters of the breakers of `used` at zero (once, at start).
    pub fn register_metrics(&self, used: &[Dependency]) {
        for d in used {
            self.get(*d).register_metrics();
        }
    }

    pub fn get(&self, dependency: Dependency) -> &Arc<Breaker> {
        match dependency {
            Dependency::Database => &self.database,
            Dependency::Redis => &self.redis,
            Dependency::Broker => &self.broker,
        }
    }
}

impl Default for Breakers {
    fn default() -> Self {
        Self::new(BreakerConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(
            Dependency::Database,
            BreakerConfig {
                failure_threshold: 2,
                open_for: Duration::from_secs(60),
                ..BreakerConfig::default()
            },
        )
    }

    fn unreachable() -> StoreError {
        StoreError::Unavailable {
            dependency: Dependency::Database,
            source: "connection refused".into(),
        }
    }

    #[test]
    fn only_unreachable_or_slow_counts() {
        assert_eq!(classify(&unreachable()), Some(FailureKind::Unreachable));
        assert_eq!(
            classify(&deadline_exceeded(
                Dependency::Redis,
                Duration::from_millis(5)
            )),
            Some(FailureKind::Timeout)
        );
        assert_eq!(classify(&StoreError::Duplicate("k".into())), None);
        assert_eq!(classify(&StoreError::Corrupt("row".into())), None);
        assert_eq!(classify(&StoreError::Backend("refused".into())), None);
    }

    #[tokio::test]
    async fn answers_do_not_open_but_unreachable_does() {
        let b = breaker();
        for _ in 0..5 {
            let r: Result<(), _> = guard(&b, Duration::from_secs(1), async {
                Err(StoreError::Duplicate("k".into()))
            })
            .await;
            assert!(matches!(r, Err(StoreError::Duplicate(_))));
        }
        assert_eq!(b.state(), BreakerState::Closed);
        for _ in 0..2 {
            let _ = guard(&b, Duration::from_secs(1), async {
                Err::<(), _>(unreachable())
            })
            .await;
        }
        assert_eq!(b.state(), BreakerState::Open);
        let started = std::time::Instant::now();
        let r = guard(&b, Duration::from_secs(1), async { Ok(1) }).await;
        assert!(matches!(
            r,
            Err(StoreError::Unavailable {
                dependency: Dependency::Database,
                ..
            })
        ));
        assert!(started.elapsed() < Duration::from_millis(50));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_call_is_cut_at_its_deadline_and_counts() {
        let b = breaker();
        for _ in 0..2 {
            let r: Result<(), _> = guard(&b, Duration::from_millis(200), async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(())
            })
            .await;
            match r {
                Err(e @ StoreError::Unavailable { .. }) => {
                    assert_eq!(classify(&e), Some(FailureKind::Timeout))
                }
                _ => panic!("expected a deadline error"),
            }
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn breakers_are_one_per_dependency() {
        let all = Breakers::default();
        for d in [Dependency::Database, Dependency::Redis, Dependency::Broker] {
            assert_eq!(all.get(d).dependency(), d);
        }
    }
}
