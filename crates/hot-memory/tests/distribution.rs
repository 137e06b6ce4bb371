//! Distribution batches on `MemoryHotState` over a SQLite store in a temporary directory:
//! reservation order and refusals, status and window, replay-only, giving reservations and
//! refused stock back, a restart rebuilding what was committed, and races with claims.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use jiff::{SignedDuration, Timestamp};
use stampede_core::claim_ports::{
    ClaimOutcome, ClaimRecord, CouponStore, HotState, Reservation, RowReservation,
};
use stampede_core::distribution_ports::{
    BatchCommit, BatchCoupon, BatchOutcome, CreateDistribution, DistributionStore, row_key,
};
use stampede_core::ports::{ChangeOutcome, CreateOutcome, TemplateStore};
use stampede_domain::audit::AuditEntry;
use stampede_domain::coupon::{ClaimRefusal, Origin, UserCoupon, new_claimed_coupon};
use stampede_domain::distribution::{
    DistributionStatus, DistributionTask, FailedRow, FileFormat, NotifyState, RowFailure,
};
use stampede_domain::ids::{CouponId, DistributionId, ShopId, TemplateId, UserId};
use stampede_domain::template::{Kind, Template, TemplateChange, TemplateDraft};
use stampede_domain::time::to_ms;
use stampede_hot_memory::MemoryHotState;
use stampede_store_sqlite::{SqliteOptions, SqliteStore};
use std::collections::HashMap;
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

