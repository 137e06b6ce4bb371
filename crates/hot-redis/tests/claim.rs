//! What only `RedisHotState`'s claims show (the shared behaviour is in `conformance.rs`): what
//! a load writes to Redis, the stale-copy guard of a load, and statuses that never reopen.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use stampede_core::claim_ports::{ClaimOutcome, HotState, Reservation};
use stampede_domain::ids::DistributionId;
use stampede_domain::template::{Template, TemplateChange};
use stampede_hot_redis::RedisHotState;
use std::collections::HashMap;
use std::sync::Arc;

async fn hot(prefix: &TestPrefix) -> RedisHotState {
    RedisHotState::connect(&redis_url(), &prefix.0, Arc::new(FakeCoupons::default()))
        .await
        .expect("connect")
}

async fn claim(hot: &RedisHotState, t: &Template, user: i64) -> ClaimOutcome {
    let now = open_time();
    hot.claim(t, coupon(t, user, now), None, now)
        .await
        .expect("claim")
}

#[tokio::test]
async fn a_load_registers_the_claim_log_and_writes_the_meta() {
    let prefix = TestPrefix::new();
    let hot = hot(&prefix).await;
    let mut conn = conn().await;
    // Loaded by a claim, and by a distribution batch the way claims load it.
    let by_claim = template(1, 10, 1);
    assert!(matches!(
        claim(&hot, &by_claim, 7).await,
        ClaimOutcome::Claimed(_)
    ));
    let by_batch = template(30, 10, 1);
    let users = [uid(5)];
    let batch = Reservation {
        task: DistributionId::new(1).unwrap(),
        first_row: 1,
        users: &users,
        replay_only: false,
    };
    hot.reserve_batch(&by_batch, &batch, open_time())
        .await
        .unwrap()
        .unwrap();

    for t in [&by_claim, &by_batch] {
        let member: bool = redis::cmd("SISMEMBER")
            .arg(format!("{}:claimlogs", prefix.0))
            .arg(t.id.get())
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(member, "template {} is registered for persisters", t.id);
    }
    let meta: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("{}:{{tpl:1}}:meta", prefix.0))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(meta.get("status").map(String::as_str), Some("active"));
    assert_eq!(meta.get("per_user_limit").map(String::as_str), Some("1"));
    assert_eq!(meta.get("shop_id").map(String::as_str), Some("77"));
    assert_eq!(xlen(&mut conn, &prefix.0, by_claim.id).await, 1);
}

#[tokio::test]
async fn a_load_from_a_copy_older_than_a_change_is_refused() {
    let prefix = TestPrefix::new();
    let hot = hot(&prefix).await;
    let now = open_time();
    let t = template(9, 10, 3);
    let more = t.apply(TemplateChange::AddStock(5), now).unwrap().unwrap();
    hot.template_changed(&more).await.unwrap();
    assert_eq!(hot.stock(&t).await.unwrap(), None);
    assert!(
        hot.claim(&t, coupon(&t, 1, now), None, now).await.is_err(),
        "stale copy refused"
    );
    assert_eq!(hot.stock(&t).await.unwrap(), None);
    assert!(matches!(
        claim(&hot, &more, 1).await,
        ClaimOutcome::Claimed(_)
    ));
    assert_eq!(hot.stock(&t).await.unwrap(), Some(14));
}
