//! `ClaimLogStore`, the distributed persisters' bookkeeping: idempotent inserts of claimed
//! coupons, and a template's stock change applied exactly once by compare-and-set on its
//! log position.

use crate::StoreFixture;
use crate::fixtures::*;
use async_trait::async_trait;
use stampede_core::claim_ports::{ClaimLogStore, ClaimRecord};
use std::collections::HashSet;
use std::sync::Arc;

/// A system of record that also keeps the claim log's bookkeeping.
#[async_trait]
pub trait ClaimLogFixture: StoreFixture {
    fn claim_log(&self) -> Arc<dyn ClaimLogStore>;
}

/// Runs every `ClaimLogStore` scenario; `$run` takes `impl AsyncFnOnce(&dyn ClaimLogFixture)`.
#[macro_export]
macro_rules! claim_log_store_suite {
    ($run:path) => {
        mod claim_log_store {
            #[allow(unused_imports)]
            use super::*;
            $crate::__scenarios!($run; claim_log;
                insert_claimed_twice_writes_each_coupon_once,
                apply_claims_is_a_compare_and_set,
                concurrent_appliers_apply_once,
            );
        }
    };
}

pub async fn insert_claimed_twice_writes_each_coupon_once(f: &dyn ClaimLogFixture) {
    let (s, log) = (f.store(), f.claim_log());
    let store = &*s;
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
    log.insert_claimed(&batch).await.unwrap();
    // A replay of the whole batch, and one overlapping a new claim.
    log.insert_claimed(&batch).await.unwrap();
    let fresh = claim(&a, 50_000, 7, 9, 0);
    let mut overlap = batch[..100].to_vec();
    overlap.push(fresh.clone());
    log.insert_claimed(&overlap).await.unwrap();

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
    assert_eq!(state.user_seqs.len(), 501);
    let events = claimed_events(store).await;
    let ids: HashSet<i64> = events.iter().map(|e| e.aggregate_id).collect();
    assert_eq!(
        (events.len(), ids.len()),
        (1_001, 1_001),
        "one event per coupon"
    );

    // A claim whose slot already holds another coupon is skipped, and gets no event.
    let first = &batch[0].coupon;
    let usurper = claim(&a, 60_000, first.user_id.get(), first.seq, 0);
    log.insert_claimed(std::slice::from_ref(&usurper))
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
    log.insert_claimed(&[]).await.unwrap();
}

pub async fn apply_claims_is_a_compare_and_set(f: &dyn ClaimLogFixture) {
    let (s, log) = (f.store(), f.claim_log());
    let store = &*s;
    let t = stocked(store, 5, 3, 100).await;
    let other = stocked(store, 6, 3, 100).await;
    assert_eq!(log.applied_position(t.id).await.unwrap(), "0-0");

    assert!(
        log.apply_claims(t.id, "0-0", "1900000000000-4", 5)
            .await
            .unwrap()
    );
    assert_eq!(log.applied_position(t.id).await.unwrap(), "1900000000000-4");
    assert_eq!(stock_of(store, &t).await, 95);

    // A second apply from the old position (a replay, or a slower persister) changes nothing.
    assert!(
        !log.apply_claims(t.id, "0-0", "1900000000000-4", 5)
            .await
            .unwrap()
    );
    assert!(
        !log.apply_claims(t.id, "0-0", "1900000000001-0", 2)
            .await
            .unwrap()
    );
    assert_eq!(log.applied_position(t.id).await.unwrap(), "1900000000000-4");
    assert_eq!(stock_of(store, &t).await, 95);

    assert!(
        log.apply_claims(t.id, "1900000000000-4", "1900000000007-0", 3)
            .await
            .unwrap()
    );
    assert_eq!(stock_of(store, &t).await, 92);
    // Another template of the same shop is untouched.
    assert_eq!(log.applied_position(other.id).await.unwrap(), "0-0");
    assert_eq!(stock_of(store, &other).await, 100);

    // An unknown template is an error, never "someone else applied it".
    assert!(log.applied_position(tid(404)).await.is_err());
    assert!(log.apply_claims(tid(404), "0-0", "1-0", 1).await.is_err());
    // Template reads still work beside the position.
    assert_eq!(store.get_template(t.id).await.unwrap().unwrap().stock, 92);
}

pub async fn concurrent_appliers_apply_once(f: &dyn ClaimLogFixture) {
    let s = f.store();
    let t = stocked(&*s, 7, 4, 1_000).await;
    let id = t.id;
    let outcomes = race(20, |_| {
        let log = f.claim_log();
        async move { log.apply_claims(id, "0-0", "1900000000000-9", 10).await }
    })
    .await;
    let won = outcomes
        .into_iter()
        .filter(|o| *o.as_ref().unwrap())
        .count();
    assert_eq!(won, 1);
    assert_eq!(stock_of(&*s, &t).await, 990);
    assert_eq!(
        f.claim_log().applied_position(t.id).await.unwrap(),
        "1900000000000-9"
    );
}
