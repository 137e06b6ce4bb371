//! What only the sharded MySQL store shows about reminders: a delivery partition per shard
//! table (`p = database × M + table`) with its lease in its own database, the orders it keeps
//! beyond the port's, a delivery's events in its shard's outbox alone, and its checks of
//! partitions and lease owners. Everything the port answers is in the conformance suite
//! (`conformance.rs`).

use crate::helpers::*;
use sqlx::mysql::MySqlPool;
use stampede_conformance::reminders::{event, lease, rem, row, set, start};
use stampede_core::claim_ports::{CouponStore, OutboxEvent};
use stampede_core::reminder_ports::{DeliveryError, REMINDER_DUE, ReminderStore, RowUpdate};
use stampede_domain::reminder::{Channel, ReminderSet};
use stampede_store_mysql::MysqlStore;
use std::collections::HashSet;

small_layouts!(
    partitions_are_the_shard_tables,
    due_ties_and_a_users_rows_are_ordered,
    a_delivery_stays_on_its_shard
);

fn partition_of(store: &MysqlStore, user: i64) -> u32 {
    let s = store.router().route(user);
    (s.database * store.router().tables_per_database() + s.table) as u32
}

/// `n` user ids (from 1 up) whose rows are in partition `p`.
fn users_in(store: &MysqlStore, p: u32, n: usize) -> Vec<i64> {
    (1..)
        .filter(|u| partition_of(store, *u) == p)
        .take(n)
        .collect()
}

/// A column of strings, read on a connection of its own to database `database`.
async fn strings(ctx: &Ctx, database: usize, sql: String) -> Vec<String> {
    let pool = MySqlPool::connect(&ctx.cfg.databases[database])
        .await
        .unwrap();
    let got: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    got
}

async fn partitions_are_the_shard_tables(ctx: Ctx) {
    let store = &ctx.store;
    let layout = ctx.cfg.databases.len() as u32 * ctx.cfg.tables_per_database;
    assert_eq!(store.partitions(), layout);
    for u in 1..=120 {
        set(store, u, 1 + u % 3, rem(Channel::App, 5)).await;
    }
    let mut used = HashSet::new();
    for p in 0..store.partitions() {
        for r in store.due_reminders(p, start(), 1_000).await.unwrap() {
            assert_eq!(partition_of(store, r.user_id.get()), p, "{r:?}");
            used.insert(p);
        }
    }
    assert_eq!(used.len() as u32, layout, "every partition holds some rows");

    // A partition's lease is the row of its table index in its own database.
    for p in 0..layout {
        lease(store, p, &format!("node-{p}"), now()).await.unwrap();
    }
    let tables = ctx.cfg.tables_per_database;
    for database in 0..ctx.cfg.databases.len() {
        let owners = strings(
            &ctx,
            database,
            "SELECT owner FROM reminder_leases ORDER BY part".to_owned(),
        )
        .await;
        let want: Vec<String> = (0..tables)
            .map(|t| format!("node-{}", database as u32 * tables + t))
            .collect();
        assert_eq!(owners, want, "database {database}");
    }
}

/// Ties on `next_due` go by user, then template (the order of the `next_due_ms` index); a
/// user's rows come by template id.
async fn due_ties_and_a_users_rows_are_ordered(ctx: Ctx) {
    let store = &ctx.store;
    let p = store.partitions() - 1;
    let users = users_in(store, p, 2);
    // Set out of order, all due together.
    for (u, t) in [(users[1], 2), (users[1], 1), (users[0], 3), (users[0], 1)] {
        set(store, u, t, rem(Channel::App, 5)).await;
    }
    let order: Vec<(i64, i64)> = store
        .due_reminders(p, start(), 100)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.user_id.get(), r.template_id.get()))
        .collect();
    assert_eq!(
        order,
        [(users[0], 1), (users[0], 3), (users[1], 1), (users[1], 2)]
    );
    for (u, want) in [(users[0], [1, 3]), (users[1], [1, 2])] {
        let templates: Vec<i64> = store
            .user_reminders(uid(u))
            .await
            .unwrap()
            .iter()
            .map(|r| r.template_id.get())
            .collect();
        assert_eq!(templates, want, "user {u}");
    }
}

async fn a_delivery_stays_on_its_shard(ctx: Ctx) {
    let store = &ctx.store;
    let p = store.partitions() - 1;
    let users = users_in(store, p, 3);
    let app30 = rem(Channel::App, 30);
    for u in &users {
        set(store, *u, 1, app30).await;
    }
    let l = lease(store, p, "node-a", now()).await.unwrap();
    let update = |user: i64| RowUpdate {
        user_id: uid(user),
        template_id: tid(1),
        read_bits: ReminderSet::EMPTY.with(app30),
        done: ReminderSet::EMPTY.with(app30),
        next_due: None,
    };
    let events: Vec<OutboxEvent> = users.iter().map(|u| event(*u, 1, 30)).collect();
    let updates: Vec<RowUpdate> = users.iter().map(|u| update(*u)).collect();
    store
        .record_deliveries(&l, at(1), &updates, &events, now())
        .await
        .unwrap();

    // The events are in the outbox of the users' own shard table, and only there.
    let home = store.router().route(users[0]);
    let expected: HashSet<String> = events.iter().map(|e| e.id.clone()).collect();
    for shard in store.router().all() {
        let sql = format!(
            "SELECT event_id FROM {} WHERE kind = '{REMINDER_DUE}'",
            shard.outbox_table()
        );
        let ids: HashSet<String> = strings(&ctx, shard.database, sql)
            .await
            .into_iter()
            .collect();
        if shard == home {
            assert_eq!(ids, expected);
        } else {
            assert!(ids.is_empty(), "{shard:?}: {ids:?}");
        }
    }

    // A row of another partition is refused, writing nothing.
    if store.partitions() > 1 {
        let stranger = users_in(store, 0, 1)[0];
        set(store, stranger, 1, app30).await;
        let before = row(store, stranger, 1).await.unwrap();
        let wrong = store
            .record_deliveries(
                &l,
                at(1),
                &[update(stranger)],
                &[event(stranger, 1, 30)],
                now(),
            )
            .await;
        assert!(matches!(wrong, Err(DeliveryError::Store(_))), "{wrong:?}");
        assert_eq!(row(store, stranger, 1).await.unwrap(), before);
        let all = store.outbox_events(REMINDER_DUE, 100).await.unwrap();
        assert_eq!(all.len(), 3);
    }

    // An empty owner is refused: it is the value of a lease row nobody took yet.
    assert!(store.lease_partition(p, "", now(), now()).await.is_err());
}
