//! What only `MemoryHotState`'s distribution batches show, over a SQLite store in a temporary
//! directory (the shared behaviour is in `conformance.rs`): no stored answers, so nothing to
//! replay and `abandon_batch` gives the reservation back; templates read from its store; a
//! restart rebuilding exactly what was committed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use jiff::{SignedDuration, Timestamp};
use stampede_core::claim_ports::{
    ClaimOutcome, ClaimRecord, CouponStore, HotState, Reservation, RowReservation,
};
use stampede_core::distribution_ports::{
    BatchCommit, BatchCoupon, BatchOutcome, CreateDistribution, DistributionStore, row_key,
};
use stampede_core::ports::{CreateOutcome, TemplateStore};
use stampede_domain::audit::AuditEntry;
use stampede_domain::coupon::{ClaimRefusal, Origin, UserCoupon, new_claimed_coupon};
use stampede_domain::distribution::{
    DistributionStatus, DistributionTask, FailedRow, FileFormat, NotifyState, RowFailure,
};
use stampede_domain::ids::{CouponId, DistributionId, ShopId, TemplateId, UserId};
use stampede_domain::template::{Kind, Template, TemplateDraft};
use stampede_domain::time::to_ms;
use stampede_hot_memory::MemoryHotState;
use stampede_store_sqlite::{SqliteOptions, SqliteStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tempfile::TempDir;

/// The claim window opens here...
fn start() -> Timestamp {
    Timestamp::from_second(1_900_000_000).unwrap()
}

/// ...and closes (exclusive) ten days later.
fn end() -> Timestamp {
    start() + SignedDuration::from_hours(240)
}

/// A moment inside the window.
fn open_time() -> Timestamp {
    start() + SignedDuration::from_hours(1)
}

fn uid(raw: i64) -> UserId {
    UserId::new(raw).unwrap()
}

fn users(ids: impl IntoIterator<Item = i64>) -> Vec<UserId> {
    ids.into_iter().map(uid).collect()
}

fn task(n: i64) -> DistributionId {
    DistributionId::new(n).unwrap()
}

struct Env {
    _dir: TempDir,
    store: SqliteStore,
    hot: Arc<MemoryHotState>,
}

impl Env {
    async fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("stampede.db"), SqliteOptions::default())
            .await
            .unwrap();
        let hot = Arc::new(fresh_state(&store));
        Env {
            _dir: dir,
            store,
            hot,
        }
    }

    /// Stores a fixed-amount template with `stock` coupons, at most `limit` per user.
    async fn template(&self, id: i64, stock: i64, limit: i64) -> Template {
        let t = TemplateDraft {
            name: Some(format!("template {id}")),
            kind: Some(Kind::Fixed),
            amount_off: Some(500),
            stock_total: Some(stock),
            claim_start: Some(start()),
            claim_end: Some(end()),
            validity_hours: Some(24),
            per_user_limit: Some(limit),
            ..TemplateDraft::default()
        }
        .validate(
            TemplateId::new(id).unwrap(),
            ShopId::new(7).unwrap(),
            start() - SignedDuration::from_hours(100),
        )
        .unwrap();
        let out = self
            .store
            .create_template(&t, &AuditEntry::created(&t, "merchant:7"), None)
            .await
            .unwrap();
        assert!(matches!(out, CreateOutcome::Created), "{out:?}");
        t
    }

    async fn stock(&self, t: &Template) -> Option<i64> {
        self.hot.stock(t).await.unwrap()
    }

    async fn stored_stock(&self, t: &Template) -> i64 {
        self.store.get_template(t.id).await.unwrap().unwrap().stock
    }

    async fn claim(&self, t: &Template, user: i64, now: Timestamp) -> ClaimOutcome {
        claim(&self.hot, t, user, now).await
    }

    async fn reserve(
        &self,
        t: &Template,
        r: &Reservation<'_>,
        now: Timestamp,
    ) -> Vec<RowReservation> {
        self.hot.reserve_batch(t, r, now).await.unwrap().unwrap()
    }
}

fn fresh_state(store: &SqliteStore) -> MemoryHotState {
    MemoryHotState::new(Arc::new(store.clone()), Arc::new(store.clone()), 64)
}

static NEXT_COUPON: AtomicI64 = AtomicI64::new(1);

fn coupon(t: &Template, user: i64, origin: Origin, now: Timestamp) -> UserCoupon {
    let id = CouponId::new(NEXT_COUPON.fetch_add(1, Ordering::Relaxed)).unwrap();
    new_claimed_coupon(t, id, uid(user), 0, origin, now)
}

async fn claim(hot: &MemoryHotState, t: &Template, user: i64, now: Timestamp) -> ClaimOutcome {
    hot.claim(t, coupon(t, user, Origin::Claim, now), None, now)
        .await
        .unwrap()
}

