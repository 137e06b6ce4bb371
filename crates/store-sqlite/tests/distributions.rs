//! The SQLite store's `DistributionStore`: tasks, their idempotent creation, the runner's scan
//! and leases, the exactly-once batch commit (one transaction here: a write failing midway
//! leaves nothing), finishing, cancel, failures, callbacks and file chunks. Each test on its
//! own temporary file; a port of the MySQL adapter's suite, less its shard routing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use jiff::{SignedDuration, Timestamp};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use sqlx::{AssertSqlSafe, Row};
use stampede_core::claim_ports::{ClaimRecord, CouponStore, OutboxEvent};
use stampede_core::distribution_ports::{
    BatchCommit, BatchCoupon, BatchOutcome, CreateDistribution, DistributionQuery,
    DistributionStore, FILE_CHUNK_BYTES, FinishGuard, row_key,
};
use stampede_core::ports::{CreateOutcome, Page, TemplateStore};
use stampede_core::records::{
    DISTRIBUTION_COMPLETED, distribution_completed_event, distribution_summary,
};
use stampede_domain::audit::AuditEntry;
use stampede_domain::coupon::{Origin, new_claimed_coupon};
use stampede_domain::distribution::{
    DistributionStatus, DistributionTask, FailedRow, FileFormat, NotifyState, RowFailure,
};
use stampede_domain::ids::{CouponId, DistributionId, ShopId, TemplateId, UserId};
use stampede_domain::template::{Kind, Template, TemplateDraft};
use stampede_domain::time::to_ms;
use stampede_store_sqlite::{SqliteOptions, SqliteStore};
use std::collections::HashSet;
use std::path::PathBuf;
use tempfile::TempDir;

/// A fixed "now"; every template's claim window starts here.
fn now() -> Timestamp {
    Timestamp::from_second(1_900_000_000).unwrap()
}

fn now_ms() -> i64 {
    to_ms(now())
}

fn mins(m: i64) -> SignedDuration {
    SignedDuration::from_mins(m)
}

fn did(raw: i64) -> DistributionId {
    DistributionId::new(raw).unwrap()
}

fn tid(raw: i64) -> TemplateId {
    TemplateId::new(raw).unwrap()
}

fn shop(raw: i64) -> ShopId {
    ShopId::new(raw).unwrap()
}

fn uid(raw: i64) -> UserId {
    UserId::new(raw).unwrap()
}

struct Db {
    /// Keeps the file alive.
    _dir: TempDir,
    path: PathBuf,
    store: SqliteStore,
}

impl Db {
    async fn open() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stampede.db");
        let store = SqliteStore::open(&path, SqliteOptions::default())
            .await
            .unwrap();
        Db {
            _dir: dir,
            path,
            store,
        }
    }

    /// Runs `sql` on a connection of its own (behind the store's back).
    async fn raw(&self, sql: &str) {
        let pool = SqlitePool::connect_with(
            SqliteConnectOptions::new()
                .filename(&self.path)
                .foreign_keys(false),
        )
        .await
        .unwrap();
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }

    async fn count(&self, sql: &str) -> i64 {
        let pool = SqlitePool::connect_with(SqliteConnectOptions::new().filename(&self.path))
            .await
            .unwrap();
        let n: i64 = sqlx::query(AssertSqlSafe(sql.to_owned()))
            .fetch_one(&pool)
            .await
            .unwrap()
            .get(0);
        pool.close().await;
        n
    }
}

/// A stored fixed-amount template with `stock` coupons, up to 100 per user, claimable from
/// `now()` for ten days. Tasks reference their template (a foreign key), so every test
/// stores the templates its tasks name.
async fn stocked(store: &SqliteStore, id: i64, shop_id: i64, stock: i64) -> Template {
    let t = TemplateDraft {
        name: Some(format!("stocked {id}")),
        kind: Some(Kind::Fixed),
        amount_off: Some(500),
        stock_total: Some(stock),
        claim_start: Some(now()),
        claim_end: Some(now() + SignedDuration::from_hours(240)),
        validity_hours: Some(24),
        per_user_limit: Some(100),
        ..TemplateDraft::default()
    }
    .validate(tid(id), shop(shop_id), now())
    .unwrap();
    let out = store
        .create_template(&t, &AuditEntry::created(&t, "admin:1"), None)
        .await
        .unwrap();
    assert!(matches!(out, CreateOutcome::Created), "{out:?}");
    t
}

