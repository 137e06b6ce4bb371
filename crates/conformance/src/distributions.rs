//! `DistributionStore`: tasks and their idempotent creation, listing, the runner's scan and
//! leases, the exactly-once batch commit (coupons already stored count once, a taken slot is
//! rejected, a bad batch changes nothing), finishing with its outbox event, cancel, failed
//! rows, callbacks and file chunks.
//!
//! The builders are public so an adapter's own tests (a failure injected inside its
//! transaction, rows on their shards) build tasks and batches the same way.

use crate::fixtures::*;
use crate::{StoreFixture, SystemOfRecord};
use jiff::{SignedDuration, Timestamp};
use stampede_core::claim_ports::{ClaimRecord, OutboxEvent};
use stampede_core::distribution_ports::{
    BatchCommit, BatchCoupon, BatchOutcome, CreateDistribution, DistributionQuery,
    FILE_CHUNK_BYTES, FinishGuard, row_key,
};
use stampede_core::events::{
    DISTRIBUTION_COMPLETED, distribution_completed_event, distribution_summary,
};
use stampede_core::ports::Page;
use stampede_domain::coupon::{Origin, new_claimed_coupon};
use stampede_domain::distribution::{
    DistributionStatus, DistributionTask, FailedRow, FileFormat, NotifyState, RowFailure,
};
use stampede_domain::ids::{DistributionId, ShopId};
use stampede_domain::template::Template;
use std::collections::HashSet;

/// Runs every `DistributionStore` scenario; see the crate docs.
#[macro_export]
macro_rules! distribution_store_suite {
    ($run:path) => {
        mod distribution_store {
            #[allow(unused_imports)]
            use super::*;
            $crate::__scenarios!($run; distributions;
                create_get_and_list,
                an_upload_key_binds_one_task_per_shop,
                runnable_tasks_are_due_and_free,
                acquire_takes_free_or_own_leases,
                commit_batch_stores_each_batch_once,
                a_replay_after_a_crash_counts_the_coupons_already_stored,
                a_coupon_whose_slot_is_taken_is_rejected,
                claim_state_counts_distribution_coupons_but_never_replays_them,
                bad_batches_change_nothing,
                finish_is_guarded_and_records_the_event,
                cancel_is_requested_on_live_tasks_only,
                failures_page_by_row,
                notifications_are_compare_and_set,
                file_chunks_round_trip,
                reopening_keeps_tasks_failures_and_files,
            );
        }
    };
}

/// A pending task of `template_id` in `shop_id`, due at `now()`, not stored.
pub fn task(id: i64, template_id: i64, shop_id: i64) -> DistributionTask {
    DistributionTask {
        id: did(id),
        template_id: tid(template_id),
        shop_id: shop(shop_id),
        name: format!("push {id} — 新人礼 🎁"),
        status: DistributionStatus::Pending,
        send_at: now(),
        total_rows: 1_000,
        processed_rows: 0,
        succeeded: 0,
        failed: 0,
        created_at: now() - mins(5),
        started_at: None,
        finished_at: None,
        notify_url: None,
        failure_reason: None,
        cancel_requested: false,
        format: FileFormat::Csv,
        file_size: 12_345,
        batch_size: 500,
        created_by: "merchant:7".to_owned(),
        idempotency_key: None,
        request_hash: None,
        lease_owner: None,
        lease_until_ms: 0,
        notify_state: NotifyState::None,
        notify_attempts: 0,
        notify_next_at_ms: 0,
    }
}

/// `task` of the template `t`.
pub fn task_of(id: i64, t: &Template) -> DistributionTask {
    task(id, t.id.get(), t.shop_id.get())
}

/// Task `id` of shop `shop_id` (not stored) with its template stored under the same id: a
/// task's template lives with its shop, and SQLite holds it to that with a foreign key.
pub async fn with_template(store: &dyn SystemOfRecord, id: i64, shop_id: i64) -> DistributionTask {
    task_of(id, &stocked(store, id, shop_id, 100).await)
}

pub async fn created(store: &dyn SystemOfRecord, t: &DistributionTask) {
    let outcome = store.create_distribution(t).await.unwrap();
    assert!(
        matches!(outcome, CreateDistribution::Created),
        "{outcome:?}"
    );
}

/// Template `template_id` of `shop_id` with `stock` coupons, and its task `task_id`, stored
/// and taken by runner `r1` for a minute.
pub async fn running(
    store: &dyn SystemOfRecord,
    template_id: i64,
    shop_id: i64,
    stock: i64,
    task_id: i64,
) -> (Template, DistributionTask) {
    let tpl = stocked(store, template_id, shop_id, stock).await;
    let t = task_of(task_id, &tpl);
    created(store, &t).await;
    acquire(store, &t, "r1", now(), now_ms() + 60_000)
        .await
        .unwrap();
    (tpl, t)
}

pub async fn get(store: &dyn SystemOfRecord, id: DistributionId) -> DistributionTask {
    store.get_distribution(id).await.unwrap().unwrap()
}

pub async fn acquire(
    store: &dyn SystemOfRecord,
    t: &DistributionTask,
    owner: &str,
    at: Timestamp,
    until_ms: i64,
) -> Option<DistributionTask> {
    store
        .acquire_distribution(t.id, t.shop_id, owner, at, until_ms)
        .await
        .unwrap()
}

/// The `distribution.completed` event of `t` finishing, built as the runner builds it: from
/// the stored task as the finish will leave it.
pub async fn completion_event(
    store: &dyn SystemOfRecord,
    t: &DistributionTask,
    status: DistributionStatus,
    reason: Option<&str>,
    at: Timestamp,
) -> OutboxEvent {
    let mut done = store
        .get_distribution(t.id)
        .await
        .unwrap()
        .unwrap_or_else(|| t.clone());
    done.status = status;
    done.finished_at = Some(at);
    done.failure_reason = reason.map(str::to_owned);
    distribution_completed_event(&done)
}

