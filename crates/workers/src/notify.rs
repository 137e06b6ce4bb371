//! Completion callbacks: a finished distribution with a `notify_url` gets one POST of its
//! summary (the `distribution.completed` payload), signed with HMAC-SHA256, retried with
//! exponential backoff. At least once: a node that dies after the POST but before recording
//! it sends again; receivers deduplicate on `X-Stampede-Delivery`, which never changes.
//!
//! Headers: `X-Stampede-Event: distribution.completed`, `X-Stampede-Delivery: <event id>`,
//! `X-Stampede-Timestamp: <unix seconds>`, `X-Stampede-Signature: sha256=<hex>` where the
//! signature is HMAC-SHA256(secret, "<timestamp>.<body>") — the timestamp is signed so a
//! captured request cannot be replayed later as a fresh one.

use crate::runner::Job;
use async_trait::async_trait;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use stampede_core::AppError;
use stampede_core::clock::Clock;
use stampede_core::distribution_ports::DistributionStore;
use stampede_core::events::{DISTRIBUTION_COMPLETED, distribution_summary};
use stampede_domain::distribution::{DistributionTask, NotifyState};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// The HMAC key shared with receivers.
    pub secret: String,
    /// Attempts before giving up.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Per request.
    pub timeout: Duration,
    pub interval: Duration,
}

pub struct NotifyDistributions {
    pub store: Arc<dyn DistributionStore>,
    pub clock: Arc<dyn Clock>,
    pub http: reqwest::Client,
    pub config: NotifyConfig,
}

/// The HTTP client of callbacks: `http` and `https` (rustls with the system's trusted roots),
/// no redirects — a signed callback goes where the merchant said, nowhere else.
pub fn callback_client() -> Result<reqwest::Client, AppError> {
    // reqwest is built without a default TLS provider: install ring's once per process (a
    // second install reports "already installed", which is fine).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| AppError::Internal(Box::new(e)))
}

/// `sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>").
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Delay before attempt `attempt + 1` (attempt ≥ 1): base × 2^(attempt − 1), capped.
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl NotifyDistributions {
    pub fn new(
        store: Arc<dyn DistributionStore>,
        clock: Arc<dyn Clock>,
        config: NotifyConfig,
    ) -> Result<Self, AppError> {
        Ok(Self {
            store,
            clock,
            http: callback_client()?,
            config,
        })
    }

    async fn deliver(&self, t: &DistributionTask) -> Result<bool, AppError> {
        let Some(url) = t.notify_url.as_deref() else {
            return Ok(false);
        };
        let now = self.clock.now();
        let attempt = t.notify_attempts + 1;
        // Claim the attempt first: the CAS makes this node the only one sending it; the
        // claim's due time doubles as its timeout (a node dying mid-send is retried then).
        let claimed = self
            .store
            .update_notification(
                t.id,
                t.shop_id,
                t.notify_attempts,
                attempt,
                NotifyState::Pending,
                now.as_millisecond() + ms(self.config.timeout) * 2,
            )
            .await?;
        if !claimed {
            return Ok(false);
        }
        let body = distribution_summary(t).to_string();
        let ts = now.as_second();
        let sent = self
            .http
            .post(url)
            .timeout(self.config.timeout)
            .header("content-type", "application/json")
            .header("x-stampede-event", DISTRIBUTION_COMPLETED)
            .header(
                "x-stampede-delivery",
                format!("{DISTRIBUTION_COMPLETED}:{}", t.id),
            )
            .header("x-stampede-timestamp", ts.to_string())
            .header(
                "x-stampede-signature",
                signature(&self.config.secret, ts, &body),
            )
            .body(body)
            .send()
            .await;
        let ok = match &sent {
            Ok(r) if r.status().is_success() => true,
            Ok(r) => {
                tracing::warn!(distribution = %t.id, status = r.status().as_u16(), attempt, "notify_url answered an error");
                false
            }
            Err(e) => {
                tracing::warn!(distribution = %t.id, error = %e, attempt, "notify_url unreachable");
                false
            }
        };
        let (state, next) = if ok {
            (NotifyState::Delivered, 0)
        } else if attempt >= self.config.max_attempts {
            (NotifyState::GaveUp, 0)
        } else {
            let wait = backoff(self.config.base_backoff, self.config.max_backoff, attempt);
            (
                NotifyState::Pending,
                self.clock.now().as_millisecond() + ms(wait),
            )
        };
        metrics::counter!("stampede_distribution_notifications_total", "outcome" => state.as_str())
            .increment(1);
        self.store
            .update_notification(t.id, t.shop_id, attempt, attempt, state, next)
            .await?;
        Ok(true)
    }
}

#[async_trait]
impl Job for NotifyDistributions {
    fn name(&self) -> &'static str {
        "notify_distributions"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    fn batch(&self) -> usize {
        16
    }

    async fn run_once(&self) -> Result<usize, AppError> {
        let due = self.store.due_notifications(self.clock.now(), 16).await?;
        let mut sent = 0;
        for t in &due {
            if self.deliver(t).await? {
                sent += 1;
            }
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn https_callbacks_are_supported() {
        let client = callback_client().unwrap_or_else(|e| panic!("{e}"));
        // Nothing listens on port 9: the request must fail connecting, not because the
        // client cannot speak https.
        let err = match client.post("https://127.0.0.1:9/hook").send().await {
            Err(e) => e,
            Ok(r) => panic!("unexpected answer {}", r.status()),
        };
        assert!(err.is_connect(), "{err:?}");
        assert!(!err.is_builder(), "{err:?}");
    }

    #[test]
    fn backoff_doubles_then_caps() {
        let b = Duration::from_secs(1);
        let m = Duration::from_secs(60);
        assert_eq!(backoff(b, m, 1), Duration::from_secs(1));
        assert_eq!(backoff(b, m, 2), Duration::from_secs(2));
        assert_eq!(backoff(b, m, 4), Duration::from_secs(8));
        assert_eq!(backoff(b, m, 10), m);
        assert_eq!(backoff(b, m, 200), m);
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231-style check against an independent computation of the same construction.
        let s = signature("key", 1_700_000_000, "{\"a\":1}");
        assert!(s.starts_with("sha256="));
        assert_eq!(s.len(), "sha256=".len() + 64);
        assert_ne!(s, signature("other", 1_700_000_000, "{\"a\":1}"));
        assert_ne!(s, signature("key", 1_700_000_001, "{\"a\":1}"));
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog") is a published
        // test vector; split as "<ts>.<body>" cannot express it, so check the raw MAC.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap_or_else(|_| unreachable!());
        mac.update(b"The quick brown fox jumps over the lazy dog");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }
}
