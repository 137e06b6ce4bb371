//! What only the MySQL store shows about distributions: rows on their shards (a task with its
//! failed rows and file on its shop's, coupons on their users'), the shop as part of a task's
//! address, the batch commit's two steps (coupons first, then the checkpoint), and a lease
//! set behind the store's back. Everything else distributions do is in the conformance suite
//! (`conformance.rs`).

use crate::helpers::*;
use sqlx::mysql::MySqlPool;
use sqlx::{AssertSqlSafe, Row};
use stampede_conformance::distributions::*;
use stampede_core::claim_ports::{ClaimLogStore, ClaimRecord};
use stampede_core::distribution_ports::{
    BatchCoupon, BatchOutcome, DistributionStore, FinishGuard,
};
use stampede_domain::distribution::{DistributionStatus, NotifyState, RowFailure};
use stampede_store_mysql::{MysqlStore, Shard};
use std::collections::HashSet;

both_layouts!(
    rows_live_on_their_shards,
    a_task_is_reached_through_its_own_shop_only,
    a_pending_task_under_a_lease_is_not_canceled,
    a_batch_the_shop_does_not_hold_is_an_error,
    a_crash_between_the_two_steps_is_replayed,
);

/// In a layout of several databases, `keys` must route to more than one of them.
fn spans_databases(store: &MysqlStore, keys: impl Iterator<Item = i64>) {
    if store.router().databases() > 1 {
        let dbs: HashSet<usize> = keys.map(|k| store.router().route(k).database).collect();
        assert!(dbs.len() > 1, "the keys all route to one database");
    }
}

/// Runs `sql` (binding `v`) on the database of `shard`, its `{distributions}`,
/// `{failures}`, `{files}` and `{coupons}` naming the shard's tables; the first column of the
/// first row it returns, if any.
async fn on_shard(ctx: &Ctx, shard: Shard, sql: &str, v: i64) -> Option<i64> {
    let pool = MySqlPool::connect(&ctx.cfg.databases[shard.database])
        .await
        .unwrap();
    let sql = sql
        .replace("{distributions}", &shard.distributions_table())
        .replace("{failures}", &shard.distribution_failures_table())
        .replace("{files}", &shard.distribution_files_table())
        .replace("{coupons}", &shard.coupons_table());
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(v)
        .fetch_optional(&pool)
        .await
        .unwrap();
    pool.close().await;
    row.map(|r| r.get(0))
}

async fn rows_live_on_their_shards(ctx: Ctx) {
    let store = &ctx.store;
    // The shops and users the conformance scenarios spread their rows over.
    for shops in [1..=4, 1..=6, 1..=7] {
        spans_databases(store, shops);
    }
    spans_databases(store, (1..=8).map(|i| i * 1_000_003));
    spans_databases(store, (0..1_200).map(|i| 1 + i * 7_919));

    for s in 1..=7 {
        let (tpl, t) = running(store, s, s, 100, 100 + s).await;
        let user = s * 1_000_003;
        let b = batch(
            &t,
            "r1",
            0,
            vec![coupon_row(&tpl, t.id, 2, s, user, 1)],
            vec![failure(3, "x", RowFailure::InvalidUserId)],
        );
        assert!(matches!(
            commit(store, &b).await,
            BatchOutcome::Applied { .. }
        ));
        store
            .put_file_chunk(t.id, t.shop_id, 0, b"x")
            .await
            .unwrap();
        let home = store.router().route(s);
        let id = t.id.get();
        for sql in [
            "SELECT COUNT(*) FROM {distributions} WHERE id = ?",
            "SELECT COUNT(*) FROM {failures} WHERE distribution_id = ?",
            "SELECT COUNT(*) FROM {files} WHERE distribution_id = ?",
        ] {
            assert_eq!(on_shard(&ctx, home, sql, id).await, Some(1), "{sql}");
        }
        let coupons = "SELECT COUNT(*) FROM {coupons} WHERE id = ?";
        let user_shard = store.router().route(user);
        assert_eq!(on_shard(&ctx, user_shard, coupons, s).await, Some(1));
    }
}

/// Every call naming a task also names its shop, which routes it: another shop's id reaches
/// nothing, even on one shard. (SQLite goes by the id alone.)
async fn a_task_is_reached_through_its_own_shop_only(ctx: Ctx) {
    let store = &ctx.store;
    let t = with_template(store, 1, 9).await;
    created(store, &t).await;
    let wrong = shop(10);
    let taken = store
        .acquire_distribution(t.id, wrong, "d", now(), i64::MAX)
        .await
        .unwrap();
    assert_eq!(taken, None);
    assert!(!store.request_cancel(t.id, wrong).await.unwrap());
    let claimed = store
        .update_notification(t.id, wrong, 0, 1, NotifyState::Pending, now_ms())
        .await
        .unwrap();
    assert!(!claimed);
    assert_eq!(get(store, t.id).await, t);
}

/// A lease on a pending task (no runner leaves one: set behind the store's back) keeps
/// anyone from canceling it until it runs out.
async fn a_pending_task_under_a_lease_is_not_canceled(ctx: Ctx) {
    let store = &ctx.store;
    let t = with_template(store, 4, 4).await;
    created(store, &t).await;
    let set_lease =
        "UPDATE {distributions} SET lease_owner = 'r9', lease_until_ms = ? WHERE id = 4";
    on_shard(
        &ctx,
        store.router().route(4),
        set_lease,
        at(3).as_millisecond() + 1,
    )
    .await;
    let canceled = DistributionStatus::Canceled;
    let cancel = |when| finish(store, &t, FinishGuard::Pending, canceled, None, when);
    assert_eq!(cancel(at(3)).await, None);
    assert_eq!(get(store, t.id).await.status, DistributionStatus::Pending);
    assert!(cancel(at(4)).await.is_some());
}

/// The checkpoint runs on the shop's shard: a task whose template lives with another shop
/// finds no stock to take there (SQLite, one database, finds it), and a task the shard does
/// not hold is an error (SQLite answers `LeaseLost`).
async fn a_batch_the_shop_does_not_hold_is_an_error(ctx: Ctx) {
    let store = &ctx.store;
    let tpl = stocked(store, 90, 6, 100).await;
    let foreign = task(9_005, 90, 7);
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
    assert_eq!(stock_of(store, &tpl).await, 100);
    let ghost = task(9_999, 90, 6);
    let b = batch(&ghost, "r1", 0, Vec::new(), Vec::new());
    assert!(store.commit_batch(&b).await.is_err());
}

/// Step 1 alone (what a crash right after it leaves): the coupons, on their users' shards, and
/// nothing else. The replay finds them and counts every row once.
async fn a_crash_between_the_two_steps_is_replayed(ctx: Ctx) {
    let store = &ctx.store;
    let (tpl, t) = running(store, 78, 4, 2_000, 9_002).await;
    let coupons: Vec<BatchCoupon> = (0..10u64)
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
    let step_1: Vec<ClaimRecord> = coupons[..5].iter().map(|c| c.record.clone()).collect();
    store.insert_claimed(&step_1).await.unwrap();
    assert_eq!(stock_of(store, &tpl).await, 2_000);
    assert_eq!(get(store, t.id).await.processed_rows, 0);
    assert_eq!(coupons_of(store, &coupons).await, 5);

    let b = batch(&t, "r1", 0, coupons.clone(), Vec::new());
    assert_eq!(
        commit(store, &b).await,
        BatchOutcome::Applied {
            issued: 10,
            rejected: 0
        }
    );
    assert_eq!(stock_of(store, &tpl).await, 1_990);
    assert_eq!(coupons_of(store, &coupons).await, 10);
}
