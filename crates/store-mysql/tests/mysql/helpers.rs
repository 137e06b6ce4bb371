//! Fresh databases per test; the builders are the conformance suite's fixtures.

use futures::FutureExt;
use stampede_store_mysql::{MysqlConfig, MysqlStore};
use std::future::Future;
use std::panic::AssertUnwindSafe;

pub fn server_url() -> String {
    std::env::var("STAMPEDE_TEST_MYSQL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
}

/// A layout of `databases` × `tables` over fresh, uniquely named databases.
pub fn fresh_config(databases: u32, tables: u32) -> MysqlConfig {
    let suffix = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
    let server = server_url();
    MysqlConfig {
        databases: (0..databases)
            .map(|i| format!("{server}/stampede_t_{suffix}_{i}"))
            .collect(),
        tables_per_database: tables,
        max_connections_per_database: 8,
    }
}

pub struct Ctx {
    pub store: MysqlStore,
    pub cfg: MysqlConfig,
}

/// Runs `scenario` on a store over fresh databases, and drops them even if it panics.
pub async fn with_store<F, Fut>(databases: u32, tables: u32, scenario: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let cfg = fresh_config(databases, tables);
    let store = MysqlStore::open(&cfg).await.expect("open the store");
    let outcome = AssertUnwindSafe(scenario(Ctx {
        store: store.clone(),
        cfg,
    }))
    .catch_unwind()
    .await;
    store
        .drop_databases()
        .await
        .expect("drop the test databases");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Generates `$scenario::one_by_one` and `$scenario::two_by_four` tests running `$scenario`.
macro_rules! both_layouts {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn one_by_one() {
                crate::helpers::with_store(1, 1, super::$scenario).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn two_by_four() {
                crate::helpers::with_store(2, 4, super::$scenario).await;
            }
        }
    )+};
}

/// Generates `$scenario::one_by_one` and `$scenario::two_by_two` tests running `$scenario`.
macro_rules! small_layouts {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn one_by_one() {
                crate::helpers::with_store(1, 1, super::$scenario).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn two_by_two() {
                crate::helpers::with_store(2, 2, super::$scenario).await;
            }
        }
    )+};
}

pub use stampede_conformance::fixtures::*;
