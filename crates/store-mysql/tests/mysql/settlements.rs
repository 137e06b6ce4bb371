//! What only the sharded MySQL store shows about settlements: orders on their users' shard
//! tables, filed in `order_directory`, and an expiry sweep that merges every database.
//! Everything the port answers is in the conformance suite (`conformance.rs`).

use crate::helpers::*;
use sqlx::mysql::MySqlPool;
use stampede_conformance::settlements::{coupons, lock, settled, settlement};
use stampede_core::settlement_ports::{LockOutcome, SettlementStore};
use std::collections::HashSet;

small_layouts!(expired_locks_span_every_shard);

async fn count(pool: &MySqlPool, sql: String) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn expired_locks_span_every_shard(ctx: Ctx) {
    let store = &ctx.store;
    let router = store.router();
    let t = settled(store).await;
    // User u locks order "exp-u", expiring u minutes after now(); users 1..=16, as the
    // suite's expiry scenario.
    let users: Vec<i64> = (1..=16).collect();
    for &u in &users {
        let cs = coupons(store, &t, u, &[u * 100]).await;
        let s = settlement(&format!("exp-{u:02}"), &[&cs[0]], u);
        assert!(matches!(lock(store, &s).await, LockOutcome::Locked(_)));
    }
    let dbs: HashSet<usize> = users.iter().map(|u| router.route(*u).database).collect();
    assert_eq!(
        dbs.len(),
        router.databases(),
        "users 1..=16 reach every database"
    );

    // Each order is on its user's shard table, and filed under its user in the directory of
    // the first database.
    let mut pools = Vec::new();
    for url in &ctx.cfg.databases {
        pools.push(MySqlPool::connect(url).await.unwrap());
    }
    for &u in &users {
        let shard = router.route(u);
        let on_shard = format!(
            "SELECT COUNT(*) FROM {} WHERE order_id = 'exp-{u:02}' AND user_id = {u}",
            shard.orders_table()
        );
        assert_eq!(count(&pools[shard.database], on_shard).await, 1, "user {u}");
        let filed = format!(
            "SELECT COUNT(*) FROM order_directory WHERE order_id = 'exp-{u:02}' AND user_id = {u}"
        );
        assert_eq!(count(&pools[0], filed).await, 1, "user {u}");
    }
    for pool in pools {
        pool.close().await;
    }

    // The sweep merges the databases' answers, oldest first.
    let expired: Vec<String> = store
        .expired_locks(at(16), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(order, _)| order)
        .collect();
    let want: Vec<String> = users.iter().map(|u| format!("exp-{u:02}")).collect();
    assert_eq!(expired, want);
}
