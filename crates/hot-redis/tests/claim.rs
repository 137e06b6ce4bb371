//! `RedisHotState` against a real Redis: loading, every refusal, replays, and a flash-sale race.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use stampede_core::claim_ports::{ClaimOutcome, ClaimState, HotState};
use stampede_domain::coupon::{ClaimRefusal, UserCoupon};
use stampede_domain::template::{Template, TemplateChange};
use stampede_hot_redis::RedisHotState;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

async fn hot(prefix: &TestPrefix, coupons: Arc<FakeCoupons>) -> RedisHotState {
    RedisHotState::connect(&redis_url(), &prefix.0, coupons)
        .await
        .expect("connect")
}

async fn claim(
    hot: &RedisHotState,
    t: &Template,
    user: i64,
    key: Option<&str>,
    now: jiff::Timestamp,
) -> ClaimOutcome {
    hot.claim(t, coupon(t, user, now), key, now)
        .await
        .expect("claim")
}

fn claimed(o: ClaimOutcome) -> UserCoupon {
    match o {
        ClaimOutcome::Claimed(c) => c,
        other => panic!("expected Claimed, got {other:?}"),
    }
}

fn refused(r: ClaimRefusal) -> ClaimOutcome {
    ClaimOutcome::Refused(r)
}

#[tokio::test]
async fn loads_on_first_claim_with_counts_and_keys_from_the_system_of_record() {
    let prefix = TestPrefix::new();
    let t = template(1, 10, 1);
    let now = open_time();
    let old = {
        let mut c = coupon(&t, 6, now);
        c.seq = 1;
        c
    };
    let fake = Arc::new(FakeCoupons::default());
    fake.states.lock().unwrap().insert(
        t.id,
        ClaimState {
            user_counts: vec![(uid(5), 1), (uid(6), 1)],
            keyed: vec![("k-old".into(), old.clone())],
        },
    );
    let hot = hot(&prefix, fake.clone()).await;

    assert_eq!(
        hot.stock(&t).await.unwrap(),
        None,
        "not loaded before the first claim"
    );
    assert_eq!(
        claim(&hot, &t, 5, None, now).await,
        refused(ClaimRefusal::LimitReached)
    );
    assert_eq!(hot.stock(&t).await.unwrap(), Some(10));
    assert_eq!(
        claim(&hot, &t, 6, Some("k-old"), now).await,
        ClaimOutcome::Replayed(old)
    );
    let c = claimed(claim(&hot, &t, 7, None, now).await);
    assert_eq!((c.seq, c.template_id, c.user_id), (1, t.id, uid(7)));
    assert_eq!(hot.stock(&t).await.unwrap(), Some(9));
    assert_eq!(
        fake.claim_state_calls.load(Ordering::Relaxed),
        1,
        "loaded once"
    );

    let mut conn = conn().await;
    let member: bool = redis::cmd("SISMEMBER")
        .arg(format!("{}:claimlogs", prefix.0))
        .arg(t.id.get())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(member, "the template is registered for persisters");
    let meta: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("{}:{{tpl:1}}:meta", prefix.0))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(meta.get("status").map(String::as_str), Some("active"));
    assert_eq!(meta.get("per_user_limit").map(String::as_str), Some("1"));
    assert_eq!(meta.get("shop_id").map(String::as_str), Some("77"));
    assert_eq!(xlen(&mut conn, &prefix.0, t.id).await, 1);
}

#[tokio::test]
async fn window_edges() {
    let prefix = TestPrefix::new();
    let hot = hot(&prefix, Arc::default()).await;
    let t = template(2, 100, 5);
    let (start, end) = (ts(START), ts(END));
    assert_eq!(
        claim(&hot, &t, 1, None, start - ms(1)).await,
        refused(ClaimRefusal::NotStarted)
    );
    assert_eq!(claimed(claim(&hot, &t, 1, None, start).await).seq, 1);
    assert_eq!(claimed(claim(&hot, &t, 1, None, end - ms(1)).await).seq, 2);
    assert_eq!(
        claim(&hot, &t, 1, None, end).await,
        refused(ClaimRefusal::Ended)
    );
    assert_eq!(hot.stock(&t).await.unwrap(), Some(98));
}

