//! Flow control on the claim route: a per-user token bucket (governor's keyed limiter), so a
//! single client hammering the button cannot take the hot path from everyone else. Limits
//! are per process; a fleet-wide limit needs a Redis-side limiter (not built yet).

use crate::error::ApiError;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use stampede_domain::ErrorCode;
use std::num::NonZeroU32;
use std::sync::Arc;

#[derive(Clone)]
pub struct ClaimLimiter {
    limiter: Option<Arc<DefaultKeyedRateLimiter<i64>>>,
}

impl ClaimLimiter {
    /// `per_second` claims per user with bursts of `burst`; 0 disables the limit.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            Arc::new(RateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            ))
        });
        Self { limiter }
    }

    /// `RATE_LIMITED` (429, with `Retry-After`) when `user` is over the limit.
    pub fn check(&self, user: i64) -> Result<(), ApiError> {
        let Some(l) = &self.limiter else {
            return Ok(());
        };
        l.check_key(&user).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            ApiError::new(
                ErrorCode::RateLimited,
                "too many claims from this user; retry after Retry-After seconds",
            )
            .retry_after(secs.max(1))
        })
    }

    /// Forgets users whose buckets are full again (called periodically so the map does not
    /// grow with every user who ever claimed).
    pub fn shrink(&self) {
        if let Some(l) = &self.limiter {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}
