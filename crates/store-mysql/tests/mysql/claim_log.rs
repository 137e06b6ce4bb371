//! The claim log's migration (version 2) rerun after a crash; what `ClaimLogStore` does is in
//! the conformance suite (`conformance.rs`).

use crate::helpers::*;
use stampede_core::claim_ports::ClaimLogStore;

both_layouts!(a_migration_that_crashed_midway_reruns);

async fn a_migration_that_crashed_midway_reruns(ctx: Ctx) {
    // Forget that version 2 was applied: its tables and its column are all there already,
    // as after a crash just before the version row was written.
    for url in &ctx.cfg.databases {
        let pool = sqlx::mysql::MySqlPool::connect(url).await.unwrap();
        sqlx::query("DELETE FROM schema_migrations WHERE version = 2")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    assert_eq!(ctx.store.migrate().await.unwrap(), ctx.cfg.databases.len());
    assert_eq!(ctx.store.migrate().await.unwrap(), 0);
    let t = stocked(&ctx.store, 8, 1, 10).await;
    assert_eq!(ctx.store.applied_position(t.id).await.unwrap(), "0-0");
}
