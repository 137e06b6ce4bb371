//! Embedded claims whose group commit reports failure: the claim is read back from SQLite
//! before answering. Stored → claimed (never a plain failure); not stored → nothing taken;
//! unreadable → `OutcomeUnknown`, stock kept taken, and the retry with the same key learns
//! the outcome (the same coupon, once).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use stampede_core::claim_ports::{
    ClaimOutcome, ClaimRecord, ClaimState, CouponQuery, CouponStore, HotState, OutboxEvent,
};
use stampede_core::ports::{CreateOutcome, Dependency, StoreError, TemplateStore};
use stampede_domain::audit::AuditEntry;
use stampede_domain::coupon::{Origin, UserCoupon, new_claimed_coupon};
use stampede_domain::ids::{CouponId, ShopId, TemplateId, UserId};
use stampede_domain::template::{Kind, Template, TemplateDraft};
use stampede_hot_memory::MemoryHotState;
use stampede_store_sqlite::{SqliteOptions, SqliteStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// What the next commit does besides committing.
#[derive(Default)]
struct Faults {
    /// Commit, then report a failure (an fsync error after the data reached the file).
    commit_then_fail: AtomicBool,
    /// Fail without committing.
    fail: AtomicBool,
    /// Reads of single coupons fail (the database cannot be read back).
    reads_fail: AtomicBool,
}

struct Faulty {
    inner: Arc<SqliteStore>,
    faults: Arc<Faults>,
}

fn io() -> StoreError {
    StoreError::Backend("disk I/O error".into())
}

#[async_trait]
impl CouponStore for Faulty {
    async fn commit_claims(&self, claims: &[ClaimRecord]) -> Result<(), StoreError> {
        if self.faults.fail.load(Ordering::SeqCst) {
            return Err(io());
        }
        self.inner.commit_claims(claims).await?;
        if self.faults.commit_then_fail.load(Ordering::SeqCst) {
            return Err(io());
        }
        Ok(())
    }
    async fn claim_state(&self, t: TemplateId) -> Result<ClaimState, StoreError> {
        self.inner.claim_state(t).await
    }
    async fn get_coupon(
        &self,
        user: UserId,
        id: CouponId,
    ) -> Result<Option<UserCoupon>, StoreError> {
        if self.faults.reads_fail.load(Ordering::SeqCst) {
            return Err(io());
        }
        self.inner.get_coupon(user, id).await
    }
    async fn list_coupons(&self, q: &CouponQuery) -> Result<Vec<UserCoupon>, StoreError> {
        self.inner.list_coupons(q).await
    }
    async fn outbox_events(&self, kind: &str, limit: u32) -> Result<Vec<OutboxEvent>, StoreError> {
        self.inner.outbox_events(kind, limit).await
    }
}

fn start() -> Timestamp {
    Timestamp::from_second(1_900_000_000).unwrap()
}

static NEXT: AtomicI64 = AtomicI64::new(5_000);

fn coupon(t: &Template, user: i64) -> UserCoupon {
    let id = CouponId::new(NEXT.fetch_add(1, Ordering::Relaxed)).unwrap();
    new_claimed_coupon(
        t,
        id,
        UserId::new(user).unwrap(),
        0,
        Origin::Claim,
        start() + SignedDuration::from_mins(1),
    )
}

async fn setup() -> (
    tempfile::TempDir,
    Arc<SqliteStore>,
    Arc<Faults>,
    MemoryHotState,
    Template,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("stampede.db"), SqliteOptions::default())
            .await
            .unwrap(),
    );
    let t = TemplateDraft {
        name: Some("t".into()),
        kind: Some(Kind::Fixed),
        amount_off: Some(500),
        stock_total: Some(10),
        claim_start: Some(start()),
        claim_end: Some(start() + SignedDuration::from_hours(24)),
        validity_hours: Some(24),
        per_user_limit: Some(3),
        ..TemplateDraft::default()
    }
    .validate(
        TemplateId::new(1).unwrap(),
        ShopId::new(7).unwrap(),
        start() - SignedDuration::from_hours(1),
    )
    .unwrap();
    let out = store
        .create_template(&t, &AuditEntry::created(&t, "merchant:7"), None)
        .await
        .unwrap();
    assert!(matches!(out, CreateOutcome::Created));
    let faults = Arc::new(Faults::default());
    let coupons = Arc::new(Faulty {
        inner: store.clone(),
        faults: faults.clone(),
    });
    let hot = MemoryHotState::new(store.clone(), coupons, 16);
    (dir, store, faults, hot, t)
}