pub async fn finish(
    store: &dyn SystemOfRecord,
    t: &DistributionTask,
    guard: FinishGuard<'_>,
    status: DistributionStatus,
    reason: Option<&str>,
    at: Timestamp,
) -> Option<DistributionTask> {
    let event = completion_event(store, t, status, reason, at).await;
    store
        .finish_distribution(t.id, t.shop_id, guard, status, reason, at, &event)
        .await
        .unwrap()
}

/// The coupon of file row `row` for `user` (their `seq`-th of `t`), keyed for the row.
pub fn coupon_row(
    t: &Template,
    task: DistributionId,
    row: u64,
    id: i64,
    user: i64,
    seq: u32,
) -> BatchCoupon {
    BatchCoupon {
        row,
        raw: user.to_string(),
        record: ClaimRecord {
            coupon: new_claimed_coupon(t, cid(id), uid(user), seq, Origin::Distribution, now()),
            claim_key: Some(row_key(task, row)),
            traceparent: None,
        },
    }
}

pub fn failure(row: u64, raw: &str, reason: RowFailure) -> FailedRow {
    FailedRow {
        row,
        raw: raw.to_owned(),
        reason,
    }
}

/// The batch of `t` starting at `first_row`, committed by `owner`, renewing the lease for
/// two minutes.
pub fn batch(
    t: &DistributionTask,
    owner: &str,
    first_row: u64,
    coupons: Vec<BatchCoupon>,
    failures: Vec<FailedRow>,
) -> BatchCommit {
    BatchCommit {
        task: t.id,
        shop_id: t.shop_id,
        template_id: t.template_id,
        owner: owner.to_owned(),
        first_row,
        rows: (coupons.len() + failures.len()) as u64,
        coupons,
        failures,
        lease_until_ms: now_ms() + 120_000,
    }
}

pub async fn commit(store: &dyn SystemOfRecord, b: &BatchCommit) -> BatchOutcome {
    store.commit_batch(b).await.unwrap()
}

pub async fn all_failures(store: &dyn SystemOfRecord, t: &DistributionTask) -> Vec<FailedRow> {
    store.failures(t.id, t.shop_id, 0, 10_000).await.unwrap()
}

/// How many of `coupons` are stored.
pub async fn coupons_of(store: &dyn SystemOfRecord, coupons: &[BatchCoupon]) -> usize {
    let mut n = 0;
    for c in coupons {
        let r = &c.record.coupon;
        n += usize::from(store.get_coupon(r.user_id, r.id).await.unwrap().is_some());
    }
    n
}

fn ids(ts: Vec<DistributionTask>) -> Vec<i64> {
    ts.into_iter().map(|t| t.id.get()).collect()
}

fn query(shop_id: Option<ShopId>, page: u32, page_size: u32) -> DistributionQuery {
    DistributionQuery {
        shop_id,
        page,
        page_size,
    }
}

/// Every page of `size` (and one past the end) lists `expected` in order, with its total.
async fn check_every_page(
    store: &dyn SystemOfRecord,
    shop_id: Option<ShopId>,
    size: u32,
    expected: &[DistributionTask],
) {
    let pages = expected.len().div_ceil(size as usize) as u32;
    for page in 1..=pages + 1 {
        let got: Page<DistributionTask> = store
            .list_distributions(&query(shop_id, page, size))
            .await
            .unwrap();
        let from = (((page - 1) * size) as usize).min(expected.len());
        let to = (from + size as usize).min(expected.len());
        assert_eq!(got.total, expected.len() as u64, "total, page {page}");
        assert_eq!(got.items, expected[from..to], "page {page} of size {size}");
    }
}

pub async fn create_get_and_list(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    // Template 40 + k of shop k + 1, for the tasks of that shop.
    for k in 0..6 {
        stocked(store, 40 + k, k + 1, 100).await;
    }
    let mut all = Vec::new();
    for i in 0..18i64 {
        // Ids not in creation order and interleaved over the shops (so every shard holds old
        // and new tasks): the listing orders by id, not by insertion.
        let mut t = task(5_000 + (i * 7) % 18 * 10 + i, 40 + i % 6, i % 6 + 1);
        if i == 4 {
            t.notify_url = Some("https://shop.example/hooks/done?x=1&y=é".to_owned());
            t.idempotency_key = Some("upload-42".to_owned());
            t.request_hash = Some("ab".repeat(32));
            t.format = FileFormat::Xlsx;
            t.send_at = now() + mins(90);
            t.name = "x".repeat(200);
            t.created_by = "admin:1".to_owned();
        }
        created(store, &t).await;
        all.push(t);
    }
    for t in &all {
        assert_eq!(
            store.get_distribution(t.id).await.unwrap().as_ref(),
            Some(t)
        );
    }
    assert_eq!(store.get_distribution(did(404)).await.unwrap(), None);

    // Admins see every shop; a merchant only theirs. Newest (highest id) first.
    all.sort_by_key(|t| std::cmp::Reverse(t.id));
    for size in [1, 4, 7, 18, 100] {
        check_every_page(store, None, size, &all).await;
    }
    for s in 1..=6 {
        let mine: Vec<DistributionTask> = all
            .iter()
            .filter(|t| t.shop_id == shop(s))
            .cloned()
            .collect();
        assert_eq!(mine.len(), 3);
        check_every_page(store, Some(shop(s)), 2, &mine).await;
    }
    let none = store
        .list_distributions(&query(Some(shop(99)), 1, 10))
        .await
        .unwrap();
    assert_eq!((none.items.len(), none.total), (0, 0));
    // Page 0 reads as page 1.
    let first = store.list_distributions(&query(None, 0, 3)).await.unwrap();
    assert_eq!(first.items, all[..3]);
}

