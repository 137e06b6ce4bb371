//! The circuit breaker's state machine, pure: every step takes the clock reading, so tests
//! drive it through any sequence of calls and times without sleeping.
//!
//! closed → open: `failure_threshold` consecutive failures, or a window of `ratio_window`
//! calls of which at least `failure_ratio` failed. open → half-open: the first call after
//! `open_for`, which becomes the one probe. half-open → closed: the probe succeeded;
//! half-open → open: the probe failed. While a probe is out, other calls are refused; a
//! probe that never reports (its caller gave up) frees the slot when dropped, or after
//! `probe_interval` at the latest.

use std::time::{Duration, Instant};

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (at least 1).
    pub failure_threshold: u32,
    /// Share of failed calls in one window that opens the breaker (0 < ratio ≤ 1).
    pub failure_ratio: f64,
    /// Calls per window for `failure_ratio` (at least 1).
    pub ratio_window: u32,
    /// How long an open breaker refuses every call before letting one probe through.
    pub open_for: Duration,
    /// The longest a half-open breaker waits for its probe's answer before admitting another.
    pub probe_interval: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            failure_ratio: 0.5,
            ratio_window: 20,
            open_for: Duration::from_millis(1_000),
            probe_interval: Duration::from_millis(1_000),
        }
    }
}

/// What `/readyz` and the `stampede_breaker_state` gauge show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    /// The gauge value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }

    pub(crate) fn from_gauge(v: u8) -> Self {
        match v {
            0 => BreakerState::Closed,
            1 => BreakerState::HalfOpen,
            _ => BreakerState::Open,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }
}

/// The answer to "may this call go to the dependency?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go; `probe` when this call decides whether a half-open breaker closes.
    Allowed {
        probe: bool,
    },
    Refused,
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Closed {
        consecutive: u32,
        window_calls: u32,
        window_failures: u32,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        /// When the probe out now was admitted; `None` when none is out.
        probe_since: Option<Instant>,
    },
}

const CLOSED: Phase = Phase::Closed {
    consecutive: 0,
    window_calls: 0,
    window_failures: 0,
};

#[derive(Debug, Clone)]
pub struct Machine {
    config: BreakerConfig,
    phase: Phase,
}

