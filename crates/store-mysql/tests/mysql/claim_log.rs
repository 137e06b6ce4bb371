//! `ClaimLogStore`: idempotent inserts of claimed coupons and the exactly-once stock change.

use crate::helpers::*;
use stampede_core::claim_ports::{ClaimLogStore, ClaimRecord, CouponStore};
use stampede_core::ports::TemplateStore;
use std::collections::HashSet;

both_layouts!(
    insert_claimed_twice_writes_each_coupon_once,
    apply_claims_is_a_compare_and_set,
    concurrent_appliers_apply_once,
    a_migration_that_crashed_midway_reruns
);

async fn insert_claimed_twice_writes_each_coupon_once(ctx: Ctx) {
    let store = &ctx.store;
    let a = stocked(store, 1, 1, 10_000).await;
    let b = stocked(store, 2, 2, 10_000).await;
    let batch: Vec<ClaimRecord> = (0..1_000i64)
        .map(|i| {
            let c = claim(
                if i % 2 == 0 { &a } else { &b },
                10_000 + i,
                1 + i % 300,
                (i / 300 + 1) as u32,
                i % 50,
            );
            if i % 4 == 0 {
                keyed(c, &format!("k{i}"))
            } else {
                c
            }
        })
        .collect();
    store.insert_claimed(&batch).await.unwrap();
    // A replay of the whole batch, and one overlapping a new claim.
    store.insert_claimed(&batch).await.unwrap();
    let fresh = claim(&a, 50_000, 7, 9, 0);
    let mut overlap = batch[..100].to_vec();
    overlap.push(fresh.clone());
    store.insert_claimed(&overlap).await.unwrap();

    for c in batch.iter().chain([&fresh]) {
        assert_eq!(
            store
                .get_coupon(c.coupon.user_id, c.coupon.id)
                .await
                .unwrap()
                .as_ref(),
            Some(&c.coupon)
        );
    }
    let state = store.claim_state(a.id).await.unwrap();
    let held: u32 = state.user_counts.iter().map(|(_, n)| n).sum();
    assert_eq!(held, 501);
    let events = claimed_events(store).await;
    let ids: HashSet<i64> = events.iter().map(|e| e.aggregate_id).collect();
    assert_eq!(
        (events.len(), ids.len()),
        (1_001, 1_001),
        "one event per coupon"
    );

    // A claim whose slot already holds another coupon is skipped, and gets no event.
    let usurper = claim(
        &a,
        60_000,
        batch[0].coupon.user_id.get(),
        batch[0].coupon.seq,
        0,
    );
    store
        .insert_claimed(std::slice::from_ref(&usurper))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_coupon(usurper.coupon.user_id, usurper.coupon.id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(claimed_events(store).await.len(), 1_001);

    // Inserting coupons leaves the stock to `apply_claims`.
    assert_eq!(stock_of(store, &a).await, 10_000);
    store.insert_claimed(&[]).await.unwrap();
}

async fn apply_claims_is_a_compare_and_set(ctx: Ctx) {
    let store = &ctx.store;
    let t = stocked(store, 5, 3, 100).await;
    let other = stocked(store, 6, 3, 100).await;
    assert_eq!(store.applied_position(t.id).await.unwrap(), "0-0");

    assert!(
        store
            .apply_claims(t.id, "0-0", "1900000000000-4", 5)
            .await
            .unwrap()
    );
    assert_eq!(
        store.applied_position(t.id).await.unwrap(),
        "1900000000000-4"
    );
    assert_eq!(stock_of(store, &t).await, 95);

    // A second apply from the old position (a replay, or a slower persister) changes nothing.
    assert!(
        !store
            .apply_claims(t.id, "0-0", "1900000000000-4", 5)
            .await
            .unwrap()
    );
    assert!(
        !store
            .apply_claims(t.id, "0-0", "1900000000001-0", 2)
            .await
            .unwrap()
    );
    assert_eq!(
        store.applied_position(t.id).await.unwrap(),
        "1900000000000-4"
    );
    assert_eq!(stock_of(store, &t).await, 95);

    assert!(
        store
            .apply_claims(t.id, "1900000000000-4", "1900000000007-0", 3)
            .await
            .unwrap()
    );
    assert_eq!(stock_of(store, &t).await, 92);
    // The other template on the same shard is untouched.
    assert_eq!(store.applied_position(other.id).await.unwrap(), "0-0");
    assert_eq!(stock_of(store, &other).await, 100);

    // An unknown template is an error, never "someone else applied it".
    assert!(store.applied_position(tid(404)).await.is_err());
    assert!(store.apply_claims(tid(404), "0-0", "1-0", 1).await.is_err());
    // Template reads and changes still work beside the new column.
    assert_eq!(store.get_template(t.id).await.unwrap().unwrap().stock, 92);
}

async fn concurrent_appliers_apply_once(ctx: Ctx) {
    let t = stocked(&ctx.store, 7, 4, 1_000).await;
    let appliers: Vec<_> = (0..20)
        .map(|_| {
            let store = ctx.store.clone();
            tokio::spawn(
                async move { store.apply_claims(t.id, "0-0", "1900000000000-9", 10).await },
            )
        })
        .collect();
    let mut won = 0;
    for a in appliers {
        if a.await.unwrap().unwrap() {
            won += 1;
        }
    }
    assert_eq!(won, 1);
    assert_eq!(stock_of(&ctx.store, &t).await, 990);
    assert_eq!(
        ctx.store.applied_position(t.id).await.unwrap(),
        "1900000000000-9"
    );
}

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