pub async fn an_upload_key_binds_one_task_per_shop(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    for shop_id in 1..=3 {
        stocked(store, shop_id, shop_id, 100).await;
    }
    let mut first = task(100, 1, 1);
    first.idempotency_key = Some("upload-1".to_owned());
    first.request_hash = Some("1".repeat(64));
    created(store, &first).await;

    // Same key, another request: the first task, and nothing written.
    let mut again = task(101, 1, 1);
    again.idempotency_key = Some("upload-1".to_owned());
    again.request_hash = Some("2".repeat(64));
    match store.create_distribution(&again).await.unwrap() {
        CreateDistribution::KeyExists(existing) => assert_eq!(*existing, first),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.get_distribution(again.id).await.unwrap(), None);
    let listed = store
        .list_distributions(&query(Some(shop(1)), 1, 10))
        .await
        .unwrap();
    assert_eq!(listed.total, 1);

    // Keys are per shop and byte for byte.
    let mut other_shop = task(102, 2, 2);
    other_shop.idempotency_key = Some("upload-1".to_owned());
    created(store, &other_shop).await;
    let mut other_case = task(103, 1, 1);
    other_case.idempotency_key = Some("UPLOAD-1".to_owned());
    created(store, &other_case).await;
    // Tasks without a key never collide.
    created(store, &task(104, 1, 1)).await;
    created(store, &task(105, 1, 1)).await;

    // Racing creations with one key: one task, every loser answered with it.
    let answers = race(8, |i| {
        let s = s.clone();
        async move {
            let mut t = task(200 + i as i64, 3, 3);
            t.idempotency_key = Some("race".to_owned());
            (t.id, s.create_distribution(&t).await.unwrap())
        }
    })
    .await;
    let mut winners = Vec::new();
    let mut answered = HashSet::new();
    for answer in answers {
        match answer {
            (id, CreateDistribution::Created) => winners.push(id),
            (_, CreateDistribution::KeyExists(t)) => {
                answered.insert(t.id);
            }
        }
    }
    assert_eq!(winners.len(), 1);
    assert_eq!(answered, HashSet::from([winners[0]]));
    let listed = store
        .list_distributions(&query(Some(shop(3)), 1, 10))
        .await
        .unwrap();
    assert_eq!(listed.total, 1);
    for i in 0..8 {
        let found = store.get_distribution(did(200 + i)).await.unwrap();
        assert_eq!(found.is_some(), did(200 + i) == winners[0]);
    }
}

pub async fn runnable_tasks_are_due_and_free(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    // Task `id` of shop `id`, due `m` minutes from now.
    let sent = async |m: i64, id: i64| {
        let mut t = with_template(store, id, id).await;
        t.send_at = now() + mins(m);
        created(store, &t).await;
        t
    };
    let _due = sent(-10, 1).await;
    let _later = sent(10, 2).await;
    let canceled_early = sent(20, 3).await;
    let held = sent(-30, 4).await;
    let expired = sent(-20, 5).await;
    let done = sent(-40, 6).await;
    let _due_now = sent(0, 7).await;
    // A pending task whose cancel was requested is runnable before its send_at (the runner
    // finishes it as canceled).
    assert!(
        store
            .request_cancel(canceled_early.id, canceled_early.shop_id)
            .await
            .unwrap()
    );
    // Running with a lease held, running with the lease run out, final.
    acquire(store, &held, "x", now(), now_ms() + 60_000)
        .await
        .unwrap();
    acquire(store, &expired, "x", now(), now_ms() - 1)
        .await
        .unwrap();
    acquire(store, &done, "x", now(), now_ms() + 60_000)
        .await
        .unwrap();
    finish(
        store,
        &done,
        FinishGuard::Owner("x"),
        DistributionStatus::Completed,
        None,
        now(),
    )
    .await
    .unwrap();

    let runnable = store.runnable_distributions(now(), 10).await.unwrap();
    assert!(runnable.iter().all(|t| t.is_due(now())));
    // Oldest send_at first.
    assert_eq!(ids(runnable), [5, 1, 7, 3]);
    assert_eq!(
        ids(store.runnable_distributions(now(), 2).await.unwrap()),
        [5, 1]
    );
    assert!(
        store
            .runnable_distributions(now(), 0)
            .await
            .unwrap()
            .is_empty()
    );
    // Later, the held lease has run out and the scheduled task is due; the final one never.
    assert_eq!(
        ids(store
            .runnable_distributions(now() + mins(15), 10)
            .await
            .unwrap()),
        [4, 5, 1, 7, 2, 3]
    );
    // A lease is free strictly after its end.
    let at_lease_end = Timestamp::from_millisecond(now_ms() + 60_000).unwrap();
    assert!(
        !ids(store
            .runnable_distributions(at_lease_end, 10)
            .await
            .unwrap())
        .contains(&4)
    );
}

