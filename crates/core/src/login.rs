//! Login throttling: failed attempts counted per account and per client IP, with lockouts
//! that grow (after `free_failures`, the lockout starts at `initial_lockout_ms` and doubles
//! with every further failure up to `max_lockout_ms`); a quiet `window_ms` forgets them. The
//! counts live behind the [`LoginAttempts`] port: in-process (embedded) or in Redis
//! (distributed, so limits hold across nodes). Argon2 work is capped separately by
//! [`LoginThrottle`]'s semaphore so logins cannot starve claims of CPU.

use crate::ports::StoreError;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// How failures turn into lockouts for one kind of key (account or IP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures allowed before the first lockout.
    pub free_failures: u32,
    /// The first lockout; each further failure doubles it.
    pub initial_lockout_ms: u64,
    /// The longest lockout.
    pub max_lockout_ms: u64,
    /// Failures are forgotten after this long without one (at least the longest lockout).
    pub window_ms: u64,
}

impl LockoutPolicy {
    /// The lockout that the `failures`-th failure starts, if any.
    pub fn lockout_after(&self, failures: u32) -> Option<u64> {
        let over = failures.checked_sub(self.free_failures)?.checked_sub(1)?;
        let factor = 1u64 << over.min(40);
        Some(
            self.initial_lockout_ms
                .saturating_mul(factor)
                .min(self.max_lockout_ms),
        )
    }

    /// How long a key's record must live after a failure.
    pub fn retention_ms(&self) -> u64 {
        self.window_ms.max(self.max_lockout_ms).max(1)
    }
}

/// Failed-login bookkeeping. Keys are opaque (`acct:<name>`, `ip:<addr>`).
#[async_trait]
pub trait LoginAttempts: Send + Sync + 'static {
    /// Until when (epoch ms) `key` is locked out, if it still is at `now_ms`.
    async fn locked_until(&self, key: &str, now_ms: i64) -> Result<Option<i64>, StoreError>;

    /// Counts one failure of `key` at `now_ms`, atomically; returns the failures counted so
    /// far (within the window) and the end of the lockout this failure started, if any.
    async fn record_failure(
        &self,
        key: &str,
        now_ms: i64,
        policy: &LockoutPolicy,
    ) -> Result<(u32, Option<i64>), StoreError>;

    /// Forgets `key`'s failures (after a successful login).
    async fn reset(&self, key: &str) -> Result<(), StoreError>;
}

/// Everything `AuthService::login` needs to refuse early.
pub struct LoginThrottle {
    pub attempts: Arc<dyn LoginAttempts>,
    pub account: LockoutPolicy,
    pub ip: LockoutPolicy,
    /// Password verifications in flight at most (argon2 is ~20–50 ms of CPU each).
    pub verifications: Arc<Semaphore>,
    /// How long a login waits for a verification slot before 503 `OVERLOADED`.
    pub queue_wait: Duration,
}

impl LoginThrottle {
    pub fn new(
        attempts: Arc<dyn LoginAttempts>,
        account: LockoutPolicy,
        ip: LockoutPolicy,
        max_in_flight: usize,
        queue_wait: Duration,
    ) -> Self {
        Self {
            attempts,
            account,
            ip,
            verifications: Arc::new(Semaphore::new(max_in_flight.max(1))),
            queue_wait,
        }
    }
}

pub fn account_key(username: &str) -> String {
    format!("acct:{}", username.to_lowercase())
}

pub fn ip_key(ip: &str) -> String {
    format!("ip:{ip}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockouts_start_after_the_free_failures_and_double_up_to_the_cap() {
        let p = LockoutPolicy {
            free_failures: 5,
            initial_lockout_ms: 1_000,
            max_lockout_ms: 10_000,
            window_ms: 60_000,
        };
        let got: Vec<Option<u64>> = (1..=11).map(|n| p.lockout_after(n)).collect();
        assert_eq!(
            got,
            [
                None,
                None,
                None,
                None,
                None,
                Some(1_000),
                Some(2_000),
                Some(4_000),
                Some(8_000),
                Some(10_000),
                Some(10_000)
            ]
        );
        assert_eq!(p.lockout_after(u32::MAX), Some(10_000));
    }
}