fn batch(task_id: i64, first_row: u64, users: &[UserId]) -> Reservation<'_> {
    Reservation {
        task: task(task_id),
        first_row,
        users,
        replay_only: false,
    }
}

fn ok(seq: u32) -> RowReservation {
    RowReservation::Reserved { seq }
}

fn no(r: ClaimRefusal) -> RowReservation {
    RowReservation::Refused(r)
}

fn claimed_seq(o: &ClaimOutcome) -> Option<u32> {
    match o {
        ClaimOutcome::Claimed(c) => Some(c.seq),
        _ => None,
    }
}

/// This hot state reads templates from its store; Redis takes the caller's copy instead.
#[tokio::test]
async fn a_template_the_store_does_not_know_refuses_every_row() {
    let env = Env::new().await;
    let t = env.template(29, 100, 5).await;
    let ghost = Template {
        id: TemplateId::new(404).unwrap(),
        ..t
    };
    assert_eq!(
        env.reserve(&ghost, &batch(1, 1, &users([1, 2, 2])), open_time())
            .await,
        [no(ClaimRefusal::Ended); 3]
    );
    assert_eq!(env.stock(&ghost).await, None, "nothing loaded");
}

/// Nothing outlives the process here, so there is never a stored answer to give, not even
/// for the batch just reserved (Redis gives that one again).
#[tokio::test]
async fn replay_only_never_finds_an_answer() {
    let env = Env::new().await;
    let now = open_time();
    let t = env.template(30, 10, 1).await;
    let u = users([1, 2]);
    let replay = Reservation {
        replay_only: true,
        ..batch(1, 1, &u)
    };
    assert_eq!(env.reserve(&t, &batch(1, 1, &u), now).await, [ok(1), ok(1)]);
    assert_eq!(env.hot.reserve_batch(&t, &replay, now).await.unwrap(), None);
    // An empty batch reserved for real has no answer to replay either.
    assert_eq!(env.reserve(&t, &batch(1, 3, &[]), now).await, []);
    let empty = Reservation {
        replay_only: true,
        ..batch(1, 3, &[])
    };
    assert_eq!(env.hot.reserve_batch(&t, &empty, now).await.unwrap(), None);
    assert_eq!(env.stock(&t).await, Some(8));
}

/// A failed commit gives the reservation back here (Redis keeps it for the retry's replay).
#[tokio::test]
async fn an_abandoned_batch_gives_stock_and_user_slots_back() {
    let env = Env::new().await;
    let now = open_time();
    let t = env.template(31, 4, 2).await;
    assert_eq!(claimed_seq(&env.claim(&t, 3, now).await), Some(1));

    let u = users([1, 2, 1, 3, 4, 5]);
    let r = batch(1, 1, &u);
    let first = env.reserve(&t, &r, now).await;
    assert_eq!(
        first,
        [
            ok(1),
            ok(1),
            ok(2),
            no(ClaimRefusal::SoldOut),
            no(ClaimRefusal::SoldOut),
            no(ClaimRefusal::SoldOut)
        ]
    );
    assert_eq!(env.stock(&t).await, Some(0));

    // The commit failed: only what was reserved comes back, so the retry gets the same.
    env.hot.abandon_batch(&t, &r, &first).await.unwrap();
    assert_eq!(env.stock(&t).await, Some(3));
    assert_eq!(env.reserve(&t, &r, now).await, first);
    env.hot.abandon_batch(&t, &r, &first).await.unwrap();

    // A claim may take what came back in the meantime; user 3 keeps its earlier claim.
    assert_eq!(claimed_seq(&env.claim(&t, 1, now).await), Some(1));
    assert_eq!(claimed_seq(&env.claim(&t, 3, now).await), Some(2));
    assert_eq!(
        env.reserve(&t, &r, now).await,
        [
            ok(2),
            no(ClaimRefusal::SoldOut),
            no(ClaimRefusal::LimitReached),
            no(ClaimRefusal::LimitReached),
            no(ClaimRefusal::SoldOut),
            no(ClaimRefusal::SoldOut)
        ]
    );
    assert_eq!(env.stock(&t).await, Some(0));

    // A template that was never loaded: nothing to give back, and it stays unloaded.
    let other = env.template(32, 10, 1).await;
    env.hot
        .abandon_batch(&other, &batch(2, 1, &users([1])), &[ok(1)])
        .await
        .unwrap();
    assert_eq!(env.stock(&other).await, None);
    assert_eq!(
        env.reserve(&other, &batch(2, 1, &users([1])), now).await,
        [ok(1)]
    );
    assert_eq!(env.stock(&other).await, Some(9));
}