pub async fn acquire_takes_free_or_own_leases(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let t = with_template(store, 1, 9).await;
    created(store, &t).await;
    let lease = now_ms() + 30_000;

    // Pending → running, started now.
    let got = acquire(store, &t, "a", now(), lease).await.unwrap();
    assert_eq!(got.status, DistributionStatus::Running);
    assert_eq!(got.started_at, Some(now()));
    assert_eq!(
        (got.lease_owner.as_deref(), got.lease_until_ms),
        (Some("a"), lease)
    );
    assert_eq!(get(store, t.id).await, got);

    // The holder renews (even to the same values); started_at stays.
    let renewed = acquire(store, &t, "a", now(), lease).await.unwrap();
    assert_eq!(renewed, got);
    let later = now() + SignedDuration::from_secs(10);
    let renewed = acquire(store, &t, "a", later, lease + 10_000)
        .await
        .unwrap();
    assert_eq!(
        (renewed.started_at, renewed.lease_until_ms),
        (Some(now()), lease + 10_000)
    );

    // Someone else only once the lease ran out (strictly after its end).
    assert_eq!(acquire(store, &t, "b", later, lease + 50_000).await, None);
    let at_end = Timestamp::from_millisecond(lease + 10_000).unwrap();
    assert_eq!(acquire(store, &t, "b", at_end, lease + 50_000).await, None);
    assert_eq!(get(store, t.id).await.lease_owner.as_deref(), Some("a"));
    let after = Timestamp::from_millisecond(lease + 10_001).unwrap();
    let taken = acquire(store, &t, "b", after, lease + 60_000)
        .await
        .unwrap();
    assert_eq!(taken.lease_owner.as_deref(), Some("b"));
    assert_eq!(taken.started_at, Some(now()));
    assert_eq!(taken.status, DistributionStatus::Running);

    // Releasing: only the holder's release counts; then anyone takes it at once.
    store
        .release_distribution(t.id, t.shop_id, "a")
        .await
        .unwrap();
    assert_eq!(acquire(store, &t, "c", after, lease + 70_000).await, None);
    store
        .release_distribution(t.id, t.shop_id, "b")
        .await
        .unwrap();
    assert_eq!(get(store, t.id).await.lease_until_ms, 0);
    assert!(
        acquire(store, &t, "c", after, lease + 70_000)
            .await
            .is_some()
    );

    // An unknown task and a final task are never taken.
    let far = Timestamp::from_millisecond(lease + 1_000_000).unwrap();
    assert_eq!(
        acquire(store, &task(2, 1, 9), "d", far, i64::MAX).await,
        None
    );
    finish(
        store,
        &t,
        FinishGuard::Owner("c"),
        DistributionStatus::Completed,
        None,
        far,
    )
    .await
    .unwrap();
    assert_eq!(acquire(store, &t, "c", far, i64::MAX).await, None);
    assert_eq!(acquire(store, &t, "d", far, i64::MAX).await, None);
    assert_eq!(get(store, t.id).await.status, DistributionStatus::Completed);
}

pub async fn commit_batch_stores_each_batch_once(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let (tpl, t) = running(store, 77, 3, 1_000, 9_001).await;

    // Users far apart, so a sharded store spreads them.
    let users: Vec<i64> = (1..=8).map(|i| i * 1_000_003).collect();
    let coupons: Vec<BatchCoupon> = users
        .iter()
        .enumerate()
        .map(|(i, &u)| coupon_row(&tpl, t.id, i as u64 + 2, 70_000 + i as i64, u, 1))
        .collect();
    let failures = vec![
        failure(10, "abc", RowFailure::InvalidUserId),
        failure(11, &users[0].to_string(), RowFailure::DuplicateInFile),
    ];
    let b = batch(&t, "r1", 0, coupons.clone(), failures.clone());
    assert_eq!(
        commit(store, &b).await,
        BatchOutcome::Applied {
            issued: 8,
            rejected: 0
        }
    );

    // The coupons, the stock, the counters, the lease and the failures.
    for c in &coupons {
        let got = store
            .get_coupon(c.record.coupon.user_id, c.record.coupon.id)
            .await
            .unwrap();
        assert_eq!(got.as_ref(), Some(&c.record.coupon));
    }
    assert_eq!(stock_of(store, &tpl).await, 992);
    let after = get(store, t.id).await;
    assert_eq!(
        (after.processed_rows, after.succeeded, after.failed),
        (10, 8, 2)
    );
    assert_eq!(after.lease_until_ms, b.lease_until_ms);
    assert!(after.counters_consistent());
    assert_eq!(all_failures(store, &t).await, failures);
    // Distribution coupons write no `coupon.claimed` events.
    assert!(claimed_events(store).await.is_empty());
    // A distribution's keyed coupons are not claims to replay into the hot state, but they
    // count towards their users' limits.
    let state = store.claim_state(tpl.id).await.unwrap();
    assert_eq!(state.user_seqs.len(), 8);
    assert!(state.keyed.is_empty());

    // The same batch again: nothing moves.
    assert_eq!(commit(store, &b).await, BatchOutcome::AlreadyApplied);
    assert_eq!(stock_of(store, &tpl).await, 992);
    assert_eq!(get(store, t.id).await, after);
    assert_eq!(all_failures(store, &t).await, failures);
    let state = store.claim_state(tpl.id).await.unwrap();
    assert_eq!(state.user_seqs.len(), 8);

    // A runner that lost the lease changes no counter. (Whether its coupons land is the
    // store's: they are the rows' own, and the holder's commit of the batch counts them.)
    let next: Vec<BatchCoupon> = (0..2)
        .map(|i| coupon_row(&tpl, t.id, 12 + i, 71_000 + i as i64, 555 + i as i64, 1))
        .collect();
    let stale = batch(&t, "r0", 10, next.clone(), Vec::new());
    assert_eq!(commit(store, &stale).await, BatchOutcome::LeaseLost);
    assert_eq!(get(store, t.id).await, after);
    assert_eq!(stock_of(store, &tpl).await, 992);
    let good = batch(&t, "r1", 10, next.clone(), Vec::new());
    assert_eq!(
        commit(store, &good).await,
        BatchOutcome::Applied {
            issued: 2,
            rejected: 0
        }
    );
    assert_eq!(coupons_of(store, &next).await, 2);
    assert_eq!(stock_of(store, &tpl).await, 990);
    let after = get(store, t.id).await;
    assert_eq!(
        (after.processed_rows, after.succeeded, after.failed),
        (12, 10, 2)
    );
    // A batch that starts before the checkpoint was applied already; one past it is not
    // the next batch either (it changes nothing).
    assert_eq!(
        commit(store, &batch(&t, "r1", 0, Vec::new(), Vec::new())).await,
        BatchOutcome::AlreadyApplied
    );
    assert_eq!(
        commit(store, &batch(&t, "r1", 50, Vec::new(), Vec::new())).await,
        BatchOutcome::AlreadyApplied
    );
    assert_eq!(get(store, t.id).await, after);

    // The holder may commit after its lease ran out while nobody took the task over...
    let mut late = batch(
        &t,
        "r1",
        12,
        Vec::new(),
        vec![failure(14, "x", RowFailure::InvalidUserId)],
    );
    late.lease_until_ms = now_ms() + 600_000;
    acquire(store, &t, "r1", now(), now_ms() - 1).await.unwrap();
    assert!(matches!(
        commit(store, &late).await,
        BatchOutcome::Applied { .. }
    ));
    assert_eq!(get(store, t.id).await.lease_until_ms, late.lease_until_ms);
    // ...but not once someone else did.
    acquire(store, &t, "r1", now(), now_ms() - 1).await.unwrap();
    acquire(store, &t, "r2", now(), now_ms() + 60_000)
        .await
        .unwrap();
    let mine = batch(
        &t,
        "r1",
        13,
        Vec::new(),
        vec![failure(15, "y", RowFailure::InvalidUserId)],
    );
    assert_eq!(commit(store, &mine).await, BatchOutcome::LeaseLost);
    assert_eq!(get(store, t.id).await.processed_rows, 13);

    // A final task takes no batch, even from its last holder.
    finish(
        store,
        &t,
        FinishGuard::Owner("r2"),
        DistributionStatus::Canceled,
        None,
        now(),
    )
    .await
    .unwrap();
    let theirs = batch(
        &t,
        "r2",
        13,
        Vec::new(),
        vec![failure(15, "y", RowFailure::InvalidUserId)],
    );
    assert_eq!(commit(store, &theirs).await, BatchOutcome::LeaseLost);
    assert_eq!(get(store, t.id).await.processed_rows, 13);
}

