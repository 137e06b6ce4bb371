//! The in-process `RateLimiter`: governor's keyed GCRA buckets, one keyed limiter per distinct
//! rate (rules are few, so are rates). Checking is lock-free per key apart from a read lock
//! on the small rate map, and allocates nothing once a rate has its limiter.
//!
//! It is the whole limiter in embedded mode (one node), and the fallback of the Redis limiter
//! while Redis is unreachable.

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use stampede_core::flow::{Check, Decision, FlowKey, RateLimiter};
use stampede_core::ports::StoreError;
use stampede_domain::flow::Rate;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};

type Keyed = Arc<DefaultKeyedRateLimiter<FlowKey>>;

#[derive(Default)]
pub struct MemoryRateLimiter {
    by_rate: RwLock<HashMap<Rate, Keyed>>,
    clock: DefaultClock,
}

impl MemoryRateLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks synchronously (the port's `check` without the future).
    pub fn check_now(&self, checks: &[Check]) -> Decision {
        for (index, c) in checks.iter().enumerate() {
            let limiter = self.limiter(c.rate);
            if let Err(not_until) = limiter.check_key(&c.key) {
                return Decision::Limited {
                    index,
                    retry_after: not_until.wait_time_from(self.clock.now()),
                };
            }
        }
        Decision::Allowed
    }

    fn limiter(&self, rate: Rate) -> Keyed {
        if let Some(l) = self
            .by_rate
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&rate)
        {
            return l.clone();
        }
        let mut map = self.by_rate.write().unwrap_or_else(|p| p.into_inner());
        map.entry(rate)
            .or_insert_with(|| {
                let per_second = NonZeroU32::new(rate.per_second).unwrap_or(NonZeroU32::MIN);
                let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
                Arc::new(governor::RateLimiter::keyed(
                    Quota::per_second(per_second).allow_burst(burst),
                ))
            })
            .clone()
    }

    /// Forgets keys whose buckets are full again (run periodically, so the maps do not grow
    /// with every user and IP ever seen).
    pub fn shrink(&self) {
        let map = self.by_rate.read().unwrap_or_else(|p| p.into_inner());
        for l in map.values() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Drops the limiters of rates no rule names any more.
    pub fn keep_only(&self, rates: &[Rate]) {
        let mut map = self.by_rate.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|r, _| rates.contains(r));
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn check(&self, checks: &[Check]) -> Result<Decision, StoreError> {
        Ok(self.check_now(checks))
    }
}