fn now() -> Timestamp {
    start() + SignedDuration::from_mins(1)
}

#[tokio::test]
async fn a_commit_that_reported_failure_but_landed_is_a_claim() {
    let (_dir, store, faults, hot, t) = setup().await;
    faults.commit_then_fail.store(true, Ordering::SeqCst);
    let c = coupon(&t, 1);
    let out = hot.claim(&t, c.clone(), Some("k"), now()).await.unwrap();
    assert!(
        matches!(out, ClaimOutcome::Claimed(ref got) if got.id == c.id),
        "{out:?}"
    );
    assert!(store.get_coupon(c.user_id, c.id).await.unwrap().is_some());
    assert_eq!(hot.stock(&t).await.unwrap(), Some(9));
}

#[tokio::test]
async fn a_commit_that_failed_takes_nothing() {
    let (_dir, _store, faults, hot, t) = setup().await;
    faults.fail.store(true, Ordering::SeqCst);
    let err = hot
        .claim(&t, coupon(&t, 1), Some("k"), now())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert_eq!(hot.stock(&t).await.unwrap(), Some(10));
}

#[tokio::test]
async fn an_unreadable_outcome_is_unknown_until_the_retry_with_its_key() {
    let (_dir, store, faults, hot, t) = setup().await;
    faults.commit_then_fail.store(true, Ordering::SeqCst);
    faults.reads_fail.store(true, Ordering::SeqCst);
    let c = coupon(&t, 1);
    let err = hot
        .claim(&t, c.clone(), Some("k"), now())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::OutcomeUnknown {
                dependency: Dependency::Database,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        hot.stock(&t).await.unwrap(),
        Some(9),
        "kept taken: never oversold"
    );
    // Still unreadable: the retry cannot tell either.
    let again = hot.claim(&t, coupon(&t, 1), Some("k"), now()).await;
    assert!(
        matches!(again, Err(StoreError::OutcomeUnknown { .. })),
        "{again:?}"
    );
    // Readable again: the retry learns it happened and gets the same coupon, once.
    faults.reads_fail.store(false, Ordering::SeqCst);
    faults.commit_then_fail.store(false, Ordering::SeqCst);
    assert_eq!(
        hot.find_claim(&t, c.user_id, "k")
            .await
            .unwrap()
            .map(|x| x.id),
        Some(c.id)
    );
    let out = hot
        .claim(&t, coupon(&t, 1), Some("k"), now())
        .await
        .unwrap();
    assert!(
        matches!(out, ClaimOutcome::Replayed(ref got) if got.id == c.id),
        "{out:?}"
    );
    assert_eq!(hot.stock(&t).await.unwrap(), Some(9));
    let stored = store.claim_state(t.id).await.unwrap();
    assert_eq!(stored.user_counts, vec![(c.user_id, 1)]);
}

#[tokio::test]
async fn an_unknown_outcome_that_never_landed_is_decided_afresh_by_the_retry() {
    let (_dir, _store, faults, hot, t) = setup().await;
    faults.fail.store(true, Ordering::SeqCst);
    faults.reads_fail.store(true, Ordering::SeqCst);
    let first = coupon(&t, 2);
    let err = hot
        .claim(&t, first.clone(), Some("k2"), now())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::OutcomeUnknown { .. }), "{err:?}");
    faults.fail.store(false, Ordering::SeqCst);
    faults.reads_fail.store(false, Ordering::SeqCst);
    let second = coupon(&t, 2);
    let out = hot
        .claim(&t, second.clone(), Some("k2"), now())
        .await
        .unwrap();
    assert!(
        matches!(out, ClaimOutcome::Claimed(ref got) if got.id == second.id),
        "{out:?}"
    );
    assert_eq!(
        hot.stock(&t).await.unwrap(),
        Some(9),
        "the first reservation went back"
    );
}
