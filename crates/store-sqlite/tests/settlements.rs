//! What only the SQLite store shows about settlements: the rows of its `orders` and
//! `settlements` tables, counted behind its back. Everything the port answers is in the
//! conformance suite (`conformance.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use sqlx::{AssertSqlSafe, Row};
use stampede_conformance::fixtures::race;
use stampede_conformance::settlements::{coupons, lock, settled, settlement};
use stampede_core::settlement_ports::LockOutcome;
use stampede_store_sqlite::{SqliteOptions, SqliteStore};
use std::path::PathBuf;
use std::sync::Arc;
use tempfile::TempDir;

struct Db {
    /// Keeps the file alive.
    _dir: TempDir,
    path: PathBuf,
    store: Arc<SqliteStore>,
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
            store: Arc::new(store),
        }
    }

    /// A count, read on a connection of its own.
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

    /// Rows of `orders` and `settlements` of `order`.
    async fn rows_of(&self, order: &str) -> (i64, i64) {
        (
            self.count(&format!(
                "SELECT COUNT(*) FROM orders WHERE order_id = '{order}'"
            ))
            .await,
            self.count(&format!(
                "SELECT COUNT(*) FROM settlements WHERE order_id = '{order}'"
            ))
            .await,
        )
    }
}

/// A lock writes one order row and a line per coupon; a repeated, refused or raced one writes
/// no row of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_write_one_order_row_and_a_line_per_coupon() {
    let db = Db::open().await;
    let store = &*db.store;
    let t = settled(store).await;
    let cs = coupons(store, &t, 1, &[11, 12, 13, 14]).await;
    let theirs = coupons(store, &t, 2, &[21]).await;
    let s = settlement("ord-1", &[&cs[1], &cs[0]], 15);
    assert!(matches!(lock(store, &s).await, LockOutcome::Locked(_)));
    assert_eq!(db.rows_of("ord-1").await, (1, 2));

    // Again, with other coupons under the same id, and by another user: nothing more.
    for again in [s.clone(), settlement("ord-1", &[&cs[2]], 30)] {
        assert!(matches!(lock(store, &again).await, LockOutcome::Exists(_)));
    }
    let other = settlement("ord-1", &[&theirs[0]], 15);
    assert!(matches!(lock(store, &other).await, LockOutcome::OtherUser));
    assert_eq!(db.rows_of("ord-1").await, (1, 2));

    // A coupon already locked: the refused order leaves no row.
    let refused = settlement("ord-b", &[&cs[2], &cs[0]], 15);
    assert!(matches!(
        lock(store, &refused).await,
        LockOutcome::NotUsable { .. }
    ));
    assert_eq!(db.rows_of("ord-b").await, (0, 0));

    // 20 orders racing for one coupon, then 20 copies of one lock: one order row each.
    let c = cs[2].clone();
    race(20, |i| {
        let (store, c) = (db.store.clone(), c.clone());
        async move { lock(&*store, &settlement(&format!("race-{i}"), &[&c], 15)).await }
    })
    .await;
    assert_eq!(db.count("SELECT COUNT(*) FROM orders").await, 2);
    let d = cs[3].clone();
    race(20, |_| {
        let (store, d) = (db.store.clone(), d.clone());
        async move { lock(&*store, &settlement("same", &[&d], 15)).await }
    })
    .await;
    assert_eq!(db.rows_of("same").await, (1, 1));
    assert_eq!(db.count("SELECT COUNT(*) FROM orders").await, 3);
    assert_eq!(db.count("SELECT COUNT(*) FROM settlements").await, 4);
}