/// Coupons an earlier attempt left under the rows' keys (a crash before its checkpoint)
/// count as the replayed batch's: issued once, the stock down by all of them, no coupon
/// twice. Here they are put in as claims, the one way every store has to store coupons
/// without a batch.
pub async fn a_replay_after_a_crash_counts_the_coupons_already_stored(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let (tpl, t) = running(store, 78, 4, 2_000, 9_002).await;
    // 1,200 rows over as many users: more than one insert chunk per table.
    let coupons: Vec<BatchCoupon> = (0..1_200u64)
        .map(|i| {
            coupon_row(
                &tpl,
                t.id,
                i + 2,
                80_000 + i as i64,
                1 + i as i64 * 7_919,
                1,
            )
        })
        .collect();

    // Half the rows' coupons are stored. One of them under another seq (a hot state rebuilt
    // since gave it seq 2), and so another id.
    let mut stored: Vec<ClaimRecord> = coupons[..600].iter().map(|c| c.record.clone()).collect();
    let mut moved = coupons[5].record.clone();
    moved.coupon.seq = 2;
    moved.coupon.id = cid(99_999);
    stored[5] = moved.clone();
    store.commit_claims(&stored).await.unwrap();
    let before = stock_of(store, &tpl).await;
    assert_eq!(before, 1_400);

    let b = batch(&t, "r1", 0, coupons.clone(), Vec::new());
    assert_eq!(
        commit(store, &b).await,
        BatchOutcome::Applied {
            issued: 1_200,
            rejected: 0
        }
    );
    assert_eq!(stock_of(store, &tpl).await, before - 1_200);
    let state = store.claim_state(tpl.id).await.unwrap();
    assert_eq!(state.user_seqs.len(), 1_200);
    assert!(state.user_counts().iter().all(|(_, n)| *n == 1));
    // The row's coupon is the one stored first.
    let user = moved.coupon.user_id;
    assert_eq!(
        store.get_coupon(user, moved.coupon.id).await.unwrap(),
        Some(moved.coupon.clone())
    );
    assert_eq!(
        store
            .get_coupon(user, coupons[5].record.coupon.id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(coupons_of(store, &coupons).await, 1_199);
    let after = get(store, t.id).await;
    assert_eq!(
        (after.processed_rows, after.succeeded, after.failed),
        (1_200, 1_200, 0)
    );
}

pub async fn a_coupon_whose_slot_is_taken_is_rejected(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let tpl = stocked(store, 88, 5, 100).await;
    // User 1001 already holds seq 1 through a claim (which took one off the stock).
    let claimed = keyed(claim(&tpl, 1, 1_001, 1, 0), "k-1");
    store
        .commit_claims(std::slice::from_ref(&claimed))
        .await
        .unwrap();
    assert_eq!(stock_of(store, &tpl).await, 99);

    let t = task_of(9_003, &tpl);
    created(store, &t).await;
    acquire(store, &t, "r1", now(), now_ms() + 60_000)
        .await
        .unwrap();
    let coupons = vec![
        coupon_row(&tpl, t.id, 2, 500, 1_001, 1),
        coupon_row(&tpl, t.id, 3, 501, 2_002, 1),
        coupon_row(&tpl, t.id, 4, 502, 3_003, 1),
    ];
    let b = batch(
        &t,
        "r1",
        0,
        coupons.clone(),
        vec![failure(5, "4004", RowFailure::SoldOut)],
    );
    assert_eq!(
        commit(store, &b).await,
        BatchOutcome::Applied {
            issued: 2,
            rejected: 1
        }
    );
    // The claim keeps its slot; the others are stored.
    assert_eq!(store.get_coupon(uid(1_001), cid(500)).await.unwrap(), None);
    assert_eq!(
        store
            .get_coupon(uid(1_001), claimed.coupon.id)
            .await
            .unwrap(),
        Some(claimed.coupon.clone())
    );
    assert_eq!(coupons_of(store, &coupons[1..]).await, 2);
    // Stock down only by the coupons stored.
    assert_eq!(stock_of(store, &tpl).await, 97);
    let after = get(store, t.id).await;
    assert_eq!(
        (after.processed_rows, after.succeeded, after.failed),
        (4, 2, 2)
    );
    assert!(after.counters_consistent());
    assert_eq!(
        all_failures(store, &t).await,
        [
            failure(2, "1001", RowFailure::StoreRejected),
            failure(5, "4004", RowFailure::SoldOut),
        ]
    );
    // The claim still replays from the claim state; the distribution's coupons do not.
    let state = store.claim_state(tpl.id).await.unwrap();
    assert_eq!(state.keyed, [("k-1".to_owned(), claimed.coupon.clone())]);
    // Replaying the batch finds it applied and rejects nothing more.
    assert_eq!(commit(store, &b).await, BatchOutcome::AlreadyApplied);
    assert_eq!(all_failures(store, &t).await.len(), 2);
    assert_eq!(stock_of(store, &tpl).await, 97);
}

pub async fn claim_state_counts_distribution_coupons_but_never_replays_them(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let tpl = stocked(store, 66, 2, 100).await;
    let k1 = keyed(claim(&tpl, 1, 5, 1, 0), "first");
    let k2 = keyed(claim(&tpl, 2, 6, 1, 0), "second");
    store
        .commit_claims(&[k1.clone(), k2.clone(), claim(&tpl, 3, 7, 1, 0)])
        .await
        .unwrap();
    let t = task_of(1, &tpl);
    created(store, &t).await;
    acquire(store, &t, "r", now(), now_ms() + 60_000)
        .await
        .unwrap();
    let coupons = vec![
        coupon_row(&tpl, t.id, 2, 10, 5, 2),
        coupon_row(&tpl, t.id, 3, 11, 8, 1),
        coupon_row(&tpl, t.id, 4, 12, 8, 2),
    ];
    assert_eq!(
        commit(store, &batch(&t, "r", 0, coupons, Vec::new())).await,
        BatchOutcome::Applied {
            issued: 3,
            rejected: 0
        }
    );
    let mut state = store.claim_state(tpl.id).await.unwrap();
    assert_eq!(
        state.user_counts(),
        [(uid(5), 2), (uid(6), 1), (uid(7), 1), (uid(8), 2)]
    );
    state.keyed.sort_by_key(|(_, c)| c.id);
    assert_eq!(
        state.keyed,
        [
            ("first".to_owned(), k1.coupon),
            ("second".to_owned(), k2.coupon)
        ]
    );
    assert!(state.keyed.iter().all(|(k, _)| !k.starts_with("dist ")));
    assert_eq!(stock_of(store, &tpl).await, 94);
}

/// Batches the store must refuse: they change no task, stock or failure. (Whether a refused
/// batch's coupons may land first is the store's: see each adapter's tests.)
pub async fn bad_batches_change_nothing(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let (tpl, t) = running(store, 90, 6, 100, 9_004).await;
    let other = stocked(store, 91, 6, 100).await;
    let before = get(store, t.id).await;
    let refused = async |b: &BatchCommit| store.commit_batch(b).await.is_err();

    // Rows that are neither a coupon nor a failure, or are both.
    let mut short = batch(
        &t,
        "r1",
        0,
        vec![coupon_row(&tpl, t.id, 2, 1, 11, 1)],
        Vec::new(),
    );
    short.rows = 2;
    assert!(refused(&short).await);
    let twice = batch(
        &t,
        "r1",
        0,
        vec![coupon_row(&tpl, t.id, 2, 1, 11, 1)],
        vec![failure(2, "11", RowFailure::SoldOut)],
    );
    assert!(refused(&twice).await);
    let failed_twice = batch(
        &t,
        "r1",
        0,
        Vec::new(),
        vec![
            failure(2, "a", RowFailure::InvalidUserId),
            failure(2, "a", RowFailure::InvalidUserId),
        ],
    );
    assert!(refused(&failed_twice).await);
    // A coupon keyed for another row.
    let mut wrong_key = coupon_row(&tpl, t.id, 2, 1, 11, 1);
    wrong_key.row = 3;
    assert!(refused(&batch(&t, "r1", 0, vec![wrong_key], Vec::new())).await);
    // A coupon of another template.
    let foreign_coupon = coupon_row(&other, t.id, 2, 1, 11, 1);
    assert!(refused(&batch(&t, "r1", 0, vec![foreign_coupon], Vec::new())).await);
    // Refused before anything is written: not even the coupon.
    assert_eq!(store.get_coupon(uid(11), cid(1)).await.unwrap(), None);

    // A batch naming another template than its task's (stored or not): its stock change
    // would land elsewhere, or nowhere.
    for template in [
        &other,
        &Template {
            id: tid(999),
            ..tpl.clone()
        },
    ] {
        let foreign = DistributionTask {
            template_id: template.id,
            ..t.clone()
        };
        let b = batch(
            &foreign,
            "r1",
            0,
            vec![coupon_row(template, t.id, 2, 2, 12, 1)],
            Vec::new(),
        );
        assert!(refused(&b).await, "{}", template.id);
    }
    // A task that does not exist: nothing to apply the batch to, with coupons or without.
    let ghost = task(9_999, tpl.id.get(), 6);
    for coupons in [vec![coupon_row(&tpl, ghost.id, 2, 3, 13, 1)], Vec::new()] {
        let outcome = store
            .commit_batch(&batch(&ghost, "r1", 0, coupons, Vec::new()))
            .await;
        assert!(
            !matches!(outcome, Ok(BatchOutcome::Applied { .. })),
            "{outcome:?}"
        );
    }
    assert_eq!(store.get_distribution(ghost.id).await.unwrap(), None);

    assert_eq!(get(store, t.id).await, before);
    assert_eq!(stock_of(store, &tpl).await, 100);
    assert_eq!(stock_of(store, &other).await, 100);
    assert!(all_failures(store, &t).await.is_empty());

    // The store is healthy afterwards: the good batch commits.
    let good = batch(
        &t,
        "r1",
        0,
        vec![coupon_row(&tpl, t.id, 2, 1, 11, 1)],
        vec![failure(3, "x", RowFailure::InvalidUserId)],
    );
    assert_eq!(
        commit(store, &good).await,
        BatchOutcome::Applied {
            issued: 1,
            rejected: 0
        }
    );
    assert_eq!(stock_of(store, &tpl).await, 99);
}

pub async fn finish_is_guarded_and_records_the_event(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let running_t = with_template(store, 1, 1).await;
    let mut with_hook = with_template(store, 2, 2).await;
    with_hook.notify_url = Some("https://shop.example/done".to_owned());
    let pending = with_template(store, 3, 3).await;
    let untouched = with_template(store, 4, 4).await;
    for t in [&running_t, &with_hook, &pending, &untouched] {
        created(store, t).await;
    }
    for t in [&running_t, &with_hook] {
        acquire(store, t, "r1", now(), now_ms() + 60_000)
            .await
            .unwrap();
    }
    // One finish a minute, so "oldest first" orders the events whatever the store.
    let (t1, t2, t3) = (at(3), at(4), at(5));
    let completed = DistributionStatus::Completed;

    // Only the lease holder finishes a running task, and only once.
    assert_eq!(
        finish(
            store,
            &running_t,
            FinishGuard::Owner("r2"),
            completed,
            None,
            t1
        )
        .await,
        None
    );
    assert_eq!(
        finish(store, &running_t, FinishGuard::Pending, completed, None, t1).await,
        None
    );
    let done = finish(
        store,
        &running_t,
        FinishGuard::Owner("r1"),
        completed,
        None,
        t1,
    )
    .await
    .unwrap();
    assert_eq!(done.status, completed);
    assert_eq!(done.finished_at, Some(t1));
    assert_eq!(done.lease_until_ms, 0);
    assert_eq!(done.notify_state, NotifyState::None);
    assert_eq!(get(store, running_t.id).await, done);
    assert_eq!(
        finish(
            store,
            &running_t,
            FinishGuard::Owner("r1"),
            completed,
            None,
            t1
        )
        .await,
        None
    );

    // With a callback URL the notification is armed, due at once.
    let reason = Some("the file became unreadable");
    let failed = finish(
        store,
        &with_hook,
        FinishGuard::Owner("r1"),
        DistributionStatus::Failed,
        reason,
        t2,
    )
    .await
    .unwrap();
    assert_eq!(failed.status, DistributionStatus::Failed);
    assert_eq!(failed.failure_reason.as_deref(), reason);
    assert_eq!(
        (failed.notify_state, failed.notify_next_at_ms),
        (NotifyState::Pending, t2.as_millisecond())
    );

    // A pending task nobody holds is canceled by anyone, not by a lease holder.
    let canceled = DistributionStatus::Canceled;
    assert_eq!(
        finish(
            store,
            &pending,
            FinishGuard::Owner("r1"),
            canceled,
            None,
            t3
        )
        .await,
        None
    );
    let c = finish(
        store,
        &pending,
        FinishGuard::Pending,
        canceled,
        Some("canceled"),
        t3,
    )
    .await
    .unwrap();
    assert_eq!(c.status, canceled);
    assert_eq!(c.started_at, None);
    assert_eq!(c.notify_state, NotifyState::None);

    // Not a final status: refused (though the guard holds), nothing written.
    let untouched_before = get(store, untouched.id).await;
    for status in [DistributionStatus::Running, DistributionStatus::Pending] {
        let event = completion_event(store, &untouched, status, None, t3).await;
        let out = store
            .finish_distribution(
                untouched.id,
                untouched.shop_id,
                FinishGuard::Pending,
                status,
                None,
                t3,
                &event,
            )
            .await;
        assert!(out.is_err(), "{out:?}");
    }
    assert_eq!(get(store, untouched.id).await, untouched_before);

    // One event per finished task, oldest first, with the summary of the stored row.
    let events = store
        .outbox_events(DISTRIBUTION_COMPLETED, 100)
        .await
        .unwrap();
    assert_eq!(
        events.iter().map(|e| e.aggregate_id).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    for (event, stored) in events.iter().zip([&done, &failed, &c]) {
        assert_eq!(event.id, distribution_completed_event(stored).id);
        assert_eq!(event.kind, DISTRIBUTION_COMPLETED);
        assert_eq!(event.payload, distribution_summary(stored).to_string());
    }
    assert!(claimed_events(store).await.is_empty());
}

pub async fn cancel_is_requested_on_live_tasks_only(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let pending = with_template(store, 1, 1).await;
    let running_t = with_template(store, 2, 2).await;
    let done = with_template(store, 3, 3).await;
    for t in [&pending, &running_t, &done] {
        created(store, t).await;
    }
    acquire(store, &running_t, "r", now(), now_ms() + 1_000)
        .await
        .unwrap();
    finish(
        store,
        &done,
        FinishGuard::Pending,
        DistributionStatus::Canceled,
        None,
        now(),
    )
    .await
    .unwrap();

    for t in [&pending, &running_t] {
        assert!(store.request_cancel(t.id, t.shop_id).await.unwrap());
        // Asking again still answers that the task is live.
        assert!(store.request_cancel(t.id, t.shop_id).await.unwrap());
        let after = get(store, t.id).await;
        assert!(after.cancel_requested);
        assert!(!after.status.is_final());
    }
    assert!(!store.request_cancel(done.id, done.shop_id).await.unwrap());
    assert!(!get(store, done.id).await.cancel_requested);
    assert!(!store.request_cancel(did(404), shop(1)).await.unwrap());
}

pub async fn failures_page_by_row(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let (tpl, t) = running(store, 91, 8, 100, 9_010).await;
    // Out of order, with long and non-ASCII raw values.
    let mut failures: Vec<FailedRow> = (0..25u64)
        .rev()
        .map(|i| {
            let raw = if i == 3 {
                "用户".repeat(50)
            } else {
                format!("bad-{i}")
            };
            failure(i + 2, &raw, RowFailure::InvalidUserId)
        })
        .collect();
    assert_eq!(
        commit(store, &batch(&t, "r1", 0, Vec::new(), failures.clone())).await,
        BatchOutcome::Applied {
            issued: 0,
            rejected: 0
        }
    );
    failures.reverse();
    let page = |after, limit| store.failures(t.id, t.shop_id, after, limit);
    assert_eq!(page(0, 10).await.unwrap(), failures[..10]);
    assert_eq!(page(11, 10).await.unwrap(), failures[10..20]);
    assert_eq!(page(21, 10).await.unwrap(), failures[20..]);
    assert!(page(26, 10).await.unwrap().is_empty());
    assert!(page(0, 0).await.unwrap().is_empty());
    assert!(page(u64::MAX, 10).await.unwrap().is_empty());
    assert!(
        store
            .failures(did(404), t.shop_id, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let after = get(store, t.id).await;
    assert_eq!((after.processed_rows, after.failed), (25, 25));
    assert_eq!(stock_of(store, &tpl).await, 100);
}

pub async fn notifications_are_compare_and_set(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let secs = |n: i64| now() + SignedDuration::from_secs(n);
    let mut tasks = Vec::new();
    for i in 1..=4i64 {
        let mut t = with_template(store, i, i).await;
        // The last one has no callback.
        if i < 4 {
            t.notify_url = Some(format!("https://shop{i}.example/done"));
        }
        created(store, &t).await;
        // Finished 9, 8, 7 and 6 seconds from now.
        finish(
            store,
            &t,
            FinishGuard::Pending,
            DistributionStatus::Canceled,
            None,
            secs(10 - i),
        )
        .await
        .unwrap();
        tasks.push(t);
    }
    let due =
        async |at: i64, limit: u32| ids(store.due_notifications(secs(at), limit).await.unwrap());
    assert_eq!(due(10, 10).await, [3, 2, 1]);
    assert_eq!(due(10, 2).await, [3, 2]);
    assert_eq!(due(8, 10).await, [3, 2]);
    assert!(due(6, 10).await.is_empty());
    assert!(due(10, 0).await.is_empty());

    // Claiming attempt 1 of task 3 pushes it out; a second claim of it loses.
    let t = &tasks[2];
    let next = secs(70).as_millisecond();
    let update = async |id, before, after, state| {
        store
            .update_notification(id, t.shop_id, before, after, state, next)
            .await
            .unwrap()
    };
    assert!(update(t.id, 0, 1, NotifyState::Pending).await);
    assert!(!update(t.id, 0, 1, NotifyState::Pending).await);
    assert!(!update(did(404), 0, 1, NotifyState::Pending).await);
    let after = get(store, t.id).await;
    assert_eq!(
        (
            after.notify_state,
            after.notify_attempts,
            after.notify_next_at_ms
        ),
        (NotifyState::Pending, 1, next)
    );
    assert_eq!(due(10, 10).await, [2, 1]);
    assert_eq!(due(70, 10).await, [2, 1, 3]);

    // Delivered: never due again.
    assert!(update(t.id, 1, 1, NotifyState::Delivered).await);
    assert_eq!(get(store, t.id).await.notify_state, NotifyState::Delivered);
    assert_eq!(due(1_000, 10).await, [2, 1]);
}

pub async fn file_chunks_round_trip(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let t = with_template(store, 1, 5).await;
    created(store, &t).await;
    let big: Vec<u8> = (0..FILE_CHUNK_BYTES)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let chunk = async |n| store.file_chunk(t.id, t.shop_id, n).await.unwrap();
    store
        .put_file_chunk(t.id, t.shop_id, 0, &big)
        .await
        .unwrap();
    store
        .put_file_chunk(t.id, t.shop_id, 1, b"tail\0\xff")
        .await
        .unwrap();
    assert_eq!(chunk(0).await, Some(big.clone()));
    assert_eq!(chunk(1).await.as_deref(), Some(&b"tail\0\xff"[..]));
    // Storing a chunk again replaces it, and only it.
    store
        .put_file_chunk(t.id, t.shop_id, 1, b"new")
        .await
        .unwrap();
    assert_eq!(chunk(1).await.as_deref(), Some(&b"new"[..]));
    assert_eq!(chunk(0).await, Some(big));
    // Missing chunks and tasks read as None.
    assert_eq!(chunk(2).await, None);
    assert_eq!(store.file_chunk(did(2), t.shop_id, 0).await.unwrap(), None);
}

/// A store opened afresh (another node, a restart) finds the tasks by id, their failed rows,
/// files and upload keys: nothing lives only in the first store's caches.
pub async fn reopening_keeps_tasks_failures_and_files(f: &dyn StoreFixture) {
    let s = f.store();
    let (tpl, mut t) = running(&*s, 5, 3, 100, 42).await;
    let mut keyed_t = task(43, 5, 3);
    keyed_t.idempotency_key = Some("upload-7".to_owned());
    created(&*s, &keyed_t).await;
    let b = batch(
        &t,
        "r1",
        0,
        vec![coupon_row(&tpl, t.id, 2, 1, 21, 1)],
        vec![failure(3, "x", RowFailure::InvalidUserId)],
    );
    assert!(matches!(
        commit(&*s, &b).await,
        BatchOutcome::Applied { .. }
    ));
    s.put_file_chunk(t.id, t.shop_id, 0, b"user_id\n21\nx\n")
        .await
        .unwrap();
    t = get(&*s, t.id).await;

    let reopened = f.reopen().await;
    let store = &*reopened;
    assert_eq!(get(store, t.id).await, t);
    assert_eq!(get(store, keyed_t.id).await, keyed_t);
    assert_eq!(all_failures(store, &t).await, b.failures);
    assert_eq!(
        store
            .file_chunk(t.id, t.shop_id, 0)
            .await
            .unwrap()
            .as_deref(),
        Some(&b"user_id\n21\nx\n"[..])
    );
    let page = store
        .list_distributions(&query(Some(shop(3)), 1, 10))
        .await
        .unwrap();
    assert_eq!(ids(page.items), [43, 42]);
    let mut again = task(44, 5, 3);
    again.idempotency_key = Some("upload-7".to_owned());
    match store.create_distribution(&again).await.unwrap() {
        CreateDistribution::KeyExists(existing) => assert_eq!(*existing, keyed_t),
        other => panic!("{other:?}"),
    }
    // The runner holding the lease carries on from the new store.
    let next = vec![failure(4, "y", RowFailure::InvalidUserId)];
    assert_eq!(
        commit(store, &batch(&t, "r1", 2, Vec::new(), next)).await,
        BatchOutcome::Applied {
            issued: 0,
            rejected: 0
        }
    );
}
