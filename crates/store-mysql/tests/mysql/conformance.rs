//! The MySQL store against every storage port's conformance suite (`stampede-conformance`),
//! on a single shard (1×1) and on a sharded layout (2×4), each scenario on fresh databases.

use crate::helpers::{Ctx, with_store};
use async_trait::async_trait;
use stampede_conformance::claim_log::ClaimLogFixture;
use stampede_conformance::{StoreFixture, SystemOfRecord};
use stampede_core::claim_ports::ClaimLogStore;
use stampede_store_mysql::MysqlStore;
use std::sync::Arc;

struct Mysql(Ctx);

#[async_trait]
impl StoreFixture for Mysql {
    fn store(&self) -> Arc<dyn SystemOfRecord> {
        Arc::new(self.0.store.clone())
    }

    async fn reopen(&self) -> Arc<dyn SystemOfRecord> {
        Arc::new(
            MysqlStore::open(&self.0.cfg)
                .await
                .expect("reopen the store"),
        )
    }
}

impl ClaimLogFixture for Mysql {
    fn claim_log(&self) -> Arc<dyn ClaimLogStore> {
        Arc::new(self.0.store.clone())
    }
}

async fn on_layout(databases: u32, tables: u32, scenario: impl AsyncFnOnce(&Mysql)) {
    with_store(databases, tables, async |ctx| scenario(&Mysql(ctx)).await).await;
}

pub async fn one_by_one(scenario: impl AsyncFnOnce(&dyn StoreFixture)) {
    on_layout(1, 1, async |m| scenario(m).await).await;
}

pub async fn two_by_four(scenario: impl AsyncFnOnce(&dyn StoreFixture)) {
    on_layout(2, 4, async |m| scenario(m).await).await;
}

pub async fn log_one_by_one(scenario: impl AsyncFnOnce(&dyn ClaimLogFixture)) {
    on_layout(1, 1, async |m| scenario(m).await).await;
}

pub async fn log_two_by_four(scenario: impl AsyncFnOnce(&dyn ClaimLogFixture)) {
    on_layout(2, 4, async |m| scenario(m).await).await;
}

mod on_1x1 {
    stampede_conformance::system_of_record_suite!(crate::conformance::one_by_one);
    stampede_conformance::claim_log_store_suite!(crate::conformance::log_one_by_one);
}

mod on_2x4 {
    stampede_conformance::system_of_record_suite!(crate::conformance::two_by_four);
    stampede_conformance::claim_log_store_suite!(crate::conformance::log_two_by_four);
}
