//! What only the sharded layout shows about coupons: users really spread over every table.
//! Everything else coupons do is in the conformance suite (`conformance.rs`).

use crate::helpers::*;
use stampede_core::claim_ports::{ClaimRecord, CouponStore};
use std::collections::HashSet;

both_layouts!(users_spread_over_every_table);

async fn users_spread_over_every_table(ctx: Ctx) {
    let store = &ctx.store;
    let t = stocked(store, 1, 1, 1_000).await;
    let claims: Vec<ClaimRecord> = (1..=700).map(|u| claim(&t, u, u, 1, 0)).collect();
    store.commit_claims(&claims).await.unwrap();
    let shards: HashSet<_> = (1..=700).map(|u| store.router().route(u)).collect();
    assert_eq!(shards.len(), store.router().all().count());
    for c in &claims {
        let got = store
            .get_coupon(c.coupon.user_id, c.coupon.id)
            .await
            .unwrap();
        assert_eq!(got.as_ref(), Some(&c.coupon));
    }
}
