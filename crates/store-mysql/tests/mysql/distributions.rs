//! `DistributionStore`: tasks, their idempotent creation, the runner's scan and leases, the
//! exactly-once batch commit, finishing, cancel, failures, callbacks and file chunks.

use crate::helpers::*;
use jiff::{SignedDuration, Timestamp};
use sqlx::AssertSqlSafe;
use sqlx::mysql::MySqlPool;
use stampede_core::claim_ports::{ClaimLogStore, ClaimRecord, CouponStore};
use stampede_core::distribution_ports::{
    BatchCommit, BatchCoupon, BatchOutcome, CreateDistribution, DistributionQuery,
    DistributionStore, FILE_CHUNK_BYTES, FinishGuard, row_key,
};
use stampede_core::ports::Page;
use stampede_core::records::{DISTRIBUTION_COMPLETED, distribution_completed_event};
use stampede_domain::coupon::{Origin, new_claimed_coupon};
use stampede_domain::distribution::{
    DistributionStatus, DistributionTask, FailedRow, FileFormat, NotifyState, RowFailure,
};
use stampede_domain::ids::{CouponId, DistributionId, ShopId};
use stampede_domain::template::Template;
use stampede_domain::time::to_ms;
use stampede_store_mysql::MysqlStore;
use std::collections::HashSet;

small_layouts!(
    create_get_and_list,
    an_upload_key_binds_one_task_per_shop,
    runnable_tasks_are_due_and_free,
    acquire_takes_free_or_own_leases,
    commit_batch_stores_each_batch_once,
    a_replay_after_a_crash_counts_the_coupons_already_stored,
    a_coupon_whose_slot_is_taken_is_rejected,
    bad_batches_change_nothing,
    finish_is_guarded_and_records_the_event,
    cancel_is_requested_on_live_tasks_only,
    failures_page_by_row,
    notifications_are_compare_and_set,
    file_chunks_round_trip
);

fn now_ms() -> i64 {
    to_ms(now())
}

fn mins(m: i64) -> SignedDuration {
    SignedDuration::from_mins(m)
}

fn did(raw: i64) -> DistributionId {
    DistributionId::new(raw).unwrap()
}

/// A pending task of `template_id` in `shop_id`, due at `now()`.
fn new_task(id: i64, template_id: i64, shop_id: i64) -> DistributionTask {
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

fn task_of(id: i64, t: &Template) -> DistributionTask {
    new_task(id, t.id.get(), t.shop_id.get())
}

async fn created(store: &MysqlStore, t: &DistributionTask) {
    let outcome = store.create_distribution(t).await.unwrap();
    assert!(
        matches!(outcome, CreateDistribution::Created),
        "{outcome:?}"
    );
}

async fn get(store: &MysqlStore, id: DistributionId) -> DistributionTask {
    store.get_distribution(id).await.unwrap().unwrap()
}

async fn acquire(
    store: &MysqlStore,
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

/// The coupon of file row `row` for `user` (their `seq`-th of `t`).
fn coupon_row(
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
            coupon: new_claimed_coupon(
                t,
                CouponId::new(id).unwrap(),
                uid(user),
                seq,
                Origin::Distribution,
                now(),
            ),
            claim_key: Some(row_key(task, row)),
        },
    }
}

fn failure(row: u64, raw: &str, reason: RowFailure) -> FailedRow {
    FailedRow {
        row,
        raw: raw.to_owned(),
        reason,
    }
}

