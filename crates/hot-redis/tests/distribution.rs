//! What only `RedisHotState`'s distribution batches show (the shared behaviour is in
//! `conformance.rs`): a batch's answer is stored and replayed, so `abandon_batch` keeps the
//! reservation; stored answers and return guards expire only after any retry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use stampede_core::claim_ports::{HotState, Reservation, RowReservation};
use stampede_domain::coupon::ClaimRefusal;
use stampede_domain::ids::{DistributionId, UserId};
use stampede_domain::template::{Template, TemplateChange};
use stampede_hot_redis::RedisHotState;
use std::collections::HashMap;
use std::sync::Arc;

async fn hot(prefix: &TestPrefix) -> RedisHotState {
    RedisHotState::connect(&redis_url(), &prefix.0, Arc::new(FakeCoupons::default()))
        .await
        .expect("connect")
}

fn task(n: i64) -> DistributionId {
    DistributionId::new(n).expect("positive")
}

fn batch(task_id: i64, first_row: u64, users: &[UserId], replay_only: bool) -> Reservation<'_> {
    Reservation {
        task: task(task_id),
        first_row,
        users,
        replay_only,
    }
}

async fn reserve(hot: &RedisHotState, t: &Template, r: &Reservation<'_>) -> Vec<RowReservation> {
    hot.reserve_batch(t, r, open_time())
        .await
        .expect("reserve_batch")
        .expect("an answer")
}

async fn pttl(prefix: &TestPrefix, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(format!("{}:{key}", prefix.0))
        .query_async(&mut conn().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_batch_gets_its_stored_answer_again() {
    let prefix = TestPrefix::new();
    let hot = hot(&prefix).await;
    let now = open_time();
    let t = template(23, 4, 1);
    let u: Vec<UserId> = [1, 2, 1, 3, 4, 5].into_iter().map(uid).collect();
    let first = reserve(&hot, &t, &batch(7, 5_001, &u, false)).await;
    let ok = RowReservation::Reserved { seq: 1 };
    let no = RowReservation::Refused;
    assert_eq!(
        first,
        vec![
            ok,
            ok,
            no(ClaimRefusal::LimitReached),
            ok,
            ok,
            no(ClaimRefusal::SoldOut),
        ]
    );
    let counts = || async {
        let counts: HashMap<String, i64> = redis::cmd("HGETALL")
            .arg(format!("{}:{{tpl:23}}:users", prefix.0))
            .query_async(&mut conn().await)
            .await
            .unwrap();
        counts
    };
    let before = counts().await;
    assert_eq!(hot.stock(&t).await.unwrap(), Some(0));

    // Same (task, first row): the same answer, nothing reserved again, even later and with
    // the template terminated meanwhile.
    assert_eq!(reserve(&hot, &t, &batch(7, 5_001, &u, false)).await, first);
    let terminated = t.apply(TemplateChange::Terminate, now).unwrap().unwrap();
    hot.template_changed(&terminated).await.unwrap();
    assert_eq!(
        hot.reserve_batch(&terminated, &batch(7, 5_001, &u, false), now + ms(1_000))
            .await
            .unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        reserve(&hot, &terminated, &batch(7, 5_001, &u, true)).await,
        first
    );
    assert_eq!(hot.stock(&t).await.unwrap(), Some(0));
    assert_eq!(counts().await, before);

    // The answer expires, after far longer than any retry.
    let ttl = pttl(&prefix, "{tpl:23}:dist:7:5001").await;
    assert!(ttl > 6 * 24 * 3_600_000, "ttl {ttl}");

    // abandon_batch keeps the reservation for the retry.
    hot.abandon_batch(&t, &batch(7, 5_001, &u, false), &first)
        .await
        .unwrap();
    assert_eq!(hot.stock(&t).await.unwrap(), Some(0));
    assert_eq!(reserve(&hot, &t, &batch(7, 5_001, &u, false)).await, first);

    // An empty batch's answer is stored too.
    let open = template(31, 10, 1);
    assert_eq!(reserve(&hot, &open, &batch(1, 1, &[], false)).await, []);
    assert_eq!(reserve(&hot, &open, &batch(1, 1, &[], true)).await, []);
}

#[tokio::test]
async fn a_return_guard_outlives_any_retry() {
    let prefix = TestPrefix::new();
    let hot = hot(&prefix).await;
    let t = template(34, 10, 1);
    let u: Vec<UserId> = (1..=6).map(uid).collect();
    reserve(&hot, &t, &batch(3, 1, &u, false)).await;
    hot.return_stock(&t, task(3), 1, 2).await.unwrap();
    hot.return_stock(&t, task(5), 1, 0).await.unwrap();
    assert_eq!(hot.stock(&t).await.unwrap(), Some(6));
    let exists: i64 = redis::cmd("EXISTS")
        .arg(format!("{}:{{tpl:34}}:distret:5:1", prefix.0))
        .query_async(&mut conn().await)
        .await
        .unwrap();
    assert_eq!(exists, 0, "n = 0 leaves no guard");
    let ttl = pttl(&prefix, "{tpl:34}:distret:3:1").await;
    assert!(ttl > 6 * 24 * 3_600_000, "ttl {ttl}");
}
