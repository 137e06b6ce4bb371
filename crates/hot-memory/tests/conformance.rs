//! `MemoryHotState` against the hot-state conformance suite (`stampede-conformance`), each
//! scenario over a SQLite store of its own: the system of record it loads from and commits to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use stampede_conformance::SystemOfRecord;
use stampede_conformance::hot_state::{HotFixture, ObservedCoupons};
use stampede_core::claim_ports::{ClaimRecord, HotState};
use stampede_domain::template::Template;
use stampede_hot_memory::MemoryHotState;
use stampede_store_sqlite::{SqliteOptions, SqliteStore};
use std::sync::Arc;
use tempfile::TempDir;

struct Memory {
    _dir: TempDir,
    store: Arc<SqliteStore>,
    coupons: Arc<ObservedCoupons>,
    hot: Arc<MemoryHotState>,
}

impl Memory {
    /// A process's hot state: empty, rebuilt from the store as templates are used.
    fn start(store: &Arc<SqliteStore>, coupons: &Arc<ObservedCoupons>) -> Arc<MemoryHotState> {
        Arc::new(MemoryHotState::new(store.clone(), coupons.clone(), 64))
    }
}

#[async_trait]
impl HotFixture for Memory {
    fn store(&self) -> Arc<dyn SystemOfRecord> {
        self.store.clone()
    }

    fn hot(&self) -> Arc<dyn HotState> {
        self.hot.clone()
    }

    async fn restart(&self) -> Arc<dyn HotState> {
        Self::start(&self.store, &self.coupons)
    }

    fn loads(&self) -> u64 {
        self.coupons.loads()
    }

    async fn durable_claims(&self, t: &Template) -> Vec<ClaimRecord> {
        // A claim is answered once its group commit went through this store.
        self.coupons.committed(t.id)
    }
}

async fn run(scenario: impl AsyncFnOnce(&dyn HotFixture)) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("stampede.db"), SqliteOptions::default())
        .await
        .expect("open the store");
    let store = Arc::new(store);
    let coupons = Arc::new(ObservedCoupons::new(store.clone()));
    let hot = Memory::start(&store, &coupons);
    let fixture = Memory {
        _dir: dir,
        store,
        coupons,
        hot,
    };
    scenario(&fixture).await;
}

stampede_conformance::hot_state_suite!(run);