fn batch(
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

async fn commit(store: &MysqlStore, b: &BatchCommit) -> BatchOutcome {
    store.commit_batch(b).await.unwrap()
}

async fn all_failures(store: &MysqlStore, t: &DistributionTask) -> Vec<FailedRow> {
    store.failures(t.id, t.shop_id, 0, 10_000).await.unwrap()
}

/// In a layout of several databases, `keys` must route to more than one of them.
fn spans_databases(store: &MysqlStore, keys: impl Iterator<Item = i64>) {
    if store.router().databases() > 1 {
        let dbs: HashSet<usize> = keys.map(|k| store.router().route(k).database).collect();
        assert!(dbs.len() > 1, "the keys all route to one database");
    }
}

/// Runs `sql` (binding `v`) on the database of shop `shop_id`, `{distributions}` naming its
/// tasks table.
async fn on_shop_shard(ctx: &Ctx, shop_id: i64, sql: &str, v: i64) {
    let shard = ctx.store.router().route(shop_id);
    let pool = MySqlPool::connect(&ctx.cfg.databases[shard.database])
        .await
        .unwrap();
    let sql = sql.replace("{distributions}", &shard.distributions_table());
    sqlx::query(AssertSqlSafe(sql))
        .bind(v)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

fn query(shop_id: Option<ShopId>, page: u32, page_size: u32) -> DistributionQuery {
    DistributionQuery {
        shop_id,
        page,
        page_size,
    }
}

async fn check_every_page(
    store: &MysqlStore,
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
        let from = ((page - 1) * size) as usize;
        let from = from.min(expected.len());
        let to = (from + size as usize).min(expected.len());
        assert_eq!(got.total, expected.len() as u64, "total, page {page}");
        assert_eq!(got.items, expected[from..to], "page {page} of size {size}");
    }
}

async fn create_get_and_list(ctx: Ctx) {
    let store = &ctx.store;
    let mut all = Vec::new();
    for i in 0..18i64 {
        // Ids interleaved so every shard holds old and new tasks.
        let mut t = new_task(5_000 + (i * 7) % 18 * 10 + i, 40 + i % 3, i % 6 + 1);
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
    spans_databases(store, 1..=6);
    for t in &all {
        assert_eq!(
            store.get_distribution(t.id).await.unwrap().as_ref(),
            Some(t)
        );
    }
    assert_eq!(store.get_distribution(did(404)).await.unwrap(), None);

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

async fn an_upload_key_binds_one_task_per_shop(ctx: Ctx) {
    let store = &ctx.store;
    let mut first = new_task(100, 1, 1);
    first.idempotency_key = Some("upload-1".to_owned());
    first.request_hash = Some("1".repeat(64));
    created(store, &first).await;

    let mut again = new_task(101, 1, 1);
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
    let mut other_shop = new_task(102, 2, 2);
    other_shop.idempotency_key = Some("upload-1".to_owned());
    created(store, &other_shop).await;
    let mut other_case = new_task(103, 1, 1);
    other_case.idempotency_key = Some("UPLOAD-1".to_owned());
    created(store, &other_case).await;

    // Racing creations with one key: one task, every loser answered with it.
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let mut t = new_task(200 + i, 3, 3);
            t.idempotency_key = Some("race".to_owned());
            tokio::spawn(async move { (t.id, store.create_distribution(&t).await.unwrap()) })
        })
        .collect();
    let mut winners = Vec::new();
    let mut answered = HashSet::new();
    for r in racers {
        match r.await.unwrap() {
            (id, CreateDistribution::Created) => winners.push(id),
            (_, CreateDistribution::KeyExists(t)) => {
                answered.insert(t.id);
            }
        }
    }
    assert_eq!(winners.len(), 1);
    assert!(answered.is_empty() || answered == HashSet::from([winners[0]]));
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

async fn runnable_tasks_are_due_and_free(ctx: Ctx) {
    let store = &ctx.store;
    let at = |m: i64, id: i64, shop_id: i64| {
        let mut t = new_task(id, 1, shop_id);
        t.send_at = now() + mins(m);
        t
    };
    let due = at(-10, 1, 1);
    let later = at(10, 2, 2);
    let canceled_early = at(20, 3, 3);
    let held = at(-30, 4, 4);
    let expired = at(-20, 5, 5);
    let done = at(-40, 6, 6);
    let due_now = at(0, 7, 7);
    for t in [
        &due,
        &later,
        &canceled_early,
        &held,
        &expired,
        &done,
        &due_now,
    ] {
        created(store, t).await;
    }
    spans_databases(store, 1..=7);
    assert!(
        store
            .request_cancel(canceled_early.id, canceled_early.shop_id)
            .await
            .unwrap()
    );
    acquire(store, &held, "x", now(), now_ms() + 60_000)
        .await
        .unwrap();
    acquire(store, &expired, "x", now(), now_ms() - 1)
        .await
        .unwrap();
    acquire(store, &done, "x", now(), now_ms() + 60_000)
        .await
        .unwrap();
    store
        .finish_distribution(
            done.id,
            done.shop_id,
            FinishGuard::Owner("x"),
            DistributionStatus::Completed,
            None,
            now(),
            &distribution_completed_event(&done),
        )
        .await
        .unwrap()
        .unwrap();

    let ids = |ts: Vec<DistributionTask>| ts.into_iter().map(|t| t.id.get()).collect::<Vec<_>>();
    let runnable = store.runnable_distributions(now(), 10).await.unwrap();
    assert!(runnable.iter().all(|t| t.is_due(now())));
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
    // Later, the held lease has run out and the scheduled task is due.
    assert_eq!(
        ids(store
            .runnable_distributions(now() + mins(15), 10)
            .await
            .unwrap()),
        [4, 5, 1, 7, 2, 3]
    );
}

async fn acquire_takes_free_or_own_leases(ctx: Ctx) {
    let store = &ctx.store;
    let t = new_task(1, 1, 9);
    created(store, &t).await;
    let lease = now_ms() + 30_000;

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

    // Someone else only once the lease ran out.
    assert_eq!(acquire(store, &t, "b", later, lease + 50_000).await, None);
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

    // Another shop's id, an unknown task and a final task are never taken.
    let wrong_shop = DistributionTask {
        shop_id: shop(10),
        ..t.clone()
    };
    let far = Timestamp::from_millisecond(lease + 1_000_000).unwrap();
    assert_eq!(acquire(store, &wrong_shop, "d", far, i64::MAX).await, None);
    assert_eq!(
        acquire(store, &new_task(2, 1, 9), "d", far, i64::MAX).await,
        None
    );
    store
        .finish_distribution(
            t.id,
            t.shop_id,
            FinishGuard::Owner("c"),
            DistributionStatus::Completed,
            None,
            far,
            &distribution_completed_event(&t),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(acquire(store, &t, "c", far, i64::MAX).await, None);
}

async fn commit_batch_stores_each_batch_once(ctx: Ctx) {
    let store = &ctx.store;
    let tpl = stocked(store, 77, 3, 1_000).await;
    let t = task_of(9_001, &tpl);
    created(store, &t).await;
    acquire(store, &t, "r1", now(), now_ms() + 60_000)
        .await
        .unwrap();

    let users: Vec<i64> = (1..=8).map(|i| i * 1_000_003).collect();
    spans_databases(store, users.iter().copied());
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
    // A distribution's keyed coupons are not claims to replay into the hot state.
    let state = store.claim_state(tpl.id).await.unwrap();
    assert_eq!(state.user_counts.iter().map(|(_, n)| n).sum::<u32>(), 8);
    assert!(state.keyed.is_empty());

    // The same batch again: nothing moves.
    assert_eq!(commit(store, &b).await, BatchOutcome::AlreadyApplied);
    assert_eq!(stock_of(store, &tpl).await, 992);
    assert_eq!(get(store, t.id).await, after);
    assert_eq!(all_failures(store, &t).await, failures);
    let state = store.claim_state(tpl.id).await.unwrap();
    assert_eq!(state.user_counts.iter().map(|(_, n)| n).sum::<u32>(), 8);

    // A runner that lost the lease changes no counter. (Its coupons may land: they are the
    // rows' own, and the holder's commit of the batch counts them.)
    let next: Vec<BatchCoupon> = (0..2)
        .map(|i| coupon_row(&tpl, t.id, 12 + i, 71_000 + i as i64, 555 + i as i64, 1))
        .collect();
    let stale = batch(&t, "r0", 10, next.clone(), Vec::new());
    assert_eq!(commit(store, &stale).await, BatchOutcome::LeaseLost);
    assert_eq!(get(store, t.id).await, after);
    assert_eq!(stock_of(store, &tpl).await, 992);
    let good = batch(&t, "r1", 10, next, Vec::new());
    assert_eq!(
        commit(store, &good).await,
        BatchOutcome::Applied {
            issued: 2,
            rejected: 0
        }
    );
    assert_eq!(stock_of(store, &tpl).await, 990);
    let after = get(store, t.id).await;
    assert_eq!(
        (after.processed_rows, after.succeeded, after.failed),
        (12, 10, 2)
    );
    // A batch that starts before the checkpoint was applied already.
    assert_eq!(
        commit(store, &batch(&t, "r1", 0, Vec::new(), Vec::new())).await,
        BatchOutcome::AlreadyApplied
    );
}

async fn a_replay_after_a_crash_counts_the_coupons_already_stored(ctx: Ctx) {
    let store = &ctx.store;
    let tpl = stocked(store, 78, 4, 2_000).await;
    let t = task_of(9_002, &tpl);
    created(store, &t).await;
    acquire(store, &t, "r1", now(), now_ms() + 60_000)
        .await
        .unwrap();
    // 1,200 rows over as many users: more than one insert chunk on a shard.
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
    spans_databases(store, coupons.iter().map(|c| c.record.coupon.user_id.get()));

    // A crash after step 1 for half the rows: their coupons are stored, nothing else.
    // One of them was stored under another seq (a hot state rebuilt since gave it seq 2).
    let mut stored: Vec<ClaimRecord> = coupons[..600].iter().map(|c| c.record.clone()).collect();
    let mut moved = coupons[5].record.clone();
    moved.coupon.seq = 2;
    moved.coupon.id = CouponId::new(99_999).unwrap();
    stored[5] = moved.clone();
    store.insert_claimed(&stored).await.unwrap();
    assert_eq!(stock_of(store, &tpl).await, 2_000);

    let b = batch(&t, "r1", 0, coupons.clone(), Vec::new());
    assert_eq!(
        commit(store, &b).await,
        BatchOutcome::Applied {
            issued: 1_200,
            rejected: 0
        }
    );
    assert_eq!(stock_of(store, &tpl).await, 800);
    let state = store.claim_state(tpl.id).await.unwrap();
    assert_eq!(state.user_counts.len(), 1_200);
    assert!(state.user_counts.iter().all(|(_, n)| *n == 1));
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
    let after = get(store, t.id).await;
    assert_eq!(
        (after.processed_rows, after.succeeded, after.failed),
        (1_200, 1_200, 0)
    );
}

async fn a_coupon_whose_slot_is_taken_is_rejected(ctx: Ctx) {
    let store = &ctx.store;
    let tpl = stocked(store, 88, 5, 100).await;
    // User 1001 already holds seq 1 through a claim.
    let claimed = keyed(claim(&tpl, 1, 1_001, 1, 0), "k-1");
    store
        .insert_claimed(std::slice::from_ref(&claimed))
        .await
        .unwrap();

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
    assert_eq!(
        store
            .get_coupon(uid(1_001), CouponId::new(500).unwrap())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .get_coupon(uid(1_001), claimed.coupon.id)
            .await
            .unwrap(),
        Some(claimed.coupon.clone())
    );
    assert_eq!(stock_of(store, &tpl).await, 98);
    let after = get(store, t.id).await;
    assert_eq!(
        (after.processed_rows, after.succeeded, after.failed),
        (4, 2, 2)
    );
    assert_eq!(
        all_failures(store, &t).await,
        [
            failure(2, "1001", RowFailure::StoreRejected),
            failure(5, "4004", RowFailure::SoldOut),
        ]
    );
    // Replaying the batch finds it applied and rejects nothing more.
    assert_eq!(commit(store, &b).await, BatchOutcome::AlreadyApplied);
    assert_eq!(all_failures(store, &t).await.len(), 2);
}

async fn bad_batches_change_nothing(ctx: Ctx) {
    let store = &ctx.store;
    let tpl = stocked(store, 90, 6, 100).await;
    let t = task_of(9_004, &tpl);
    created(store, &t).await;
    acquire(store, &t, "r1", now(), now_ms() + 60_000)
        .await
        .unwrap();
    let before = get(store, t.id).await;

    // Rows that are neither a coupon nor a failure, or are both.
    let mut short = batch(
        &t,
        "r1",
        0,
        vec![coupon_row(&tpl, t.id, 2, 1, 11, 1)],
        Vec::new(),
    );
    short.rows = 2;
    assert!(store.commit_batch(&short).await.is_err());
    let twice = batch(
        &t,
        "r1",
        0,
        vec![coupon_row(&tpl, t.id, 2, 1, 11, 1)],
        vec![failure(2, "11", RowFailure::SoldOut)],
    );
    assert!(store.commit_batch(&twice).await.is_err());
    // A coupon keyed for another row.
    let mut wrong_key = coupon_row(&tpl, t.id, 2, 1, 11, 1);
    wrong_key.row = 3;
    assert!(
        store
            .commit_batch(&batch(&t, "r1", 0, vec![wrong_key], Vec::new()))
            .await
            .is_err()
    );
    // A task whose template is not its shop's: the checkpoint rolls back.
    let foreign = new_task(9_005, tpl.id.get(), 7);
    created(store, &foreign).await;
    acquire(store, &foreign, "r1", now(), now_ms() + 60_000)
        .await
        .unwrap();
    let b = batch(
        &foreign,
        "r1",
        0,
        vec![coupon_row(&tpl, foreign.id, 2, 2, 12, 1)],
        Vec::new(),
    );
    assert!(store.commit_batch(&b).await.is_err());
    assert_eq!(get(store, foreign.id).await.processed_rows, 0);
    // A task that does not exist.
    let ghost = new_task(9_999, tpl.id.get(), 6);
    assert!(
        store
            .commit_batch(&batch(&ghost, "r1", 0, Vec::new(), Vec::new()))
            .await
            .is_err()
    );

    assert_eq!(get(store, t.id).await, before);
    assert_eq!(stock_of(store, &tpl).await, 100);
    assert!(all_failures(store, &t).await.is_empty());
}

async fn finish_is_guarded_and_records_the_event(ctx: Ctx) {
    let store = &ctx.store;
    let running = new_task(1, 1, 1);
    let mut with_hook = new_task(2, 1, 2);
    with_hook.notify_url = Some("https://shop.example/done".to_owned());
    let pending = new_task(3, 1, 3);
    let leased_pending = new_task(4, 1, 4);
    for t in [&running, &with_hook, &pending, &leased_pending] {
        created(store, t).await;
    }
    spans_databases(store, 1..=4);
    for t in [&running, &with_hook] {
        acquire(store, t, "r1", now(), now_ms() + 60_000)
            .await
            .unwrap();
    }
    let at = now() + mins(3);
    let finish = |t: &DistributionTask, guard: FinishGuard<'static>, status, reason| {
        let t = t.clone();
        async move {
            store
                .finish_distribution(
                    t.id,
                    t.shop_id,
                    guard,
                    status,
                    reason,
                    at,
                    &distribution_completed_event(&t),
                )
                .await
                .unwrap()
        }
    };
    let completed = DistributionStatus::Completed;

    // Only the lease holder finishes a running task, and only once.
    assert_eq!(
        finish(&running, FinishGuard::Owner("r2"), completed, None).await,
        None
    );
    assert_eq!(
        finish(&running, FinishGuard::Pending, completed, None).await,
        None
    );
    let done = finish(&running, FinishGuard::Owner("r1"), completed, None)
        .await
        .unwrap();
    assert_eq!(done.status, completed);
    assert_eq!(done.finished_at, Some(at));
    assert_eq!(done.lease_until_ms, 0);
    assert_eq!(done.notify_state, NotifyState::None);
    assert_eq!(get(store, running.id).await, done);
    assert_eq!(
        finish(&running, FinishGuard::Owner("r1"), completed, None).await,
        None
    );

    // With a callback URL the notification is armed, due at once.
    let failed = finish(
        &with_hook,
        FinishGuard::Owner("r1"),
        DistributionStatus::Failed,
        Some("the file became unreadable"),
    )
    .await
    .unwrap();
    assert_eq!(failed.status, DistributionStatus::Failed);
    assert_eq!(
        failed.failure_reason.as_deref(),
        Some("the file became unreadable")
    );
    assert_eq!(
        (failed.notify_state, failed.notify_next_at_ms),
        (NotifyState::Pending, to_ms(at))
    );

    // A pending task nobody holds is canceled by anyone; a held one is not.
    on_shop_shard(
        &ctx,
        4,
        "UPDATE {distributions} SET lease_owner = 'r9', lease_until_ms = ? WHERE id = 4",
        to_ms(at) + 1,
    )
    .await;
    let canceled = DistributionStatus::Canceled;
    assert_eq!(
        finish(&leased_pending, FinishGuard::Pending, canceled, None).await,
        None
    );
    assert_eq!(
        finish(&pending, FinishGuard::Owner("r1"), canceled, None).await,
        None
    );
    let c = finish(&pending, FinishGuard::Pending, canceled, Some("canceled"))
        .await
        .unwrap();
    assert_eq!(c.status, canceled);
    assert_eq!(c.started_at, None);

    // Not a final status: refused.
    assert!(
        store
            .finish_distribution(
                leased_pending.id,
                leased_pending.shop_id,
                FinishGuard::Pending,
                DistributionStatus::Running,
                None,
                at,
                &distribution_completed_event(&leased_pending),
            )
            .await
            .is_err()
    );

    // One event per finished task, found across the outbox tables.
    let events = store
        .outbox_events(DISTRIBUTION_COMPLETED, 100)
        .await
        .unwrap();
    let mut ids: Vec<i64> = events.iter().map(|e| e.aggregate_id).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(events[0].id, distribution_completed_event(&running).id);
    assert!(claimed_events(store).await.is_empty());
}

async fn cancel_is_requested_on_live_tasks_only(ctx: Ctx) {
    let store = &ctx.store;
    let pending = new_task(1, 1, 1);
    let running = new_task(2, 1, 2);
    let done = new_task(3, 1, 3);
    for t in [&pending, &running, &done] {
        created(store, t).await;
    }
    acquire(store, &running, "r", now(), now_ms() + 1_000)
        .await
        .unwrap();
    store
        .finish_distribution(
            done.id,
            done.shop_id,
            FinishGuard::Pending,
            DistributionStatus::Canceled,
            None,
            now(),
            &distribution_completed_event(&done),
        )
        .await
        .unwrap()
        .unwrap();

    for t in [&pending, &running] {
        assert!(store.request_cancel(t.id, t.shop_id).await.unwrap());
        // Asking again still answers that the task is live.
        assert!(store.request_cancel(t.id, t.shop_id).await.unwrap());
        assert!(get(store, t.id).await.cancel_requested);
    }
    assert!(!store.request_cancel(done.id, done.shop_id).await.unwrap());
    assert!(!get(store, done.id).await.cancel_requested);
    assert!(!store.request_cancel(did(404), shop(1)).await.unwrap());
    assert!(!store.request_cancel(pending.id, shop(2)).await.unwrap());
}

async fn failures_page_by_row(ctx: Ctx) {
    let store = &ctx.store;
    let tpl = stocked(store, 91, 8, 100).await;
    let t = task_of(9_010, &tpl);
    created(store, &t).await;
    acquire(store, &t, "r1", now(), now_ms() + 60_000)
        .await
        .unwrap();
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

async fn notifications_are_compare_and_set(ctx: Ctx) {
    let store = &ctx.store;
    let mut tasks = Vec::new();
    for i in 1..=4i64 {
        let mut t = new_task(i, 1, i);
        // The last one has no callback.
        if i < 4 {
            t.notify_url = Some(format!("https://shop{i}.example/done"));
        }
        created(store, &t).await;
        store
            .finish_distribution(
                t.id,
                t.shop_id,
                FinishGuard::Pending,
                DistributionStatus::Canceled,
                None,
                now() + SignedDuration::from_secs(10 - i),
                &distribution_completed_event(&t),
            )
            .await
            .unwrap()
            .unwrap();
        tasks.push(t);
    }
    spans_databases(store, 1..=4);
    let ids = |ts: Vec<DistributionTask>| ts.into_iter().map(|t| t.id.get()).collect::<Vec<_>>();
    let at = |s: i64| now() + SignedDuration::from_secs(s);
    assert_eq!(
        ids(store.due_notifications(at(10), 10).await.unwrap()),
        [3, 2, 1]
    );
    assert_eq!(
        ids(store.due_notifications(at(10), 2).await.unwrap()),
        [3, 2]
    );
    assert_eq!(
        ids(store.due_notifications(at(8), 10).await.unwrap()),
        [3, 2]
    );
    assert!(store.due_notifications(at(6), 10).await.unwrap().is_empty());
    assert!(store.due_notifications(at(10), 0).await.unwrap().is_empty());

    // Claiming attempt 1 of task 3 pushes it out; a second claim of it loses.
    let t = &tasks[2];
    let next = to_ms(at(70));
    assert!(
        store
            .update_notification(t.id, t.shop_id, 0, 1, NotifyState::Pending, next)
            .await
            .unwrap()
    );
    assert!(
        !store
            .update_notification(t.id, t.shop_id, 0, 1, NotifyState::Pending, next)
            .await
            .unwrap()
    );
    assert!(
        !store
            .update_notification(t.id, shop(1), 1, 2, NotifyState::Pending, next)
            .await
            .unwrap()
    );
    let after = get(store, t.id).await;
    assert_eq!(
        (
            after.notify_state,
            after.notify_attempts,
            after.notify_next_at_ms
        ),
        (NotifyState::Pending, 1, next)
    );
    assert_eq!(
        ids(store.due_notifications(at(10), 10).await.unwrap()),
        [2, 1]
    );
    assert_eq!(
        ids(store.due_notifications(at(70), 10).await.unwrap()),
        [2, 1, 3]
    );

    // Delivered: never due again.
    assert!(
        store
            .update_notification(t.id, t.shop_id, 1, 1, NotifyState::Delivered, next)
            .await
            .unwrap()
    );
    assert_eq!(get(store, t.id).await.notify_state, NotifyState::Delivered);
    assert_eq!(
        ids(store.due_notifications(at(1_000), 10).await.unwrap()),
        [2, 1]
    );
}

async fn file_chunks_round_trip(ctx: Ctx) {
    let store = &ctx.store;
    let t = new_task(1, 1, 5);
    let big: Vec<u8> = (0..FILE_CHUNK_BYTES)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    store
        .put_file_chunk(t.id, t.shop_id, 0, &big)
        .await
        .unwrap();
    store
        .put_file_chunk(t.id, t.shop_id, 1, b"tail\0\xff")
        .await
        .unwrap();
    assert_eq!(
        store.file_chunk(t.id, t.shop_id, 0).await.unwrap(),
        Some(big)
    );
    assert_eq!(
        store
            .file_chunk(t.id, t.shop_id, 1)
            .await
            .unwrap()
            .as_deref(),
        Some(&b"tail\0\xff"[..])
    );
    // Storing a chunk again replaces it.
    store
        .put_file_chunk(t.id, t.shop_id, 1, b"new")
        .await
        .unwrap();
    assert_eq!(
        store
            .file_chunk(t.id, t.shop_id, 1)
            .await
            .unwrap()
            .as_deref(),
        Some(&b"new"[..])
    );
    assert_eq!(store.file_chunk(t.id, t.shop_id, 2).await.unwrap(), None);
    assert_eq!(store.file_chunk(did(2), t.shop_id, 0).await.unwrap(), None);
}