/// The runner's cycle against the real store: reserve, commit, return what the store refused;
/// the hot stock then equals the stored one, and a restart rebuilds the same state (Redis
/// keeps its own instead).
#[tokio::test]
async fn committed_batches_match_the_store_and_survive_a_restart() {
    let env = Env::new().await;
    let now = open_time();
    let t = env.template(35, 20, 2).await;
    let d = DistributionTask {
        id: task(500),
        template_id: t.id,
        shop_id: t.shop_id,
        name: "push".to_owned(),
        status: DistributionStatus::Pending,
        send_at: now,
        total_rows: 6,
        processed_rows: 0,
        succeeded: 0,
        failed: 0,
        created_at: now,
        started_at: None,
        finished_at: None,
        notify_url: None,
        failure_reason: None,
        cancel_requested: false,
        format: FileFormat::Csv,
        file_size: 10,
        batch_size: 6,
        created_by: "merchant:7".to_owned(),
        idempotency_key: None,
        request_hash: None,
        lease_owner: None,
        lease_until_ms: 0,
        notify_state: NotifyState::None,
        notify_attempts: 0,
        notify_next_at_ms: 0,
    };
    assert!(matches!(
        env.store.create_distribution(&d).await.unwrap(),
        CreateDistribution::Created
    ));
    env.store
        .acquire_distribution(d.id, d.shop_id, "r", now, to_ms(now) + 60_000)
        .await
        .unwrap()
        .unwrap();
    // User 2's first slot is taken behind the hot state's back (as if by a coupon it never
    // saw), so the store refuses that row.
    let mut stray = coupon(&t, 2, Origin::Claim, now);
    stray.seq = 1;
    env.store
        .commit_claims(&[ClaimRecord {
            coupon: stray,
            claim_key: None,
            traceparent: None,
        }])
        .await
        .unwrap();
    assert_eq!(env.stored_stock(&t).await, 19);
    assert!(matches!(
        env.claim(&t, 1, now).await,
        ClaimOutcome::Claimed(_)
    ));
    // The hot state loaded after the stray coupon: user 2 already counts one.
    let u = users([1, 2, 3, 3, 3, 4]);
    let r = batch(500, 0, &u);
    let answer = env.reserve(&t, &r, now).await;
    assert_eq!(
        answer,
        [
            ok(2),
            ok(2),
            ok(1),
            ok(2),
            no(ClaimRefusal::LimitReached),
            ok(1)
        ]
    );
    assert_eq!(env.stock(&t).await, Some(13));

    // User 4's slot is taken now, after the reservation: the store will refuse row 5.
    let mut late = coupon(&t, 4, Origin::Claim, now);
    late.seq = 1;
    env.store
        .commit_claims(&[ClaimRecord {
            coupon: late,
            claim_key: None,
            traceparent: None,
        }])
        .await
        .unwrap();
    assert_eq!(env.stored_stock(&t).await, 17);

    let mut coupons = Vec::new();
    let mut failures = Vec::new();
    for (row, (user, a)) in u.iter().zip(&answer).enumerate() {
        let row = row as u64;
        match a {
            RowReservation::Reserved { seq } => {
                let mut c = coupon(&t, user.get(), Origin::Distribution, now);
                c.seq = *seq;
                coupons.push(BatchCoupon {
                    row,
                    raw: user.to_string(),
                    record: ClaimRecord {
                        coupon: c,
                        claim_key: Some(row_key(d.id, row)),
                        traceparent: None,
                    },
                });
            }
            RowReservation::Refused(r) => failures.push(FailedRow {
                row,
                raw: user.to_string(),
                reason: RowFailure::from_refusal(*r, true),
            }),
        }
    }
    let commit = BatchCommit {
        task: d.id,
        shop_id: d.shop_id,
        template_id: t.id,
        owner: "r".to_owned(),
        first_row: 0,
        rows: 6,
        coupons,
        failures,
        lease_until_ms: to_ms(now) + 60_000,
    };
    assert_eq!(
        env.store.commit_batch(&commit).await.unwrap(),
        BatchOutcome::Applied {
            issued: 4,
            rejected: 1
        }
    );
    env.hot.return_stock(&t, d.id, 0, 1).await.unwrap();
    // The stored stock took the four coupons issued; the hot one gave the refused one back,
    // so it is the stored stock plus the late coupon, which went around the hot path.
    assert_eq!(env.stored_stock(&t).await, 13);
    assert_eq!(env.stock(&t).await, Some(14));

    // A restart rebuilds from the store: the stock, and counts that include the batch.
    let restarted = fresh_state(&env.store);
    assert_eq!(claimed_seq(&claim(&restarted, &t, 5, now).await), Some(1));
    assert_eq!(restarted.stock(&t).await.unwrap(), Some(12));
    let again = users([1, 2, 3, 4, 5]);
    assert_eq!(
        restarted
            .reserve_batch(&t, &batch(500, 6, &again), now)
            .await
            .unwrap()
            .unwrap(),
        [
            no(ClaimRefusal::LimitReached),
            no(ClaimRefusal::LimitReached),
            no(ClaimRefusal::LimitReached),
            ok(2),
            ok(2)
        ]
    );
}