impl Machine {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config: BreakerConfig {
                failure_threshold: config.failure_threshold.max(1),
                ratio_window: config.ratio_window.max(1),
                failure_ratio: if config.failure_ratio > 0.0 && config.failure_ratio <= 1.0 {
                    config.failure_ratio
                } else {
                    1.0
                },
                ..config
            },
            phase: CLOSED,
        }
    }

    pub fn state(&self) -> BreakerState {
        match self.phase {
            Phase::Closed { .. } => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Until when an open breaker refuses every call.
    pub fn open_until(&self) -> Option<Instant> {
        match self.phase {
            Phase::Open { until } => Some(until),
            _ => None,
        }
    }

    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.phase {
            Phase::Closed { .. } => Admission::Allowed { probe: false },
            Phase::Open { until } if now < until => Admission::Refused,
            Phase::Open { .. } => {
                self.phase = Phase::HalfOpen {
                    probe_since: Some(now),
                };
                Admission::Allowed { probe: true }
            }
            Phase::HalfOpen { probe_since } => match probe_since {
                Some(since)
                    if now.saturating_duration_since(since) < self.config.probe_interval =>
                {
                    Admission::Refused
                }
                _ => {
                    self.phase = Phase::HalfOpen {
                        probe_since: Some(now),
                    };
                    Admission::Allowed { probe: true }
                }
            },
        }
    }

    /// The dependency answered. Only a probe's answer closes a half-open breaker; a late
    /// answer to a call admitted before the breaker opened changes nothing.
    pub fn success(&mut self, probe: bool) {
        match &mut self.phase {
            Phase::Closed {
                consecutive,
                window_calls,
                window_failures,
            } => {
                *consecutive = 0;
                *window_calls += 1;
                if *window_calls >= self.config.ratio_window {
                    *window_calls = 0;
                    *window_failures = 0;
                }
            }
            Phase::HalfOpen { .. } if probe => self.phase = CLOSED,
            _ => {}
        }
    }

    /// The dependency was unreachable or too slow.
    pub fn failure(&mut self, probe: bool, now: Instant) {
        let open = Phase::Open {
            until: now + self.config.open_for,
        };
        match &mut self.phase {
            Phase::Closed {
                consecutive,
                window_calls,
                window_failures,
            } => {
                *consecutive += 1;
                *window_calls += 1;
                *window_failures += 1;
                let ratio_tripped = *window_calls >= self.config.ratio_window
                    && f64::from(*window_failures)
                        >= self.config.failure_ratio * f64::from(*window_calls);
                if *consecutive >= self.config.failure_threshold || ratio_tripped {
                    self.phase = open;
                } else if *window_calls >= self.config.ratio_window {
                    *window_calls = 0;
                    *window_failures = 0;
                }
            }
            Phase::HalfOpen { .. } if probe => self.phase = open,
            _ => {}
        }
    }

    /// An out-of-band check (readiness, a watcher) saw the dependency answer: close.
    pub fn observed_up(&mut self) {
        if !matches!(self.phase, Phase::Closed { .. }) {
            self.phase = CLOSED;
        } else {
            self.success(false);
        }
    }

    /// An out-of-band check saw the dependency fail: counts like a call when closed,
    /// (re)opens for the full time otherwise.
    pub fn observed_down(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Closed { .. }) {
            self.failure(false, now);
        } else {
            self.phase = Phase::Open {
                until: now + self.config.open_for,
            };
        }
    }

    /// A probe ended without an answer (its caller was cancelled): let the next call probe.
    pub fn abandon(&mut self, probe: bool) {
        if probe && matches!(self.phase, Phase::HalfOpen { .. }) {
            self.phase = Phase::HalfOpen { probe_since: None };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 3,
            failure_ratio: 0.5,
            ratio_window: 10,
            open_for: Duration::from_millis(100),
            probe_interval: Duration::from_millis(50),
        }
    }

    #[test]
    fn opens_after_consecutive_failures_and_closes_after_a_good_probe() {
        let t0 = Instant::now();
        let mut m = Machine::new(config());
        for _ in 0..2 {
            assert_eq!(m.admit(t0), Admission::Allowed { probe: false });
            m.failure(false, t0);
        }
        assert_eq!(m.state(), BreakerState::Closed);
        m.failure(false, t0);
        assert_eq!(m.state(), BreakerState::Open);
        assert_eq!(m.admit(t0 + Duration::from_millis(99)), Admission::Refused);
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(m.admit(t1), Admission::Allowed { probe: true });
        assert_eq!(m.state(), BreakerState::HalfOpen);
        assert_eq!(m.admit(t1), Admission::Refused, "one probe at a time");
        m.success(true);
        assert_eq!(m.state(), BreakerState::Closed);
    }

    #[test]
    fn a_failed_probe_reopens_for_the_full_time() {
        let t0 = Instant::now();
        let mut m = Machine::new(config());
        for _ in 0..3 {
            m.failure(false, t0);
        }
        let t1 = t0 + Duration::from_millis(150);
        assert_eq!(m.admit(t1), Admission::Allowed { probe: true });
        m.failure(true, t1);
        assert_eq!(m.state(), BreakerState::Open);
        assert_eq!(m.open_until(), Some(t1 + Duration::from_millis(100)));
    }

    #[test]
    fn a_success_resets_the_consecutive_count() {
        let t0 = Instant::now();
        let mut m = Machine::new(config());
        for _ in 0..5 {
            m.failure(false, t0);
            m.failure(false, t0);
            m.success(false);
            m.success(false);
            m.success(false);
        }
        assert_eq!(m.state(), BreakerState::Closed);
    }

    #[test]
    fn a_window_below_the_ratio_starts_over() {
        let t0 = Instant::now();
        let mut m = Machine::new(config());
        // 4 failures in each window of 10, never 3 in a row: stays closed for ever.
        for _ in 0..10 {
            for _ in 0..2 {
                m.failure(false, t0);
                m.failure(false, t0);
                m.success(false);
            }
            for _ in 0..4 {
                m.success(false);
            }
        }
        assert_eq!(m.state(), BreakerState::Closed);
    }

    #[test]
    fn ratio_trips_on_the_window_closing_failure() {
        let t0 = Instant::now();
        let mut m = Machine::new(config());
        for _ in 0..4 {
            m.failure(false, t0);
            m.success(false);
        }
        m.success(false);
        assert_eq!(m.state(), BreakerState::Closed);
        m.failure(false, t0); // 10th call, 5 failures: 50 %
        assert_eq!(m.state(), BreakerState::Open);
    }

    #[test]
    fn a_lost_probe_frees_the_slot() {
        let t0 = Instant::now();
        let mut m = Machine::new(config());
        for _ in 0..3 {
            m.failure(false, t0);
        }
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(m.admit(t1), Admission::Allowed { probe: true });
        m.abandon(true);
        assert_eq!(m.admit(t1), Admission::Allowed { probe: true });
        // ...and a probe that never reports is replaced after probe_interval.
        assert_eq!(m.admit(t1 + Duration::from_millis(49)), Admission::Refused);
        assert_eq!(
            m.admit(t1 + Duration::from_millis(50)),
            Admission::Allowed { probe: true }
        );
    }

    #[test]
    fn late_answers_of_earlier_calls_do_not_decide_half_open() {
        let t0 = Instant::now();
        let mut m = Machine::new(config());
        for _ in 0..3 {
            m.failure(false, t0);
        }
        m.success(false);
        assert_eq!(m.state(), BreakerState::Open);
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(m.admit(t1), Admission::Allowed { probe: true });
        m.success(false);
        m.failure(false, t1);
        assert_eq!(m.state(), BreakerState::HalfOpen);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Wait(u64),
        Call(bool),
        Abandon,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u64..120).prop_map(Step::Wait),
            any::<bool>().prop_map(Step::Call),
            Just(Step::Abandon),
        ]
    }

    proptest! {
        /// Whatever happens: an open breaker admits nothing before its time, a half-open one
        /// has at most one probe out, and only failures open it.
        #[test]
        fn invariants_hold_for_any_sequence(steps in proptest::collection::vec(step(), 1..200)) {
            let cfg = config();
            let mut m = Machine::new(cfg);
            let mut now = Instant::now();
            let mut outstanding_probe = false;
            for s in steps {
                match s {
                    Step::Wait(ms) => now += Duration::from_millis(ms),
                    Step::Abandon => {
                        if outstanding_probe {
                            m.abandon(true);
                            outstanding_probe = false;
                        }
                    }
                    Step::Call(ok) => {
                        let before = m.state();
                        let until = m.open_until();
                        match m.admit(now) {
                            Admission::Refused => {
                                prop_assert_ne!(before, BreakerState::Closed);
                                if let Some(u) = until { prop_assert!(now < u); }
                            }
                            Admission::Allowed { probe } => {
                                if let Some(u) = until { prop_assert!(now >= u); }
                                prop_assert_eq!(probe, before != BreakerState::Closed);
                                if probe {
                                    // A new probe only when none is out or the old one is stale.
                                    outstanding_probe = true;
                                }
                                if ok {
                                    m.success(probe);
                                    prop_assert_eq!(m.state(), BreakerState::Closed);
                                } else {
                                    m.failure(probe, now);
                                    if probe {
                                        prop_assert_eq!(m.state(), BreakerState::Open);
                                        prop_assert_eq!(m.open_until(), Some(now + cfg.open_for));
                                    }
                                }
                                if probe { outstanding_probe = false; }
                            }
                        }
                    }
                }
            }
        }

        /// Closed with only successes stays closed; `threshold` failures in a row always open.
        #[test]
        fn consecutive_failures_open_exactly_at_the_threshold(
            successes in 0usize..50, threshold in 1u32..8
        ) {
            let now = Instant::now();
            let mut m = Machine::new(BreakerConfig { failure_threshold: threshold, ratio_window: 1000, ..config() });
            for _ in 0..successes { m.success(false); }
            prop_assert_eq!(m.state(), BreakerState::Closed);
            for i in 1..=threshold {
                m.failure(false, now);
                let want = if i == threshold { BreakerState::Open } else { BreakerState::Closed };
                prop_assert_eq!(m.state(), want);
            }
        }
    }
}
