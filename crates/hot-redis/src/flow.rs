//! The fleet-wide `RateLimiter`: GCRA buckets in Redis, every check of a request decided by
//! one atomic script (`lua/flow.lua`), so limits hold across nodes and a refused request
//! takes nothing from the buckets that had room.
//!
//! Keys: `P:{flow}:<key>` (`user:U`, `ip:A`, `tpl:T`, `route:R`), one string each holding the
//! bucket's theoretical arrival time in microseconds, expiring once the bucket is full again.
//! They share the hash tag `{flow}` so one script may touch several (one slot, one shard).
//!
//! **When Redis is unreachable** (an error, or no answer within `deadline`, ~20 ms) the check
//! falls back to the node's in-process limiter, and Redis is not asked again for `pause`
//! (1 s), so a dead Redis costs one deadline per second, not one per request. The fallback
//! enforces each rule divided by `fallback_nodes` (the expected number of nodes): the fleet
//! as a whole then stays near the configured limit, which is what a limit protecting a
//! downstream is for. With `fallback_nodes = 1` each node enforces the whole rule (a user
//! pinned to one node gets the same limit; the fleet may admit up to N× in total).

use crate::Connection;
use async_trait::async_trait;
use redis::Value;
use stampede_core::flow::{Check, Decision, RateLimiter};
use stampede_core::ports::StoreError;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long Redis is left alone after it failed a check.
const PAUSE: Duration = Duration::from_secs(1);

pub struct RedisRateLimiter {
    conn: Connection,
    prefix: String,
    deadline: Duration,
    fallback: Arc<dyn RateLimiter>,
    fallback_nodes: u32,
    /// Milliseconds since `epoch` before which Redis is not asked (0: ask).
    skip_until_ms: AtomicU64,
    epoch: Instant,
}

impl RedisRateLimiter {
    pub fn new(
        conn: impl Into<Connection>,
        prefix: &str,
        deadline: Duration,
        fallback: Arc<dyn RateLimiter>,
        fallback_nodes: u32,
    ) -> Self {
        Self {
            conn: conn.into(),
            prefix: format!("{prefix}:{{flow}}:"),
            deadline,
            fallback,
            fallback_nodes: fallback_nodes.max(1),
            skip_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn ask_redis(&self, checks: &[Check]) -> Result<Decision, StoreError> {
        let mut inv = crate::scripts::FLOW.prepare_invoke();
        let mut key = String::with_capacity(self.prefix.len() + 32);
        for c in checks {
            key.clear();
            key.push_str(&self.prefix);
            let _ = write!(key, "{}", c.key);
            let interval_us = 1_000_000 / u64::from(c.rate.per_second.max(1));
            inv.key(key.as_str())
                .arg(interval_us.max(1))
                .arg(c.rate.burst.max(1));
        }
        let mut conn = self.conn.clone();
        let v: Value = inv.invoke_async(&mut conn).await.map_err(crate::backend)?;
        parse(&v)
    }

    async fn local(&self, checks: &[Check]) -> Result<Decision, StoreError> {
        let shared: Vec<Check> = checks
            .iter()
            .map(|c| Check {
                key: c.key,
                rate: c.rate.per_node(self.fallback_nodes),
            })
            .collect();
        self.fallback.check(&shared).await
    }
}

fn parse(v: &Value) -> Result<Decision, StoreError> {
    let bad = || crate::backend_msg(format!("flow script answered {v:?}"));
    let Value::Array(items) = v else {
        return Err(bad());
    };
    let (Some(Value::Int(index)), Some(Value::Int(us))) = (items.first(), items.get(1)) else {
        return Err(bad());
    };
    if *index == 0 {
        return Ok(Decision::Allowed);
    }
    Ok(Decision::Limited {
        index: usize::try_from(*index - 1).map_err(|_| bad())?,
        retry_after: Duration::from_micros(u64::try_from(*us).unwrap_or(0)),
    })
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, checks: &[Check]) -> Result<Decision, StoreError> {
        if checks.is_empty() {
            return Ok(Decision::Allowed);
        }
        if self.now_ms() < self.skip_until_ms.load(Ordering::Relaxed) {
            return self.local(checks).await;
        }
        let failure = match tokio::time::timeout(self.deadline, self.ask_redis(checks)).await {
            Ok(Ok(d)) => {
                if self.skip_until_ms.load(Ordering::Relaxed) != 0 {
                    self.skip_until_ms.store(0, Ordering::Relaxed);
                    tracing::info!("flow control: Redis answers again, limiting fleet-wide");
                }
                return Ok(d);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", self.deadline.as_millis()),
        };
        let until = self.now_ms() + u64::try_from(PAUSE.as_millis()).unwrap_or(1_000);
        if self.skip_until_ms.swap(until, Ordering::Relaxed) == 0 {
            tracing::warn!(error = %failure, "flow control: Redis unreachable, limiting per node");
        }
        self.local(checks).await
    }
}
