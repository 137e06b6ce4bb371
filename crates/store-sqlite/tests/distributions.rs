//! What only the SQLite store shows about distributions: a batch is ONE transaction (a write
//! failing midway, or a batch not applied, leaves no row behind), coupon ids are unique
//! store-wide, the completion event is rebuilt from the stored row, and the schema's own
//! guards (a lease set behind the store's back, file chunks of a stored task). Everything
//! else distributions do is in the conformance suite (`conformance.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use sqlx::{AssertSqlSafe, Row};
use stampede_conformance::distributions::*;
use stampede_conformance::fixtures::*;
use stampede_core::claim_ports::CouponStore;
use stampede_core::distribution_ports::{
    BatchCommit, BatchCoupon, BatchOutcome, DistributionStore, FinishGuard,
};
use stampede_core::events::{
    DISTRIBUTION_COMPLETED, distribution_completed_event, distribution_summary,
};
use stampede_domain::distribution::{DistributionStatus, RowFailure};
use stampede_domain::template::Template;
use stampede_store_sqlite::{SqliteOptions, SqliteStore};
use std::path::PathBuf;
use tempfile::TempDir;

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

    /// Stored coupons and failed rows.
    async fn rows(&self) -> (i64, i64) {
        (
            self.count("SELECT COUNT(*) FROM user_coupons").await,
            self.count("SELECT COUNT(*) FROM distribution_failures")
                .await,
        )
    }
}

