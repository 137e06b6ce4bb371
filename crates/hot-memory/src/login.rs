//! In-process [`LoginAttempts`] (embedded mode, or a single node): failures per key in a
//! mutex-guarded map, pruned of records past their retention once it grows large, so a
//! stream of random usernames cannot grow it without bound.

use async_trait::async_trait;
use stampede_core::login::{LockoutPolicy, LoginAttempts};
use stampede_core::ports::StoreError;
use std::collections::HashMap;
use std::sync::Mutex;

/// Records kept before expired ones are pruned.
const PRUNE_AT: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    locked_until_ms: i64,
    /// The record is forgotten after this instant (epoch ms).
    expires_ms: i64,
}

#[derive(Debug, Default)]
pub struct MemoryLoginAttempts {
    records: Mutex<HashMap<String, Record>>,
}

impl MemoryLoginAttempts {
    pub fn new() -> Self {
        Self::default()
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<String, Record>> {
        // Each section is one map operation: a poisoned lock still holds consistent data.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl LoginAttempts for MemoryLoginAttempts {
    async fn locked_until(&self, key: &str, now_ms: i64) -> Result<Option<i64>, StoreError> {
        Ok(self
            .records()
            .get(key)
            .filter(|r| r.expires_ms > now_ms && r.locked_until_ms > now_ms)
            .map(|r| r.locked_until_ms))
    }

    async fn record_failure(
        &self,
        key: &str,
        now_ms: i64,
        policy: &LockoutPolicy,
    ) -> Result<(u32, Option<i64>), StoreError> {
        let mut records = self.records();
        if records.len() >= PRUNE_AT {
            records.retain(|_, r| r.expires_ms > now_ms);
        }
        let r = records.entry(key.to_owned()).or_insert(Record {
            failures: 0,
            locked_until_ms: 0,
            expires_ms: 0,
        });
        if r.expires_ms <= now_ms {
            *r = Record {
                failures: 0,
                locked_until_ms: 0,
                expires_ms: 0,
            };
        }
        r.failures = r.failures.saturating_add(1);
        let lockout = policy.lockout_after(r.failures).map(|ms| {
            let until = now_ms.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX));
            r.locked_until_ms = until;
            until
        });
        r.expires_ms = now_ms
            .saturating_add(i64::try_from(policy.retention_ms()).unwrap_or(i64::MAX))
            .max(r.locked_until_ms);
        Ok((r.failures, lockout))
    }

    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        self.records().remove(key);
        Ok(())
    }
}
