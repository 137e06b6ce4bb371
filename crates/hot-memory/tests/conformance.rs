//! `MemoryHotState` against the hot-state conformance suite (`stampede-conformance`), each
//! scenario over a SQLite store of its own: the system of record it loads from and commits to;
//! once with the group commit, once with the claim journal (`journaled`).
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

/// The same suite with claims acknowledged from the claim journal (the embedded default):
/// SQLite is applied behind, and a restart replays the journal into it.
mod journaled {
    use super::*;
    use stampede_core::claim_ports::ClaimJournalStore;
    use stampede_core::ports::StoreError;
    use stampede_domain::ids::CouponId;
    use stampede_hot_memory::{ClaimJournal, JournalOptions};
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// The journal's target, noting the claims applied (a replayed batch is noted again; the
    /// map keeps one entry per coupon).
    struct ObservedJournal {
        inner: Arc<SqliteStore>,
        applied: Mutex<BTreeMap<CouponId, ClaimRecord>>,
    }

    #[async_trait]
    impl ClaimJournalStore for ObservedJournal {
        async fn journal_applied(&self) -> Result<u64, StoreError> {
            self.inner.journal_applied().await
        }
        async fn apply_journaled(
            &self,
            claims: &[ClaimRecord],
            through: u64,
        ) -> Result<(), StoreError> {
            self.inner.apply_journaled(claims, through).await?;
            let mut applied = self.applied.lock().unwrap();
            for c in claims {
                applied.insert(c.coupon.id, c.clone());
            }
            Ok(())
        }
    }

    struct Journaled {
        dir: TempDir,
        store: Arc<SqliteStore>,
        coupons: Arc<ObservedCoupons>,
        target: Arc<ObservedJournal>,
        /// The journal of the current "process" (replaced by a restart).
        journal: Mutex<Arc<ClaimJournal>>,
        hot: Arc<MemoryHotState>,
    }

    impl Journaled {
        async fn start(
            dir: &TempDir,
            store: &Arc<SqliteStore>,
            coupons: &Arc<ObservedCoupons>,
            target: &Arc<ObservedJournal>,
        ) -> (Arc<ClaimJournal>, Arc<MemoryHotState>) {
            let journal = ClaimJournal::open(
                target.clone(),
                JournalOptions::new(dir.path().join("claim-journal")),
            )
            .await
            .expect("open the journal");
            let journal = Arc::new(journal);
            let hot = MemoryHotState::with_journal(store.clone(), coupons.clone(), journal.clone());
            (journal, Arc::new(hot))
        }
    }

    #[async_trait]
    impl HotFixture for Journaled {
        fn store(&self) -> Arc<dyn SystemOfRecord> {
            self.store.clone()
        }

        fn hot(&self) -> Arc<dyn HotState> {
            self.hot.clone()
        }

        async fn restart(&self) -> Arc<dyn HotState> {
            // Not waiting for the old applier: the new journal replays what it left.
            let (journal, hot) =
                Self::start(&self.dir, &self.store, &self.coupons, &self.target).await;
            *self.journal.lock().unwrap() = journal;
            hot
        }

        fn loads(&self) -> u64 {
            self.coupons.loads()
        }

        async fn durable_claims(&self, t: &Template) -> Vec<ClaimRecord> {
            // Acknowledged means journaled; once applied, the claims are in SQLite.
            let journal = self.journal.lock().unwrap().clone();
            journal.wait_applied().await;
            let applied = self.target.applied.lock().unwrap();
            applied
                .values()
                .filter(|r| r.coupon.template_id == t.id)
                .cloned()
                .collect()
        }
    }

    async fn run(scenario: impl AsyncFnOnce(&dyn HotFixture)) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("stampede.db"), SqliteOptions::default())
            .await
            .expect("open the store");
        let store = Arc::new(store);
        let coupons = Arc::new(ObservedCoupons::new(store.clone()));
        let target = Arc::new(ObservedJournal {
            inner: store.clone(),
            applied: Mutex::new(BTreeMap::new()),
        });
        let (journal, hot) = Journaled::start(&dir, &store, &coupons, &target).await;
        let fixture = Journaled {
            dir,
            store,
            coupons,
            target,
            journal: Mutex::new(journal),
            hot,
        };
        scenario(&fixture).await;
    }

    stampede_conformance::hot_state_suite!(run);
}
