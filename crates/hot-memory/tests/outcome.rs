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
use stampede_domain::coupon::{ClaimRefusal, Origin, UserCoupon, new_claimed_coupon};
use stampede_domain::ids::{CouponId, ShopId, TemplateId, UserId};
use stampede_domain::template::{Kind, Template, TemplateDraft};
use stampede_hot_memory::MemoryHotState;
use stampede_store_sqlite::{SqliteOptions, SqliteStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use tokio::sync::Notify;

/// What the next commit does besides committing.
#[derive(Default)]
struct Faults {
    /// Commit, then report a failure (an fsync error after the data reached the file).
    commit_then_fail: AtomicBool,
    /// Fail without committing.
    fail: AtomicBool,
    /// Reads of single coupons fail (the database cannot be read back).
    reads_fail: AtomicBool,
    /// The next commit signals `held`, waits for `release`, then fails without committing:
    /// a failing commit other claims can overlap.
    hold_then_fail: AtomicBool,
    held: Notify,
    release: Notify,
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
        if self.faults.hold_then_fail.swap(false, Ordering::SeqCst) {
            self.faults.held.notify_one();
            self.faults.release.notified().await;
            return Err(io());
        }
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

    async fn outbox_backlog(
        &self,
    ) -> Result<stampede_core::claim_ports::OutboxBacklog, StoreError> {
        self.inner.outbox_backlog().await
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

async fn setup(
    per_user_limit: i64,
) -> (
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
        per_user_limit: Some(per_user_limit),
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
    let (_dir, store, faults, hot, t) = setup(3).await;
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
    let (_dir, _store, faults, hot, t) = setup(3).await;
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
    let (_dir, store, faults, hot, t) = setup(3).await;
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
    assert_eq!(stored.user_seqs, vec![(c.user_id, 1)]);
}

#[tokio::test]
async fn an_unknown_outcome_that_never_landed_is_decided_afresh_by_the_retry() {
    let (_dir, _store, faults, hot, t) = setup(3).await;
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

fn seq_of(out: &ClaimOutcome) -> Option<u32> {
    match out {
        ClaimOutcome::Claimed(c) => Some(c.seq),
        _ => None,
    }
}

/// A failed claim gives back exactly the seq it took, not "the last one": with A (seq 1)
/// failing after B (seq 2) was reserved, the next claim must not take seq 2 again.
#[tokio::test]
async fn a_failed_claim_frees_its_own_seq_not_a_neighbours() {
    let (_dir, _store, faults, hot, t) = setup(2).await;
    let hot = Arc::new(hot);
    faults.hold_then_fail.store(true, Ordering::SeqCst);

    let a = {
        let (hot, t, c) = (hot.clone(), t.clone(), coupon(&t, 3));
        tokio::spawn(async move { hot.claim(&t, c, None, now()).await })
    };
    // A holds seq 1 and its commit is under way.
    faults.held.notified().await;
    let b = {
        let (hot, t, c) = (hot.clone(), t.clone(), coupon(&t, 3));
        tokio::spawn(async move { hot.claim(&t, c, None, now()).await })
    };
    // B has taken its seq (stock is taken after the seq) and waits for the writer.
    while hot.stock(&t).await.unwrap() != Some(8) {
        tokio::task::yield_now().await;
    }
    faults.release.notify_one();
    let a = a.await.unwrap();
    assert!(matches!(a, Err(StoreError::Backend(_))), "{a:?}");
    let b = b.await.unwrap().unwrap();
    let b_seq = seq_of(&b).expect("B claimed");

    let c = hot.claim(&t, coupon(&t, 3), None, now()).await;
    let c_seq = c.as_ref().ok().and_then(seq_of);
    assert!(
        c_seq.is_some() && c_seq != Some(b_seq),
        "C must claim a seq other than B's ({b_seq}): {c:?}"
    );
    let d = hot.claim(&t, coupon(&t, 3), None, now()).await.unwrap();
    assert_eq!(d, ClaimOutcome::Refused(ClaimRefusal::LimitReached));
    assert_eq!(hot.stock(&t).await.unwrap(), Some(8));
}

/// Rebuilt from the store, the hot state knows which seqs a user holds, gaps included.
#[tokio::test]
async fn a_rebuilt_state_fills_the_gap_in_a_users_seqs() {
    let (_dir, store, _faults, hot, t) = setup(3).await;
    let held: Vec<ClaimRecord> = [1, 3]
        .into_iter()
        .map(|seq| {
            let mut c = coupon(&t, 4);
            c.seq = seq;
            ClaimRecord {
                coupon: c,
                claim_key: None,
                traceparent: None,
            }
        })
        .collect();
    store.commit_claims(&held).await.unwrap();

    let out = hot.claim(&t, coupon(&t, 4), None, now()).await;
    assert_eq!(out.as_ref().ok().and_then(seq_of), Some(2), "{out:?}");
    let out = hot.claim(&t, coupon(&t, 4), None, now()).await.unwrap();
    assert_eq!(out, ClaimOutcome::Refused(ClaimRefusal::LimitReached));
}
