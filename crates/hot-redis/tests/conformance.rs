//! `RedisHotState` against the hot-state conformance suite (`stampede-conformance`): a real
//! Redis under a random key prefix per scenario, loading from a SQLite store of its own; once
//! on the single Redis, once on a Redis Cluster (`STAMPEDE_TEST_REDIS_CLUSTER`, the seeds of
//! the private 3-master cluster `scripts/redis-cluster.sh` starts for the test command).
//!
//! SQLite stands in for MySQL as the system of record: the hot state only reads it through
//! `CouponStore::claim_state`, whose contract both stores share, and a real store keeps the
//! seeded counts, keys and stock consistent with each other, which a canned fake does not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use async_trait::async_trait;
use common::{FakeLog, TestPrefix, redis_cluster, redis_url};
use stampede_conformance::SystemOfRecord;
use stampede_conformance::hot_state::{HotFixture, ObservedCoupons};
use stampede_core::claim_ports::{ClaimRecord, HotState};
use stampede_domain::template::Template;
use stampede_hot_redis::{Persister, RedisHotState, RedisTopology};
use stampede_store_sqlite::{SqliteOptions, SqliteStore};
use std::sync::Arc;
use tempfile::TempDir;

struct Redis {
    topology: RedisTopology,
    prefix: TestPrefix,
    _dir: TempDir,
    store: Arc<SqliteStore>,
    coupons: Arc<ObservedCoupons>,
    hot: Arc<RedisHotState>,
}

/// A node's hot state on the shared keys under `prefix`.
async fn node(
    topology: &RedisTopology,
    prefix: &TestPrefix,
    coupons: &Arc<ObservedCoupons>,
) -> Arc<RedisHotState> {
    let conn = stampede_hot_redis::connect_bare(topology)
        .await
        .expect("redis reachable");
    Arc::new(RedisHotState::from_manager(
        conn,
        &prefix.0,
        coupons.clone(),
    ))
}

#[async_trait]
impl HotFixture for Redis {
    fn store(&self) -> Arc<dyn SystemOfRecord> {
        self.store.clone()
    }

    fn hot(&self) -> Arc<dyn HotState> {
        self.hot.clone()
    }

    async fn restart(&self) -> Arc<dyn HotState> {
        node(&self.topology, &self.prefix, &self.coupons).await
    }

    fn loads(&self) -> u64 {
        self.coupons.loads()
    }

    async fn durable_claims(&self, t: &Template) -> Vec<ClaimRecord> {
        // The claim log, read as a persister reads it (nothing applied yet: all of it).
        let reader = Persister::new(
            self.hot.connection(),
            &self.prefix.0,
            Arc::new(FakeLog::default()),
            "conformance-reader",
            1_000_000,
        );
        let batch = reader.read_batch(t.id).await.expect("read the claim log");
        batch.map(|b| b.records).unwrap_or_default()
    }
}

async fn run(scenario: impl AsyncFnOnce(&dyn HotFixture)) {
    run_on(RedisTopology::Single(redis_url()), scenario).await;
}

async fn run_on_cluster(scenario: impl AsyncFnOnce(&dyn HotFixture)) {
    run_on(RedisTopology::Cluster(redis_cluster()), scenario).await;
}

async fn run_on(topology: RedisTopology, scenario: impl AsyncFnOnce(&dyn HotFixture)) {
    let prefix = TestPrefix::new();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("stampede.db"), SqliteOptions::default())
        .await
        .expect("open the store");
    let store = Arc::new(store);
    let coupons = Arc::new(ObservedCoupons::new(store.clone()));
    let hot = node(&topology, &prefix, &coupons).await;
    let fixture = Redis {
        topology,
        prefix,
        _dir: dir,
        store,
        coupons,
        hot,
    };
    scenario(&fixture).await;
}

stampede_conformance::hot_state_suite!(run);

mod cluster {
    use super::*;
    stampede_conformance::hot_state_suite!(run_on_cluster);
}
