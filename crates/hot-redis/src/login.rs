//! [`LoginAttempts`] in Redis (distributed mode), so failed-login limits hold across nodes:
//! one hash per key (`P:login:<key>`: `f` failures, `u` lockout end in epoch ms), counted and
//! locked by one script so concurrent failures on several nodes are each counted once.

use crate::{Connection, backend};
use async_trait::async_trait;
use redis::Script;
use stampede_core::login::{LockoutPolicy, LoginAttempts};
use stampede_core::ports::StoreError;
use std::sync::LazyLock;

/// KEYS[1] the key's hash. ARGV: now ms, free failures, initial lockout ms, max lockout ms,
/// retention ms. Reply: {failures, lockout end ms or 0}. The doubling matches
/// `LockoutPolicy::lockout_after`.
static FAILURE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('HINCRBY', KEYS[1], 'f', 1)
local now = tonumber(ARGV[1])
local over = n - tonumber(ARGV[2]) - 1
local untilms = 0
if over >= 0 then
  if over > 40 then over = 40 end
  local d = tonumber(ARGV[3]) * (2 ^ over)
  local cap = tonumber(ARGV[4])
  if d > cap then d = cap end
  untilms = now + d
  redis.call('HSET', KEYS[1], 'u', string.format('%d', untilms))
end
local keep = tonumber(ARGV[5])
if untilms - now > keep then keep = untilms - now end
redis.call('PEXPIRE', KEYS[1], keep)
return {n, untilms}
",
    )
});

#[derive(Clone)]
pub struct RedisLoginAttempts {
    conn: Connection,
    prefix: String,
}

impl std::fmt::Debug for RedisLoginAttempts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLoginAttempts")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisLoginAttempts {
    pub fn new(conn: impl Into<Connection>, prefix: &str) -> Self {
        Self {
            conn: conn.into(),
            prefix: prefix.to_owned(),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}:login:{key}", self.prefix)
    }
}

#[async_trait]
impl LoginAttempts for RedisLoginAttempts {
    async fn locked_until(&self, key: &str, now_ms: i64) -> Result<Option<i64>, StoreError> {
        let mut conn = self.conn.clone();
        let until: Option<i64> = redis::cmd("HGET")
            .arg(self.key(key))
            .arg("u")
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(until.filter(|u| *u > now_ms))
    }

    async fn record_failure(
        &self,
        key: &str,
        now_ms: i64,
        policy: &LockoutPolicy,
    ) -> Result<(u32, Option<i64>), StoreError> {
        let mut conn = self.conn.clone();
        let (n, until): (i64, i64) = FAILURE
            .key(self.key(key))
            .arg(now_ms)
            .arg(policy.free_failures)
            .arg(policy.initial_lockout_ms)
            .arg(policy.max_lockout_ms)
            .arg(policy.retention_ms())
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        Ok((n, (until > 0).then_some(until)))
    }

    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("DEL")
            .arg(self.key(key))
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(())
    }
}