#[tokio::test]
async fn a_write_failing_midway_leaves_nothing_behind() {
    let db = Db::open().await;
    let store = &db.store;
    let (tpl, t) = running(store, 92, 6, 1_000, 9_006).await;
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
        assert_eq!(db.rows().await, (0, 0));
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

/// Coupons go in with the checkpoint here, so a batch that is not applied stores not even
/// its coupons (MySQL stores them first, and may keep them); a batch of a task that does not
/// exist is answered `LeaseLost` (nobody holds it).
#[tokio::test]
async fn a_batch_not_applied_leaves_no_row() {
    let db = Db::open().await;
    let store = &db.store;
    let (tpl, t) = running(store, 77, 3, 1_000, 9_001).await;
    let other = stocked(store, 79, 3, 1_000).await;
    let rows = |t: &Template, task, n: i64| -> Vec<BatchCoupon> {
        (0..n)
            .map(|i| coupon_row(t, task, i as u64 + 2, 70_000 + i, 555 + i, 1))
            .collect()
    };

    let stale = batch(&t, "r0", 0, rows(&tpl, t.id, 2), Vec::new());
    assert_eq!(commit(store, &stale).await, BatchOutcome::LeaseLost);
    let ghost = task(9_999, tpl.id.get(), 3);
    for coupons in [rows(&tpl, ghost.id, 1), Vec::new()] {
        let b = batch(&ghost, "r1", 0, coupons, Vec::new());
        assert_eq!(commit(store, &b).await, BatchOutcome::LeaseLost);
    }
    let missing = Template {
        id: tid(999),
        ..tpl.clone()
    };
    for template in [&other, &missing] {
        let foreign = batch(&t, "r1", 0, rows(template, t.id, 1), Vec::new());
        let foreign = BatchCommit {
            template_id: template.id,
            ..foreign
        };
        assert!(store.commit_batch(&foreign).await.is_err());
    }
    assert_eq!(db.rows().await, (0, 0));

    // The holder's batch: each coupon under its row's claim_key.
    let good = batch(&t, "r1", 0, rows(&tpl, t.id, 8), Vec::new());
    assert!(matches!(
        commit(store, &good).await,
        BatchOutcome::Applied { issued: 8, .. }
    ));
    let keys = db
        .count(&format!(
            "SELECT COUNT(*) FROM user_coupons WHERE template_id = 77 AND claim_key = 'dist {} ' || (id - 69998)",
            t.id
        ))
        .await;
    assert_eq!(keys, 8, "each coupon stored with its row's claim_key");
}

/// Coupon ids are unique across the whole store here, so a coupon whose id is already some
/// other user's loses its row like a taken slot (MySQL only sees ids within one shard).
#[tokio::test]
async fn a_coupon_whose_id_is_in_use_is_rejected() {
    let db = Db::open().await;
    let store = &db.store;
    let (tpl, t) = running(store, 88, 5, 100, 9_003).await;
    let first = batch(
        &t,
        "r1",
        0,
        vec![coupon_row(&tpl, t.id, 2, 501, 2_002, 1)],
        Vec::new(),
    );
    assert!(matches!(
        commit(store, &first).await,
        BatchOutcome::Applied { issued: 1, .. }
    ));
    let clash = vec![
        coupon_row(&tpl, t.id, 3, 501, 4_004, 1),
        coupon_row(&tpl, t.id, 4, 503, 5_005, 1),
    ];
    assert_eq!(
        commit(store, &batch(&t, "r1", 1, clash.clone(), Vec::new())).await,
        BatchOutcome::Applied {
            issued: 1,
            rejected: 1
        }
    );
    assert_eq!(stock_of(store, &tpl).await, 98);
    assert_eq!(coupons_of(store, &clash).await, 1);
    assert_eq!(
        all_failures(store, &t).await,
        [failure(3, "4004", RowFailure::StoreRejected)]
    );
}

/// The store writes the summary of the row it stored, whatever the caller's event says (here
/// one built from the task before it started).
#[tokio::test]
async fn the_completion_event_carries_the_stored_row() {
    let db = Db::open().await;
    let store = &db.store;
    let t = with_template(store, 1, 1).await;
    created(store, &t).await;
    let stale = distribution_completed_event(&t);
    let done = store
        .finish_distribution(
            t.id,
            t.shop_id,
            FinishGuard::Pending,
            DistributionStatus::Canceled,
            Some("canceled"),
            at(3),
            &stale,
        )
        .await
        .unwrap()
        .unwrap();
    let events = store
        .outbox_events(DISTRIBUTION_COMPLETED, 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id, stale.id);
    assert_ne!(events[0].payload, stale.payload);
    assert_eq!(events[0].payload, distribution_summary(&done).to_string());
}

/// A lease on a pending task (no runner leaves one: set behind the store's back) keeps
/// anyone from canceling it until it runs out.
#[tokio::test]
async fn a_pending_task_under_a_lease_is_not_canceled() {
    let db = Db::open().await;
    let store = &db.store;
    let t = with_template(store, 4, 4).await;
    created(store, &t).await;
    let end = at(3).as_millisecond() + 1;
    db.raw(&format!(
        "UPDATE distributions SET lease_owner = 'r9', lease_until_ms = {end} WHERE id = 4"
    ))
    .await;
    let cancel = |when| {
        finish(
            store,
            &t,
            FinishGuard::Pending,
            DistributionStatus::Canceled,
            None,
            when,
        )
    };
    assert_eq!(cancel(at(3)).await, None);
    assert_eq!(get(store, t.id).await.status, DistributionStatus::Pending);
    assert!(cancel(at(4)).await.is_some());
}

/// Chunks are rows of a stored task (a foreign key): one per chunk, none for a task that is
/// not stored.
#[tokio::test]
async fn file_chunks_belong_to_a_stored_task() {
    let db = Db::open().await;
    let store = &db.store;
    let t = with_template(store, 1, 5).await;
    created(store, &t).await;
    for (n, bytes) in [(0, &b"head"[..]), (1, b"tail"), (1, b"new tail")] {
        store
            .put_file_chunk(t.id, t.shop_id, n, bytes)
            .await
            .unwrap();
    }
    assert_eq!(db.count("SELECT COUNT(*) FROM distribution_files").await, 2);
    assert!(
        store
            .put_file_chunk(did(2), t.shop_id, 0, b"orphan")
            .await
            .is_err()
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM distribution_files").await, 2);
    assert_eq!(
        store
            .file_chunk(t.id, t.shop_id, 0)
            .await
            .unwrap()
            .as_deref(),
        Some(&b"head"[..])
    );
}