fn ms(n: i64) -> SignedDuration {
    SignedDuration::from_millis(n)
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

    /// Applies `change` in the store and tells the hot state, as the back-office does.
    async fn change(&self, t: &Template, change: TemplateChange, at: Timestamp) -> Template {
        let changed = match self
            .store
            .change_template(t.id, change, "admin:1", at)
            .await
            .unwrap()
        {
            ChangeOutcome::Changed(c) => c,
            other => panic!("{other:?}"),
        };
        self.hot.template_changed(&changed).await.unwrap();
        changed
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

fn reserved(rows: &[RowReservation]) -> usize {
    rows.iter()
        .filter(|r| matches!(r, RowReservation::Reserved { .. }))
        .count()
}

fn claimed_seq(o: &ClaimOutcome) -> Option<u32> {
    match o {
        ClaimOutcome::Claimed(c) => Some(c.seq),
        _ => None,
    }
}

#[tokio::test]
async fn reserves_in_file_order_with_seqs_and_limits() {
    let env = Env::new().await;
    let now = open_time();
    let t = env.template(21, 100, 2).await;
    // User 1 is at the limit from earlier claims.
    for seq in 1..=2 {
        assert_eq!(claimed_seq(&env.claim(&t, 1, now).await), Some(seq));
    }
    assert_eq!(env.stock(&t).await, Some(98));

    let u = users([1, 2, 3, 2, 2, 4, 1]);
    assert_eq!(
        env.reserve(&t, &batch(1, 1, &u), now).await,
        [
            no(ClaimRefusal::LimitReached),
            ok(1),
            ok(1),
            ok(2),
            no(ClaimRefusal::LimitReached), // user 2 repeated beyond the limit
            ok(1),
            no(ClaimRefusal::LimitReached),
        ]
    );
    assert_eq!(env.stock(&t).await, Some(94));

    // Claims see the batch's counts: seqs continue, limits hold.
    assert_eq!(claimed_seq(&env.claim(&t, 3, now).await), Some(2));
    assert_eq!(
        env.claim(&t, 2, now).await,
        ClaimOutcome::Refused(ClaimRefusal::LimitReached)
    );
    assert_eq!(env.stock(&t).await, Some(93));
    // A reservation writes nothing to the store (its runner commits the batch).
    assert_eq!(env.stored_stock(&t).await, 97);

    // An empty batch reserves nothing.
    assert_eq!(env.reserve(&t, &batch(1, 8, &[]), now).await, []);
    assert_eq!(env.stock(&t).await, Some(93));
}

#[tokio::test]
async fn a_state_loaded_from_the_store_counts_coupons_of_any_origin() {
    let env = Env::new().await;
    let now = open_time();
    let t = env.template(22, 50, 2).await;
    // Stored before the hot state ever saw the template: user 5 holds two (a claim and a
    // distribution coupon), user 6 one distribution coupon.
    let mut dist5 = coupon(&t, 5, Origin::Distribution, now);
    dist5.seq = 2;
    let mut dist6 = coupon(&t, 6, Origin::Distribution, now);
    dist6.seq = 1;
    let mut claim5 = coupon(&t, 5, Origin::Claim, now);
    claim5.seq = 1;
    env.store
        .commit_claims(&[
            ClaimRecord {
                coupon: claim5,
                claim_key: Some("k".to_owned()),
            },
            ClaimRecord {
                coupon: dist5,
                claim_key: Some(row_key(task(1), 2)),
            },
            ClaimRecord {
                coupon: dist6,
                claim_key: Some(row_key(task(1), 3)),
            },
        ])
        .await
        .unwrap();
    assert_eq!(env.stock(&t).await, None);

    let u = users([5, 6, 6, 7]);
    assert_eq!(
        env.reserve(&t, &batch(2, 1, &u), now).await,
        [
            no(ClaimRefusal::LimitReached),
            ok(2),
            no(ClaimRefusal::LimitReached),
            ok(1)
        ]
    );
    assert_eq!(env.stock(&t).await, Some(47 - 2));
}

#[tokio::test]
async fn sold_out_part_way_in_file_order() {
    let env = Env::new().await;
    let now = open_time();
    let t = env.template(23, 3, 1).await;
    assert!(matches!(
        env.claim(&t, 9, now).await,
        ClaimOutcome::Claimed(_)
    ));

    let u = users([1, 2, 9, 3, 4, 5, 9]);
    assert_eq!(
        env.reserve(&t, &batch(1, 1, &u), now).await,
        [
            ok(1),
            ok(1),
            no(ClaimRefusal::LimitReached),
            no(ClaimRefusal::SoldOut),
            no(ClaimRefusal::SoldOut),
            no(ClaimRefusal::SoldOut),
            // The limit is checked before stock, also once sold out.
            no(ClaimRefusal::LimitReached),
        ]
    );
    assert_eq!(env.stock(&t).await, Some(0));
    assert_eq!(
        env.claim(&t, 7, now).await,
        ClaimOutcome::Refused(ClaimRefusal::SoldOut)
    );

    // The sold-out rows took no user slot: after a restock they get their first coupon.
    let t = env.change(&t, TemplateChange::AddStock(2), now).await;
    assert_eq!(env.stock(&t).await, Some(2));
    assert_eq!(
        env.reserve(&t, &batch(1, 8, &users([3, 1, 4, 5])), now)
            .await,
        [
            ok(1),
            no(ClaimRefusal::LimitReached),
            ok(1),
            no(ClaimRefusal::SoldOut)
        ]
    );
    assert_eq!(env.stock(&t).await, Some(0));
}

#[tokio::test]
async fn status_and_end_refuse_the_whole_batch_but_the_start_does_not() {
    let env = Env::new().await;
    let now = open_time();
    let u = users([1, 2, 2]);

    // Terminated while loaded.
    let t = env.template(25, 100, 5).await;
    assert!(matches!(
        env.claim(&t, 1, now).await,
        ClaimOutcome::Claimed(_)
    ));
    let terminated = env.change(&t, TemplateChange::Terminate, now).await;
    assert_eq!(
        env.reserve(&terminated, &batch(1, 1, &u), now).await,
        [no(ClaimRefusal::Terminated); 3]
    );
    assert_eq!(env.stock(&t).await, Some(99));

    // Terminated before it was ever loaded: loads as terminated.
    let t = env.template(26, 100, 5).await;
    let terminated = match env
        .store
        .change_template(t.id, TemplateChange::Terminate, "admin:1", now)
        .await
        .unwrap()
    {
        ChangeOutcome::Changed(c) => c,
        other => panic!("{other:?}"),
    };
    assert_eq!(env.stock(&t).await, None);
    assert_eq!(
        env.reserve(&terminated, &batch(1, 1, &u), now).await,
        [no(ClaimRefusal::Terminated); 3]
    );
    assert_eq!(env.stock(&t).await, Some(100));

    // Ended by the back-office (status), asked with a time still inside the window.
    let t = env.template(27, 100, 5).await;
    assert!(matches!(
        env.claim(&t, 1, now).await,
        ClaimOutcome::Claimed(_)
    ));
    let ended = env.change(&t, TemplateChange::End, end() + ms(1)).await;
    assert_eq!(
        env.reserve(&ended, &batch(1, 1, &u), now).await,
        [no(ClaimRefusal::Ended); 3]
    );
    assert_eq!(env.stock(&t).await, Some(99));

    // claim_end passed (end exclusive, as for claims); one millisecond earlier reserves.
    let t = env.template(28, 100, 5).await;
    assert_eq!(
        env.reserve(&t, &batch(1, 1, &u), end()).await,
        [no(ClaimRefusal::Ended); 3]
    );
    assert_eq!(
        env.reserve(&t, &batch(1, 1, &u), end() + SignedDuration::from_hours(1))
            .await,
        [no(ClaimRefusal::Ended); 3]
    );
    assert_eq!(env.stock(&t).await, Some(100));
    assert_eq!(
        env.reserve(&t, &batch(1, 4, &u), end() - ms(1)).await,
        [ok(1), ok(1), ok(2)]
    );
    assert_eq!(env.stock(&t).await, Some(97));

    // claim_start in the future: distributions may push before the sale opens.
    let t = env.template(29, 100, 5).await;
    let before = start() - SignedDuration::from_hours(48);
    assert_eq!(
        env.reserve(&t, &batch(1, 1, &u), before).await,
        [ok(1), ok(1), ok(2)]
    );
    assert_eq!(env.stock(&t).await, Some(97));
    assert_eq!(
        env.claim(&t, 3, before).await,
        ClaimOutcome::Refused(ClaimRefusal::NotStarted),
        "claims still wait for the start"
    );

    // A template the store does not know: every row refused, nothing loaded.
    let ghost = Template {
        id: TemplateId::new(404).unwrap(),
        ..t.clone()
    };
    assert_eq!(
        env.reserve(&ghost, &batch(1, 1, &u), now).await,
        [no(ClaimRefusal::Ended); 3]
    );
    assert_eq!(env.stock(&ghost).await, None);
}

#[tokio::test]
async fn replay_only_reserves_nothing_and_answers_none() {
    let env = Env::new().await;
    let now = open_time();
    let t = env.template(30, 10, 1).await;
    let u = users([1, 2]);
    let replay = Reservation {
        replay_only: true,
        ..batch(1, 1, &u)
    };
    // Nothing outlives the process here, so there is never a stored answer to give.
    assert_eq!(env.hot.reserve_batch(&t, &replay, now).await.unwrap(), None);
    assert_eq!(env.stock(&t).await, None, "not even loaded");

    // Also after the batch was reserved for real, and with an empty batch.
    assert_eq!(env.reserve(&t, &batch(1, 1, &u), now).await, [ok(1), ok(1)]);
    assert_eq!(env.hot.reserve_batch(&t, &replay, now).await.unwrap(), None);
    let empty = Reservation {
        replay_only: true,
        ..batch(1, 3, &[])
    };
    assert_eq!(env.hot.reserve_batch(&t, &empty, now).await.unwrap(), None);
    assert_eq!(env.stock(&t).await, Some(8));
    assert_eq!(
        env.claim(&t, 1, now).await,
        ClaimOutcome::Refused(ClaimRefusal::LimitReached)
    );
}

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

#[tokio::test]
async fn refused_stock_goes_back_once_per_batch() {
    let env = Env::new().await;
    let now = open_time();
    let t = env.template(33, 10, 1).await;
    let u = users(1..=6);
    let rows = env.reserve(&t, &batch(3, 1, &u), now).await;
    assert_eq!(reserved(&rows), 6);
    assert_eq!(env.stock(&t).await, Some(4));

    env.hot.return_stock(&t, task(3), 1, 2).await.unwrap();
    assert_eq!(env.stock(&t).await, Some(6));
    for _ in 0..2 {
        env.hot.return_stock(&t, task(3), 1, 2).await.unwrap();
    }
    assert_eq!(env.stock(&t).await, Some(6), "once per batch");
    // Another batch (or task) is another guard; zero changes nothing and guards nothing.
    env.hot.return_stock(&t, task(3), 7, 1).await.unwrap();
    env.hot.return_stock(&t, task(4), 1, 1).await.unwrap();
    env.hot.return_stock(&t, task(5), 1, 0).await.unwrap();
    assert_eq!(env.stock(&t).await, Some(8));
    env.hot.return_stock(&t, task(5), 1, 1).await.unwrap();
    assert_eq!(env.stock(&t).await, Some(9));

    // A template not loaded is not loaded by a return: its load reads the stock from the
    // store, which never took the refused coupons.
    let other = env.template(34, 10, 1).await;
    env.hot.return_stock(&other, task(1), 1, 3).await.unwrap();
    assert_eq!(env.stock(&other).await, None);
    assert!(matches!(
        env.claim(&other, 1, now).await,
        ClaimOutcome::Claimed(_)
    ));
    assert_eq!(env.stock(&other).await, Some(9));
}

/// The runner's cycle against the real store: reserve, commit, return what the store refused;
/// the hot stock then equals the stored one, and a restart rebuilds the same state.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_claims_racing_never_oversell() {
    let env = Env::new().await;
    let t = Arc::new(env.template(40, 100, 1).await);
    let now = open_time();
    let hot = env.hot.clone();

    let claims: Vec<_> = (10_001..=10_100)
        .map(|user| {
            let (hot, t) = (hot.clone(), t.clone());
            tokio::spawn(async move { claim(&hot, &t, user, now).await })
        })
        .collect();
    // Three batches of 50 users, each its own task, interleaved with the claims.
    let batches: Vec<_> = (0..3u64)
        .map(|b| {
            let (hot, t) = (hot.clone(), t.clone());
            tokio::spawn(async move {
                let first = 1 + b * 50;
                let u = users((first as i64)..(first as i64 + 50));
                hot.reserve_batch(&t, &batch(1, first, &u), now).await
            })
        })
        .collect();

    let mut claimed = 0;
    for c in claims {
        match c.await.unwrap() {
            ClaimOutcome::Claimed(c) => {
                assert_eq!(c.seq, 1);
                claimed += 1;
            }
            ClaimOutcome::Refused(ClaimRefusal::SoldOut) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut reserved_rows = 0;
    for b in batches {
        let rows = b.await.unwrap().unwrap().unwrap();
        assert_eq!(rows.len(), 50);
        for r in &rows {
            assert!(*r == ok(1) || *r == no(ClaimRefusal::SoldOut), "{r:?}");
        }
        reserved_rows += reserved(&rows);
    }
    assert_eq!(claimed + reserved_rows, 100, "exactly the stock goes out");
    assert_eq!(env.stock(&t).await, Some(0));
    // The claims are committed; the reservations wait for their runner's commit.
    assert_eq!(env.stored_stock(&t).await, 100 - claimed as i64);
    let state = env.store.claim_state(t.id).await.unwrap();
    assert_eq!(state.user_counts.len(), claimed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_claims_racing_never_break_the_limit() {
    let env = Env::new().await;
    let t = Arc::new(env.template(41, 1_000, 1).await);
    let now = open_time();
    let hot = env.hot.clone();

    // The same 200 users claim and are distributed to at once.
    let claims: Vec<_> = (1..=200)
        .map(|user| {
            let (hot, t) = (hot.clone(), t.clone());
            tokio::spawn(async move {
                let won = matches!(claim(&hot, &t, user, now).await, ClaimOutcome::Claimed(_));
                (user, won)
            })
        })
        .collect();
    let batches: Vec<_> = (0..4u64)
        .map(|b| {
            let (hot, t) = (hot.clone(), t.clone());
            tokio::spawn(async move {
                let first = 1 + b * 50;
                let u = users((first as i64)..(first as i64 + 50));
                let rows = hot
                    .reserve_batch(&t, &batch(1, first, &u), now)
                    .await
                    .unwrap()
                    .unwrap();
                u.into_iter().zip(rows).collect::<Vec<_>>()
            })
        })
        .collect();

    let mut held: HashMap<i64, u32> = HashMap::new();
    for c in claims {
        let (user, won) = c.await.unwrap();
        *held.entry(user).or_default() += u32::from(won);
    }
    for b in batches {
        for (user, row) in b.await.unwrap() {
            match row {
                RowReservation::Reserved { seq } => {
                    assert_eq!(seq, 1);
                    *held.entry(user.get()).or_default() += 1;
                }
                RowReservation::Refused(ClaimRefusal::LimitReached) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(held.len(), 200);
    assert!(held.values().all(|&n| n == 1), "{held:?}");
    assert_eq!(env.stock(&t).await, Some(800));
}