#[tokio::test]
async fn terminated_and_ended_templates_refuse_and_never_reopen() {
    let prefix = TestPrefix::new();
    let hot = hot(&prefix, Arc::default()).await;
    let now = open_time();

    let t = template(3, 100, 5);
    claimed(claim(&hot, &t, 1, None, now).await);
    let terminated = t.apply(TemplateChange::Terminate, now).unwrap().unwrap();
    hot.template_changed(&terminated).await.unwrap();
    assert_eq!(
        claim(&hot, &t, 2, None, now).await,
        refused(ClaimRefusal::Terminated)
    );
    // A late, reordered notification of an older active state does not reopen it.
    hot.template_changed(&t).await.unwrap();
    assert_eq!(
        claim(&hot, &t, 2, None, now).await,
        refused(ClaimRefusal::Terminated)
    );
    assert_eq!(hot.stock(&t).await.unwrap(), Some(99));

    let t = template(4, 100, 5);
    claimed(claim(&hot, &t, 1, None, now).await);
    let ended = t
        .apply(TemplateChange::End, ts(END) + ms(1))
        .unwrap()
        .unwrap();
    hot.template_changed(&ended).await.unwrap();
    assert_eq!(
        claim(&hot, &t, 2, None, now).await,
        refused(ClaimRefusal::Ended)
    );

    // Terminated before it was ever loaded: loads as terminated.
    let t = template(5, 100, 5);
    let terminated = t.apply(TemplateChange::Terminate, now).unwrap().unwrap();
    hot.template_changed(&terminated).await.unwrap();
    assert_eq!(
        claim(&hot, &terminated, 2, None, now).await,
        refused(ClaimRefusal::Terminated)
    );
}

#[tokio::test]
async fn sold_out_until_stock_is_added() {
    let prefix = TestPrefix::new();
    let hot = hot(&prefix, Arc::default()).await;
    let now = open_time();
    let t = template(6, 2, 5);
    claimed(claim(&hot, &t, 1, None, now).await);
    claimed(claim(&hot, &t, 2, None, now).await);
    assert_eq!(
        claim(&hot, &t, 3, None, now).await,
        refused(ClaimRefusal::SoldOut)
    );
    assert_eq!(hot.stock(&t).await.unwrap(), Some(0));

    let more = t.apply(TemplateChange::AddStock(3), now).unwrap().unwrap();
    hot.template_changed(&more).await.unwrap();
    assert_eq!(hot.stock(&t).await.unwrap(), Some(3));
    claimed(claim(&hot, &t, 3, None, now).await);
    assert_eq!(hot.stock(&t).await.unwrap(), Some(2));
    let mut conn = conn().await;
    assert_eq!(xlen(&mut conn, &prefix.0, t.id).await, 3);
}

#[tokio::test]
async fn per_user_limit() {
    let prefix = TestPrefix::new();
    let hot = hot(&prefix, Arc::default()).await;
    let now = open_time();
    let t = template(7, 100, 2);
    assert_eq!(claimed(claim(&hot, &t, 1, None, now).await).seq, 1);
    assert_eq!(claimed(claim(&hot, &t, 1, None, now).await).seq, 2);
    assert_eq!(
        claim(&hot, &t, 1, None, now).await,
        refused(ClaimRefusal::LimitReached)
    );
    assert_eq!(claimed(claim(&hot, &t, 2, None, now).await).seq, 1);
    assert_eq!(hot.stock(&t).await.unwrap(), Some(97));
}

#[tokio::test]
async fn a_repeated_key_replays_the_same_coupon_and_takes_no_stock() {
    let prefix = TestPrefix::new();
    let hot = hot(&prefix, Arc::default()).await;
    let now = open_time();
    let t = template(8, 100, 3);
    let first = claimed(claim(&hot, &t, 1, Some("key-1"), now).await);
    for _ in 0..3 {
        assert_eq!(
            claim(&hot, &t, 1, Some("key-1"), now + ms(10)).await,
            ClaimOutcome::Replayed(first.clone())
        );
    }
    // Even after the window closed and when the limit would refuse.
    assert_eq!(
        claim(&hot, &t, 1, Some("key-1"), ts(END)).await,
        ClaimOutcome::Replayed(first.clone())
    );
    assert_eq!(hot.stock(&t).await.unwrap(), Some(99));
    // Keys are per user: the same key from another user is another claim.
    let other = claimed(claim(&hot, &t, 2, Some("key-1"), now).await);
    assert_ne!(other.id, first.id);
    // A new key of the same user is a new claim.
    assert_eq!(claimed(claim(&hot, &t, 1, Some("key-2"), now).await).seq, 2);
    assert_eq!(hot.stock(&t).await.unwrap(), Some(97));
    let mut conn = conn().await;
    assert_eq!(xlen(&mut conn, &prefix.0, t.id).await, 3);
}