async fn stock_of(store: &SqliteStore, t: &Template) -> i64 {
    store.get_template(t.id).await.unwrap().unwrap().stock
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

async fn created(store: &SqliteStore, t: &DistributionTask) {
    let outcome = store.create_distribution(t).await.unwrap();
    assert!(
        matches!(outcome, CreateDistribution::Created),
        "{outcome:?}"
    );
}

async fn get(store: &SqliteStore, id: DistributionId) -> DistributionTask {
    store.get_distribution(id).await.unwrap().unwrap()
}

async fn acquire(
    store: &SqliteStore,
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

async fn finish(
    store: &SqliteStore,
    t: &DistributionTask,
    guard: FinishGuard<'_>,
    status: DistributionStatus,
    reason: Option<&str>,
    at: Timestamp,
) -> Option<DistributionTask> {
    store
        .finish_distribution(
            t.id,
            t.shop_id,
            guard,
            status,
            reason,
            at,
            &distribution_completed_event(t),
        )
        .await
        .unwrap()
}

/// A claim of `t` by `user` (its `seq`-th), without a key.
fn claim(t: &Template, id: i64, user: i64, seq: u32) -> ClaimRecord {
    ClaimRecord {
        coupon: new_claimed_coupon(
            t,
            CouponId::new(id).unwrap(),
            uid(user),
            seq,
            Origin::Claim,
            now(),
        ),
        claim_key: None,
    }
}

fn keyed(mut c: ClaimRecord, key: &str) -> ClaimRecord {
    c.claim_key = Some(key.to_owned());
    c
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

async fn commit(store: &SqliteStore, b: &BatchCommit) -> BatchOutcome {
    store.commit_batch(b).await.unwrap()
}

async fn all_failures(store: &SqliteStore, t: &DistributionTask) -> Vec<FailedRow> {
    store.failures(t.id, t.shop_id, 0, 10_000).await.unwrap()
}

async fn claimed_events(store: &SqliteStore) -> Vec<OutboxEvent> {
    store
        .outbox_events("coupon.claimed", 1_000_000)
        .await
        .unwrap()
}

async fn coupons_of(store: &SqliteStore, coupons: &[BatchCoupon]) -> usize {
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

async fn check_every_page(
    store: &SqliteStore,
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

#[tokio::test]
async fn create_get_and_list() {
    let db = Db::open().await;
    let store = &db.store;
    for id in 40..=42 {
        stocked(store, id, 1, 100).await;
    }
    let mut all = Vec::new();
    for i in 0..18i64 {
        // Ids not in creation order, so listing order is by id, not by insertion.
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

#[tokio::test]
async fn an_upload_key_binds_one_task_per_shop() {
    let db = Db::open().await;
    let store = &db.store;
    stocked(store, 1, 1, 100).await;
    let mut first = new_task(100, 1, 1);
    first.idempotency_key = Some("upload-1".to_owned());
    first.request_hash = Some("1".repeat(64));
    created(store, &first).await;

    // Same key, another request: the first task, and nothing written.
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
    let mut other_shop = new_task(102, 1, 2);
    other_shop.idempotency_key = Some("upload-1".to_owned());
    created(store, &other_shop).await;
    let mut other_case = new_task(103, 1, 1);
    other_case.idempotency_key = Some("UPLOAD-1".to_owned());
    created(store, &other_case).await;
    // Tasks without a key never collide.
    created(store, &new_task(104, 1, 1)).await;
    created(store, &new_task(105, 1, 1)).await;

    // Racing creations with one key: one task, every loser answered with it.
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let mut t = new_task(200 + i, 1, 3);
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

#[tokio::test]
async fn runnable_tasks_are_due_and_free() {
    let db = Db::open().await;
    let store = &db.store;
    stocked(store, 1, 1, 100).await;
    let at = |m: i64, id: i64| {
        let mut t = new_task(id, 1, id);
        t.send_at = now() + mins(m);
        t
    };
    let due = at(-10, 1);
    let later = at(10, 2);
    let canceled_early = at(20, 3);
    let held = at(-30, 4);
    let expired = at(-20, 5);
    let done = at(-40, 6);
    let due_now = at(0, 7);
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

#[tokio::test]
async fn acquire_takes_free_or_own_leases() {
    let db = Db::open().await;
    let store = &db.store;
    stocked(store, 1, 9, 100).await;
    let t = new_task(1, 1, 9);
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
        acquire(store, &new_task(2, 1, 9), "d", far, i64::MAX).await,
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

#[tokio::test]
async fn commit_batch_stores_each_batch_once() {
    let db = Db::open().await;
    let store = &db.store;
    let tpl = stocked(store, 77, 3, 1_000).await;
    let t = task_of(9_001, &tpl);
    created(store, &t).await;
    acquire(store, &t, "r1", now(), now_ms() + 60_000)
        .await
        .unwrap();

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

    // The coupons with their row keys, the stock, the counters, the lease and the failures.
    for c in &coupons {
        let got = store
            .get_coupon(c.record.coupon.user_id, c.record.coupon.id)
            .await
            .unwrap();
        assert_eq!(got.as_ref(), Some(&c.record.coupon));
    }
    let keys = db
        .count(&format!(
            "SELECT COUNT(*) FROM user_coupons WHERE template_id = 77 AND claim_key = 'dist {} ' || (id - 69998)",
            t.id
        ))
        .await;
    assert_eq!(keys, 8, "each coupon stored with its row's claim_key");
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
    assert_eq!(state.user_counts.iter().map(|(_, n)| n).sum::<u32>(), 8);
    assert!(state.keyed.is_empty());

    // The same batch again: nothing moves.
    assert_eq!(commit(store, &b).await, BatchOutcome::AlreadyApplied);
    assert_eq!(stock_of(store, &tpl).await, 992);
    assert_eq!(get(store, t.id).await, after);
    assert_eq!(all_failures(store, &t).await, failures);
    let state = store.claim_state(tpl.id).await.unwrap();
    assert_eq!(state.user_counts.iter().map(|(_, n)| n).sum::<u32>(), 8);

    // A runner that lost the lease changes nothing at all (one transaction here: not even
    // its coupons land).
    let next: Vec<BatchCoupon> = (0..2)
        .map(|i| coupon_row(&tpl, t.id, 12 + i, 71_000 + i as i64, 555 + i as i64, 1))
        .collect();
    let stale = batch(&t, "r0", 10, next.clone(), Vec::new());
    assert_eq!(commit(store, &stale).await, BatchOutcome::LeaseLost);
    assert_eq!(get(store, t.id).await, after);
    assert_eq!(stock_of(store, &tpl).await, 992);
    assert_eq!(coupons_of(store, &next).await, 0);
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
    store
        .acquire_distribution(t.id, t.shop_id, "r1", now(), now_ms() - 1)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        commit(store, &late).await,
        BatchOutcome::Applied { .. }
    ));
    assert_eq!(get(store, t.id).await.lease_until_ms, late.lease_until_ms);
    // ...but not once someone else did.
    store
        .acquire_distribution(t.id, t.shop_id, "r1", now(), now_ms() - 1)
        .await
        .unwrap()
        .unwrap();
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

#[tokio::test]
async fn a_coupon_whose_slot_is_taken_is_rejected() {
    let db = Db::open().await;
    let store = &db.store;
    let tpl = stocked(store, 88, 5, 100).await;
    // User 1001 already holds seq 1 through a claim (which took one off the stock).
    let claimed = keyed(claim(&tpl, 1, 1_001, 1), "k-1");
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

    // A slot taken by a coupon id already in use by someone else is rejected the same way.
    let clash = vec![
        coupon_row(&tpl, t.id, 6, 501, 4_004, 1),
        coupon_row(&tpl, t.id, 7, 503, 5_005, 1),
    ];
    assert_eq!(
        commit(store, &batch(&t, "r1", 4, clash.clone(), Vec::new())).await,
        BatchOutcome::Applied {
            issued: 1,
            rejected: 1
        }
    );
    assert_eq!(stock_of(store, &tpl).await, 96);
    assert_eq!(coupons_of(store, &clash).await, 1);
    assert_eq!(
        store.failures(t.id, t.shop_id, 5, 10).await.unwrap(),
        [failure(6, "4004", RowFailure::StoreRejected)]
    );
}

#[tokio::test]
async fn claim_state_counts_distribution_coupons_but_never_replays_them() {
    let db = Db::open().await;
    let store = &db.store;
    let tpl = stocked(store, 66, 2, 100).await;
    let k1 = keyed(claim(&tpl, 1, 5, 1), "first");
    let k2 = keyed(claim(&tpl, 2, 6, 1), "second");
    store
        .commit_claims(&[k1.clone(), k2.clone(), claim(&tpl, 3, 7, 1)])
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
    state.user_counts.sort();
    assert_eq!(
        state.user_counts,
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

#[tokio::test]
async fn bad_batches_change_nothing() {
    let db = Db::open().await;
    let store = &db.store;
    let tpl = stocked(store, 90, 6, 100).await;
    let other = stocked(store, 91, 6, 100).await;
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
    assert!(store.commit_batch(&failed_twice).await.is_err());
    // A coupon keyed for another row.
    let mut wrong_key = coupon_row(&tpl, t.id, 2, 1, 11, 1);
    wrong_key.row = 3;
    assert!(
        store
            .commit_batch(&batch(&t, "r1", 0, vec![wrong_key], Vec::new()))
            .await
            .is_err()
    );
    // A coupon of another template.
    assert!(
        store
            .commit_batch(&batch(
                &t,
                "r1",
                0,
                vec![coupon_row(&other, t.id, 2, 1, 11, 1)],
                Vec::new()
            ))
            .await
            .is_err()
    );
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
        assert!(store.commit_batch(&b).await.is_err(), "{}", template.id);
    }
    // A task that does not exist: no lease to hold.
    let ghost = new_task(9_999, tpl.id.get(), 6);
    assert_eq!(
        commit(
            store,
            &batch(
                &ghost,
                "r1",
                0,
                vec![coupon_row(&tpl, ghost.id, 2, 3, 13, 1)],
                Vec::new()
            )
        )
        .await,
        BatchOutcome::LeaseLost
    );

    assert_eq!(get(store, t.id).await, before);
    assert_eq!(stock_of(store, &tpl).await, 100);
    assert_eq!(stock_of(store, &other).await, 100);
    assert!(all_failures(store, &t).await.is_empty());
    assert_eq!(db.count("SELECT COUNT(*) FROM user_coupons").await, 0);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM distribution_failures").await,
        0
    );

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

#[tokio::test]
async fn a_write_failing_midway_leaves_nothing_behind() {
    let db = Db::open().await;
    let store = &db.store;
    let tpl = stocked(store, 92, 6, 1_000).await;
    let t = task_of(9_006, &tpl);
    created(store, &t).await;
    acquire(store, &t, "r1", now(), now_ms() + 60_000)
        .await
        .unwrap();
    let before = get(store, t.id).await;
    let coupons: Vec<BatchCoupon> = (0..300u64)
        .map(|i| coupon_row(&tpl, t.id, i + 2, 1_000 + i as i64, 1 + i as i64, 1))
        .collect();
    let b = batch(
        &t,
        "r1",
        0,
        coupons.clone(),
        vec![failure(302, "bad", RowFailure::InvalidUserId)],
    );
    let nothing_written = || async {
        assert_eq!(get(store, t.id).await, before);
        assert_eq!(stock_of(store, &tpl).await, 1_000);
        assert_eq!(db.count("SELECT COUNT(*) FROM user_coupons").await, 0);
        assert_eq!(
            db.count("SELECT COUNT(*) FROM distribution_failures").await,
            0
        );
    };

    // The failures are written after the coupons and the stock: make that write fail.
    db.raw(
        "CREATE TRIGGER no_failures BEFORE INSERT ON distribution_failures \
         BEGIN SELECT RAISE(ABORT, 'disk on fire'); END",
    )
    .await;
    assert!(store.commit_batch(&b).await.is_err());
    nothing_written().await;
    db.raw("DROP TRIGGER no_failures").await;

    // The template row is gone (behind the store's back): the stock change matches nothing,
    // so the coupons would be counted nowhere.
    db.raw("CREATE TABLE templates_aside AS SELECT * FROM templates; DELETE FROM templates")
        .await;
    assert!(store.commit_batch(&b).await.is_err());
    db.raw("INSERT INTO templates SELECT * FROM templates_aside; DROP TABLE templates_aside")
        .await;
    nothing_written().await;

    // The same batch commits once the store is whole again.
    assert_eq!(
        commit(store, &b).await,
        BatchOutcome::Applied {
            issued: 300,
            rejected: 0
        }
    );
    assert_eq!(stock_of(store, &tpl).await, 700);
    assert_eq!(coupons_of(store, &coupons).await, 300);
    let after = get(store, t.id).await;
    assert_eq!(
        (after.processed_rows, after.succeeded, after.failed),
        (301, 300, 1)
    );
}

#[tokio::test]
async fn finish_is_guarded_and_records_the_event() {
    let db = Db::open().await;
    let store = &db.store;
    stocked(store, 1, 1, 100).await;
    let running = new_task(1, 1, 1);
    let mut with_hook = new_task(2, 1, 2);
    with_hook.notify_url = Some("https://shop.example/done".to_owned());
    let pending = new_task(3, 1, 3);
    let leased_pending = new_task(4, 1, 4);
    for t in [&running, &with_hook, &pending, &leased_pending] {
        created(store, t).await;
    }
    for t in [&running, &with_hook] {
        acquire(store, t, "r1", now(), now_ms() + 60_000)
            .await
            .unwrap();
    }
    let at = now() + mins(3);
    let completed = DistributionStatus::Completed;

    // Only the lease holder finishes a running task, and only once.
    assert_eq!(
        finish(
            store,
            &running,
            FinishGuard::Owner("r2"),
            completed,
            None,
            at
        )
        .await,
        None
    );
    assert_eq!(
        finish(store, &running, FinishGuard::Pending, completed, None, at).await,
        None
    );
    let done = finish(
        store,
        &running,
        FinishGuard::Owner("r1"),
        completed,
        None,
        at,
    )
    .await
    .unwrap();
    assert_eq!(done.status, completed);
    assert_eq!(done.finished_at, Some(at));
    assert_eq!(done.lease_until_ms, 0);
    assert_eq!(done.notify_state, NotifyState::None);
    assert_eq!(get(store, running.id).await, done);
    assert_eq!(
        finish(
            store,
            &running,
            FinishGuard::Owner("r1"),
            completed,
            None,
            at
        )
        .await,
        None
    );

    // With a callback URL the notification is armed, due at once.
    let failed = finish(
        store,
        &with_hook,
        FinishGuard::Owner("r1"),
        DistributionStatus::Failed,
        Some("the file became unreadable"),
        at,
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
    db.raw(&format!(
        "UPDATE distributions SET lease_owner = 'r9', lease_until_ms = {} WHERE id = 4",
        to_ms(at) + 1
    ))
    .await;
    let canceled = DistributionStatus::Canceled;
    assert_eq!(
        finish(
            store,
            &leased_pending,
            FinishGuard::Pending,
            canceled,
            None,
            at
        )
        .await,
        None
    );
    assert_eq!(
        finish(
            store,
            &pending,
            FinishGuard::Owner("r1"),
            canceled,
            None,
            at
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
        at,
    )
    .await
    .unwrap();
    assert_eq!(c.status, canceled);
    assert_eq!(c.started_at, None);
    assert_eq!(c.notify_state, NotifyState::None);

    // Not a final status: refused, nothing written.
    let leased_before = get(store, leased_pending.id).await;
    let later = Timestamp::from_millisecond(to_ms(at) + 2).unwrap();
    for status in [DistributionStatus::Running, DistributionStatus::Pending] {
        assert!(
            store
                .finish_distribution(
                    leased_pending.id,
                    leased_pending.shop_id,
                    FinishGuard::Pending,
                    status,
                    None,
                    later,
                    &distribution_completed_event(&leased_pending),
                )
                .await
                .is_err()
        );
    }
    assert_eq!(get(store, leased_pending.id).await, leased_before);

    // One event per finished task, in the outbox with the summary of the stored row.
    let events = store
        .outbox_events(DISTRIBUTION_COMPLETED, 100)
        .await
        .unwrap();
    assert_eq!(
        events.iter().map(|e| e.aggregate_id).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(events[0].id, distribution_completed_event(&running).id);
    assert_eq!(events[0].kind, DISTRIBUTION_COMPLETED);
    assert_eq!(events[0].payload, distribution_summary(&done).to_string());
    assert_eq!(events[1].payload, distribution_summary(&failed).to_string());
    assert!(claimed_events(store).await.is_empty());
}

#[tokio::test]
async fn cancel_is_requested_on_live_tasks_only() {
    let db = Db::open().await;
    let store = &db.store;
    stocked(store, 1, 1, 100).await;
    let pending = new_task(1, 1, 1);
    let running = new_task(2, 1, 2);
    let done = new_task(3, 1, 3);
    for t in [&pending, &running, &done] {
        created(store, t).await;
    }
    acquire(store, &running, "r", now(), now_ms() + 1_000)
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

    for t in [&pending, &running] {
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

#[tokio::test]
async fn failures_page_by_row() {
    let db = Db::open().await;
    let store = &db.store;
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

#[tokio::test]
async fn notifications_are_compare_and_set() {
    let db = Db::open().await;
    let store = &db.store;
    stocked(store, 1, 1, 100).await;
    let mut tasks = Vec::new();
    for i in 1..=4i64 {
        let mut t = new_task(i, 1, i);
        // The last one has no callback.
        if i < 4 {
            t.notify_url = Some(format!("https://shop{i}.example/done"));
        }
        created(store, &t).await;
        finish(
            store,
            &t,
            FinishGuard::Pending,
            DistributionStatus::Canceled,
            None,
            now() + SignedDuration::from_secs(10 - i),
        )
        .await
        .unwrap();
        tasks.push(t);
    }
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
            .update_notification(did(404), t.shop_id, 0, 1, NotifyState::Pending, next)
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

#[tokio::test]
async fn file_chunks_round_trip() {
    let db = Db::open().await;
    let store = &db.store;
    stocked(store, 1, 5, 100).await;
    // Chunks belong to a stored task (a foreign key).
    let t = new_task(1, 1, 5);
    created(store, &t).await;
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
        Some(big.clone())
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
    assert_eq!(db.count("SELECT COUNT(*) FROM distribution_files").await, 2);
    // Missing chunks and tasks read as None.
    assert_eq!(store.file_chunk(t.id, t.shop_id, 2).await.unwrap(), None);
    assert_eq!(store.file_chunk(did(2), t.shop_id, 0).await.unwrap(), None);
    // A chunk of a task that is not stored is refused.
    assert!(
        store
            .put_file_chunk(did(2), t.shop_id, 0, b"orphan")
            .await
            .is_err()
    );
    assert_eq!(
        store.file_chunk(t.id, t.shop_id, 0).await.unwrap(),
        Some(big)
    );
}