#[tokio::test]
async fn a_load_from_a_copy_older_than_a_change_is_refused() {
    let prefix = TestPrefix::new();
    let hot = hot(&prefix, Arc::default()).await;
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
    claimed(claim(&hot, &more, 1, None, now).await);
    assert_eq!(hot.stock(&t).await.unwrap(), Some(14));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flash_sale_race_neither_oversells_nor_breaks_the_limit() {
    const CLAIMS: i64 = 5_000;
    const USERS: i64 = 1_000;
    let prefix = TestPrefix::new();
    let fake = Arc::new(FakeCoupons::default());
    let hot = Arc::new(hot(&prefix, fake.clone()).await);
    let t = Arc::new(template(10, 300, 2));
    let now = open_time();

    let tasks: Vec<_> = (0..CLAIMS)
        .map(|i| {
            let (hot, t) = (hot.clone(), t.clone());
            tokio::spawn(async move {
                let user = 1 + (i * 7919) % USERS;
                hot.claim(&t, coupon(&t, user, now), None, now).await
            })
        })
        .collect();
    let mut won: Vec<UserCoupon> = Vec::new();
    let (mut sold_out, mut limit) = (0, 0);
    for task in tasks {
        match task.await.expect("task").expect("claim") {
            ClaimOutcome::Claimed(c) => won.push(c),
            ClaimOutcome::Refused(ClaimRefusal::SoldOut) => sold_out += 1,
            ClaimOutcome::Refused(ClaimRefusal::LimitReached) => limit += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(won.len(), 300, "exactly the stock is claimed");
    assert_eq!(won.len() + sold_out + limit, CLAIMS as usize);
    let mut per_user: HashMap<_, Vec<u32>> = HashMap::new();
    for c in &won {
        per_user.entry(c.user_id).or_default().push(c.seq);
    }
    for (user, mut seqs) in per_user {
        seqs.sort_unstable();
        assert!(seqs.len() <= 2, "user {user} holds {seqs:?}");
        assert_eq!(
            seqs,
            (1..=seqs.len() as u32).collect::<Vec<_>>(),
            "user {user} seqs"
        );
    }
    let ids: HashSet<_> = won.iter().map(|c| c.id).collect();
    assert_eq!(ids.len(), 300, "unique coupon ids");
    assert_eq!(hot.stock(&t).await.unwrap(), Some(0));
    let mut conn = conn().await;
    assert_eq!(xlen(&mut conn, &prefix.0, t.id).await, 300);
    assert!(fake.claim_state_calls.load(Ordering::Relaxed) >= 1);
}

#[tokio::test]
async fn a_large_claim_history_loads_in_chunks() {
    let prefix = TestPrefix::new();
    let t = template(11, 1_000, 2);
    let now = open_time();
    let keyed: Vec<(String, UserCoupon)> = (1..=1_500)
        .map(|u| {
            let mut c = coupon(&t, u, now);
            c.seq = 1;
            (format!("key-{u}"), c)
        })
        .collect();
    let user_counts = (1..=2_500)
        .map(|u| (uid(u), if u <= 1_500 { 2 } else { 1 }))
        .collect();
    let fake = Arc::new(FakeCoupons::default());
    fake.states.lock().unwrap().insert(
        t.id,
        ClaimState {
            user_counts,
            keyed: keyed.clone(),
        },
    );
    let hot = hot(&prefix, fake).await;

    assert_eq!(
        claim(&hot, &t, 1_499, None, now).await,
        refused(ClaimRefusal::LimitReached)
    );
    assert_eq!(
        claim(&hot, &t, 1_500, Some("key-1500"), now).await,
        ClaimOutcome::Replayed(keyed[1_499].1.clone())
    );
    assert_eq!(
        claim(&hot, &t, 1, Some("key-1"), now).await,
        ClaimOutcome::Replayed(keyed[0].1.clone())
    );
    assert_eq!(claimed(claim(&hot, &t, 2_500, None, now).await).seq, 2);
    assert_eq!(
        claim(&hot, &t, 2_500, None, now).await,
        refused(ClaimRefusal::LimitReached)
    );
    assert_eq!(claimed(claim(&hot, &t, 2_501, None, now).await).seq, 1);
    let mut conn = conn().await;
    let users: i64 = redis::cmd("HLEN")
        .arg(format!("{}:{{tpl:11}}:users", prefix.0))
        .query_async(&mut conn)
        .await
        .unwrap();
    let keys: i64 = redis::cmd("HLEN")
        .arg(format!("{}:{{tpl:11}}:keys", prefix.0))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!((users, keys), (2_501, 1_500));
    assert_eq!(hot.stock(&t).await.unwrap(), Some(998));
}
