//! Distribution batches on `RedisHotState` against a real Redis: reservation order and
//! refusals, stored answers and replays, loading, races with claims, returned stock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use jiff::{SignedDuration, Timestamp};
use stampede_core::claim_ports::{ClaimOutcome, ClaimState, HotState, Reservation, RowReservation};
use stampede_domain::coupon::ClaimRefusal;
use stampede_domain::ids::{DistributionId, UserId};
use stampede_domain::template::{Template, TemplateChange};
use stampede_hot_redis::RedisHotState;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

async fn hot(prefix: &TestPrefix, coupons: Arc<FakeCoupons>) -> RedisHotState {
    RedisHotState::connect(&redis_url(), &prefix.0, coupons)
        .await
        .expect("connect")
}

fn task(n: i64) -> DistributionId {
    DistributionId::new(n).expect("positive")
}

fn users(ids: impl IntoIterator<Item = i64>) -> Vec<UserId> {
    ids.into_iter().map(uid).collect()
}

fn batch(task_id: i64, first_row: u64, users: &[UserId]) -> Reservation<'_> {
    Reservation {
        task: task(task_id),
        first_row,
        users,
        replay_only: false,
    }
}

fn replay(task_id: i64, first_row: u64, users: &[UserId]) -> Reservation<'_> {
    Reservation {
        replay_only: true,
        ..batch(task_id, first_row, users)
    }
}

async fn reserve(
    hot: &RedisHotState,
    t: &Template,
    r: &Reservation<'_>,
    now: Timestamp,
) -> Vec<RowReservation> {
    hot.reserve_batch(t, r, now)
        .await
        .expect("reserve_batch")
        .expect("an answer")
}

fn ok(seq: u32) -> RowReservation {
    RowReservation::Reserved { seq }
}

fn no(r: ClaimRefusal) -> RowReservation {
    RowReservation::Refused(r)
}

fn reserved(rows: &[RowReservation]) -> usize {
    rows.iter()
        .filter(|r| matches!(r, RowReservation::Reserved { .. }))
        .count()
}

async fn claim(hot: &RedisHotState, t: &Template, user: i64, now: Timestamp) -> ClaimOutcome {
    hot.claim(t, coupon(t, user, now), None, now)
        .await
        .expect("claim")
}

async fn user_counts(prefix: &TestPrefix, t: &Template) -> HashMap<String, i64> {
    let mut conn = conn().await;
    redis::cmd("HGETALL")
        .arg(format!("{}:{{tpl:{}}}:users", prefix.0, t.id))
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn reserves_in_file_order_and_takes_exactly_the_reserved_stock() {
    let prefix = TestPrefix::new();
    let hot = hot(&prefix, Arc::default()).await;
    let now = open_time();
    let t = template(21, 100, 2);
    // User 1 is at the limit before the batch.
    for _ in 0..2 {
        assert!(matches!(
            claim(&hot, &t, 1, now).await,
            ClaimOutcome::Claimed(_)
        ));
    }
    assert_eq!(hot.stock(&t).await.unwrap(), Some(98));

    let u = users([1, 2, 3, 2, 2, 4, 1]);
    let rows = reserve(&hot, &t, &batch(1, 1, &u), now).await;
    assert_eq!(
        rows,
        vec![
            no(ClaimRefusal::LimitReached),
            ok(1),
            ok(1),
            ok(2),
            no(ClaimRefusal::LimitReached), // user 2 repeated beyond the limit
            ok(1),
            no(ClaimRefusal::LimitReached),
        ]
    );
    assert_eq!(hot.stock(&t).await.unwrap(), Some(98 - 4));
    let counts = user_counts(&prefix, &t).await;
    assert_eq!(counts.get("1"), Some(&2));
    assert_eq!(counts.get("2"), Some(&2));
    assert_eq!(counts.get("3"), Some(&1));
    assert_eq!(counts.get("4"), Some(&1));

    // Claims see the batch's counts: seqs continue, limits hold.
    assert!(matches!(
        claim(&hot, &t, 3, now).await,
        ClaimOutcome::Claimed(c) if c.seq == 2
    ));
    assert_eq!(
        claim(&hot, &t, 2, now).await,
        ClaimOutcome::Refused(ClaimRefusal::LimitReached)
    );
    assert_eq!(hot.stock(&t).await.unwrap(), Some(93));
    // A distribution writes no claim-log entry (its runner inserts the coupons itself).
    let mut conn = conn().await;
    assert_eq!(xlen(&mut conn, &prefix.0, t.id).await, 3);
}

#[tokio::test]
async fn sold_out_part_way_through_a_batch() {
    let prefix = TestPrefix::new();
    let hot = hot(&prefix, Arc::default()).await;
    let now = open_time();
    let t = template(22, 3, 1);
    assert!(matches!(
        claim(&hot, &t, 9, now).await,
        ClaimOutcome::Claimed(_)
    ));

    let u = users([1, 2, 9, 3, 4, 5, 9]);
    let rows = reserve(&hot, &t, &batch(1, 1, &u), now).await;
    assert_eq!(
        rows,
        vec![
            ok(1),
            ok(1),
            no(ClaimRefusal::LimitReached),
            no(ClaimRefusal::SoldOut),
            no(ClaimRefusal::SoldOut),
            no(ClaimRefusal::SoldOut),
            // The limit is checked before stock, also once sold out.
            no(ClaimRefusal::LimitReached),
        ]
    );
    assert_eq!(hot.stock(&t).await.unwrap(), Some(0));
    let counts = user_counts(&prefix, &t).await;
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert_eq!(
        claim(&hot, &t, 7, now).await,
        ClaimOutcome::Refused(ClaimRefusal::SoldOut)
    );
}

#[tokio::test]
async fn a_batch_gets_its_stored_answer_again() {
    let prefix = TestPrefix::new();
    let hot = hot(&prefix, Arc::default()).await;
    let now = open_time();
    let t = template(23, 4, 1);
    let u = users([1, 2, 1, 3, 4, 5]);
    let first = reserve(&hot, &t, &batch(7, 5_001, &u), now).await;
    assert_eq!(
        first,
        vec![
            ok(1),
            ok(1),
            no(ClaimRefusal::LimitReached),
            ok(1),
            ok(1),
            no(ClaimRefusal::SoldOut),
        ]
    );
    let counts = user_counts(&prefix, &t).await;
    assert_eq!(hot.stock(&t).await.unwrap(), Some(0));

    // Same (task, first row): the same answer, nothing reserved again, even later and with
    // the template terminated meanwhile.
    assert_eq!(reserve(&hot, &t, &batch(7, 5_001, &u), now).await, first);
    let terminated = t.apply(TemplateChange::Terminate, now).unwrap().unwrap();
    hot.template_changed(&terminated).await.unwrap();
    assert_eq!(
        reserve(&hot, &terminated, &batch(7, 5_001, &u), now + ms(1_000)).await,
        first
    );
    assert_eq!(
        reserve(&hot, &terminated, &replay(7, 5_001, &u), now).await,
        first
    );
    assert_eq!(hot.stock(&t).await.unwrap(), Some(0));
    assert_eq!(user_counts(&prefix, &t).await, counts);

    // Replay only, nothing stored: no answer and nothing reserved.
    assert_eq!(
        hot.reserve_batch(&terminated, &replay(7, 1, &u), now)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        hot.reserve_batch(&terminated, &replay(8, 5_001, &u), now)
            .await
            .unwrap(),
        None
    );
    let mut conn = conn().await;
    let stored: i64 = redis::cmd("EXISTS")
        .arg(format!("{}:{{tpl:23}}:dist:7:1", prefix.0))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, 0, "a replay-only miss stores nothing");

    // The answer expires, after far longer than any retry.
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{}:{{tpl:23}}:dist:7:5001", prefix.0))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 6 * 24 * 3_600_000, "ttl {ttl}");

    // abandon_batch keeps the reservation for the retry.
    hot.abandon_batch(&t, &batch(7, 5_001, &u), &first)
        .await
        .unwrap();
    assert_eq!(hot.stock(&t).await.unwrap(), Some(0));
    assert_eq!(reserve(&hot, &t, &batch(7, 5_001, &u), now).await, first);
}

#[tokio::test]
async fn replay_only_on_a_template_never_loaded_does_not_load_it() {
    let prefix = TestPrefix::new();
    let fake = Arc::new(FakeCoupons::default());
    let hot = hot(&prefix, fake.clone()).await;
    let t = template(24, 10, 1);
    let u = users([1, 2]);
    assert_eq!(
        hot.reserve_batch(&t, &replay(1, 1, &u), open_time())
            .await
            .unwrap(),
        None
    );
    assert_eq!(hot.stock(&t).await.unwrap(), None);
    assert_eq!(fake.claim_state_calls.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn status_and_end_refuse_the_whole_batch_but_the_start_does_not() {
    let prefix = TestPrefix::new();
    let hot = hot(&prefix, Arc::default()).await;
    let now = open_time();
    let u = users([1, 2, 2]);

    // Terminated while loaded.
    let t = template(25, 100, 5);
    assert!(matches!(
        claim(&hot, &t, 1, now).await,
        ClaimOutcome::Claimed(_)
    ));
    let terminated = t.apply(TemplateChange::Terminate, now).unwrap().unwrap();
    hot.template_changed(&terminated).await.unwrap();
    assert_eq!(
        reserve(&hot, &terminated, &batch(1, 1, &u), now).await,
        vec![no(ClaimRefusal::Terminated); 3]
    );
    assert_eq!(hot.stock(&t).await.unwrap(), Some(99));

    // Terminated before it was ever loaded: loads as terminated.
    let t = template(26, 100, 5);
    let terminated = t.apply(TemplateChange::Terminate, now).unwrap().unwrap();
    assert_eq!(
        reserve(&hot, &terminated, &batch(1, 1, &u), now).await,
        vec![no(ClaimRefusal::Terminated); 3]
    );
    assert_eq!(hot.stock(&t).await.unwrap(), Some(100));

    // Ended by the back-office, still inside the window.
    let t = template(27, 100, 5);
    assert!(matches!(
        claim(&hot, &t, 1, now).await,
        ClaimOutcome::Claimed(_)
    ));
    let ended = t
        .apply(TemplateChange::End, ts(END) + ms(1))
        .unwrap()
        .unwrap();
    hot.template_changed(&ended).await.unwrap();
    assert_eq!(
        reserve(&hot, &ended, &batch(1, 1, &u), now).await,
        vec![no(ClaimRefusal::Ended); 3]
    );

    // claim_end passed (end exclusive, as for claims); one millisecond earlier reserves.
    let t = template(28, 100, 5);
    assert_eq!(
        reserve(&hot, &t, &batch(1, 1, &u), ts(END)).await,
        vec![no(ClaimRefusal::Ended); 3]
    );
    assert_eq!(hot.stock(&t).await.unwrap(), Some(100));
    assert_eq!(
        reserve(&hot, &t, &batch(1, 4, &u), ts(END) - ms(1)).await,
        vec![ok(1), ok(1), ok(2)]
    );
    assert_eq!(user_counts(&prefix, &t).await.len(), 2);

    // claim_start in the future: distributions may push before the sale opens.
    let t = template(29, 100, 5);
    let before = ts(START) - SignedDuration::from_hours(48);
    assert_eq!(
        reserve(&hot, &t, &batch(1, 1, &u), before).await,
        vec![ok(1), ok(1), ok(2)]
    );
    assert_eq!(hot.stock(&t).await.unwrap(), Some(97));
    assert_eq!(
        claim(&hot, &t, 3, before).await,
        ClaimOutcome::Refused(ClaimRefusal::NotStarted),
        "claims still wait for the start"
    );
}

#[tokio::test]
async fn a_template_not_loaded_is_loaded_from_the_system_of_record() {
    let prefix = TestPrefix::new();
    let t = template(30, 10, 1);
    let fake = Arc::new(FakeCoupons::default());
    fake.states.lock().unwrap().insert(
        t.id,
        ClaimState {
            user_counts: vec![(uid(5), 1)],
            keyed: Vec::new(),
        },
    );
    let hot = hot(&prefix, fake.clone()).await;
    assert_eq!(hot.stock(&t).await.unwrap(), None);

    let u = users([5, 6, 7]);
    assert_eq!(
        reserve(&hot, &t, &batch(1, 1, &u), open_time()).await,
        vec![no(ClaimRefusal::LimitReached), ok(1), ok(1)]
    );
    assert_eq!(hot.stock(&t).await.unwrap(), Some(8));
    assert_eq!(fake.claim_state_calls.load(Ordering::Relaxed), 1);
    let mut conn = conn().await;
    let member: bool = redis::cmd("SISMEMBER")
        .arg(format!("{}:claimlogs", prefix.0))
        .arg(t.id.get())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(member, "loaded the way claims load it");
}

#[tokio::test]
async fn an_empty_batch_reserves_nothing() {
    let prefix = TestPrefix::new();
    let hot = hot(&prefix, Arc::default()).await;
    let t = template(31, 10, 1);
    assert_eq!(
        reserve(&hot, &t, &batch(1, 1, &[]), open_time()).await,
        Vec::new()
    );
    assert_eq!(
        reserve(&hot, &t, &replay(1, 1, &[]), open_time()).await,
        Vec::new()
    );
    assert_eq!(hot.stock(&t).await.unwrap(), Some(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_and_claims_racing_never_oversell() {
    let prefix = TestPrefix::new();
    let hot = Arc::new(hot(&prefix, Arc::default()).await);
    let t = Arc::new(template(32, 100, 1));
    let now = open_time();

    let claims: Vec<_> = (10_001..=10_100)
        .map(|user| {
            let (hot, t) = (hot.clone(), t.clone());
            tokio::spawn(async move { hot.claim(&t, coupon(&t, user, now), None, now).await })
        })
        .collect();
    // Three batches of 50, each its own task, interleaved with the claims.
    let batches: Vec<_> = (0..3u64)
        .map(|b| {
            let (hot, t) = (hot.clone(), t.clone());
            tokio::spawn(async move {
                let first = 1 + b * 50;
                let u = users((first as i64)..(first as i64 + 50));
                hot.reserve_batch(&t, &batch(1, first, &u), now).await
            })
        })
        .collect();

    let mut claimed = 0;
    for c in claims {
        match c.await.unwrap().unwrap() {
            ClaimOutcome::Claimed(_) => claimed += 1,
            ClaimOutcome::Refused(ClaimRefusal::SoldOut) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut reserved_rows = 0;
    for b in batches {
        let rows = b.await.unwrap().unwrap().unwrap();
        assert_eq!(rows.len(), 50);
        for r in &rows {
            assert!(
                matches!(r, RowReservation::Reserved { seq: 1 }) || *r == no(ClaimRefusal::SoldOut),
                "{r:?}"
            );
        }
        reserved_rows += reserved(&rows);
    }
    assert_eq!(claimed + reserved_rows, 100, "exactly the stock goes out");
    assert_eq!(hot.stock(&t).await.unwrap(), Some(0));
    assert_eq!(user_counts(&prefix, &t).await.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_and_claims_racing_never_break_the_limit() {
    let prefix = TestPrefix::new();
    let hot = Arc::new(hot(&prefix, Arc::default()).await);
    let t = Arc::new(template(33, 1_000, 1));
    let now = open_time();

    // The same 200 users claim and are distributed to at once.
    let claims: Vec<_> = (1..=200)
        .map(|user| {
            let (hot, t) = (hot.clone(), t.clone());
            tokio::spawn(async move {
                let won = matches!(
                    hot.claim(&t, coupon(&t, user, now), None, now)
                        .await
                        .unwrap(),
                    ClaimOutcome::Claimed(_)
                );
                (user, won)
            })
        })
        .collect();
    let batches: Vec<_> = (0..4u64)
        .map(|b| {
            let (hot, t) = (hot.clone(), t.clone());
            tokio::spawn(async move {
                let first = 1 + b * 50;
                let u = users((first as i64)..(first as i64 + 50));
                let rows = hot
                    .reserve_batch(&t, &batch(1, first, &u), now)
                    .await
                    .unwrap()
                    .unwrap();
                u.into_iter().zip(rows).collect::<Vec<_>>()
            })
        })
        .collect();

    let mut held: HashMap<i64, u32> = HashMap::new();
    for c in claims {
        let (user, won) = c.await.unwrap();
        *held.entry(user).or_default() += u32::from(won);
    }
    for b in batches {
        for (user, row) in b.await.unwrap() {
            match row {
                RowReservation::Reserved { seq } => {
                    assert_eq!(seq, 1);
                    *held.entry(user.get()).or_default() += 1;
                }
                RowReservation::Refused(ClaimRefusal::LimitReached) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(held.len(), 200);
    assert!(held.values().all(|&n| n == 1), "{held:?}");
    assert_eq!(hot.stock(&t).await.unwrap(), Some(800));
}

#[tokio::test]
async fn refused_stock_goes_back_once_per_batch() {
    let prefix = TestPrefix::new();
    let hot = hot(&prefix, Arc::default()).await;
    let now = open_time();
    let t = template(34, 10, 1);
    let u = users(1..=6);
    let rows = reserve(&hot, &t, &batch(3, 1, &u), now).await;
    assert_eq!(reserved(&rows), 6);
    assert_eq!(hot.stock(&t).await.unwrap(), Some(4));

    hot.return_stock(&t, task(3), 1, 2).await.unwrap();
    assert_eq!(hot.stock(&t).await.unwrap(), Some(6));
    for _ in 0..2 {
        hot.return_stock(&t, task(3), 1, 2).await.unwrap();
    }
    assert_eq!(hot.stock(&t).await.unwrap(), Some(6), "once per batch");
    // Another batch (or task) is another guard; zero changes nothing.
    hot.return_stock(&t, task(3), 7, 1).await.unwrap();
    hot.return_stock(&t, task(4), 1, 1).await.unwrap();
    hot.return_stock(&t, task(5), 1, 0).await.unwrap();
    assert_eq!(hot.stock(&t).await.unwrap(), Some(8));
    let mut conn = conn().await;
    let guard: i64 = redis::cmd("EXISTS")
        .arg(format!("{}:{{tpl:34}}:distret:5:1", prefix.0))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(guard, 0, "n = 0 leaves no guard");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{}:{{tpl:34}}:distret:3:1", prefix.0))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 6 * 24 * 3_600_000, "ttl {ttl}");
}

#[tokio::test]
async fn returning_stock_to_a_template_not_loaded_changes_nothing_even_after_a_load() {
    let prefix = TestPrefix::new();
    let hot = hot(&prefix, Arc::default()).await;
    let t = template(35, 10, 1);
    hot.return_stock(&t, task(1), 1, 3).await.unwrap();
    assert_eq!(hot.stock(&t).await.unwrap(), None, "not loaded by a return");
    // The load reads the stock from the system of record, which never took the coupons
    // off; a repeated return after it must not add them again.
    assert!(matches!(
        claim(&hot, &t, 1, open_time()).await,
        ClaimOutcome::Claimed(_)
    ));
    assert_eq!(hot.stock(&t).await.unwrap(), Some(9));
    hot.return_stock(&t, task(1), 1, 3).await.unwrap();
    assert_eq!(hot.stock(&t).await.unwrap(), Some(9));
}

#[tokio::test]
async fn a_full_size_batch_in_one_call() {
    let prefix = TestPrefix::new();
    let hot = hot(&prefix, Arc::default()).await;
    let t = template(36, 4_000, 1);
    // Ids beyond 2^53: they stay strings in Lua, never rounded.
    let base = 9_007_199_254_740_993_i64;
    let u = users(base..base + 5_000);
    let rows = reserve(&hot, &t, &batch(1, 1, &u), open_time()).await;
    assert_eq!(rows.len(), 5_000);
    assert!(rows[..4_000].iter().all(|r| *r == ok(1)));
    assert!(
        rows[4_000..]
            .iter()
            .all(|r| *r == no(ClaimRefusal::SoldOut))
    );
    assert_eq!(hot.stock(&t).await.unwrap(), Some(0));
    let counts = user_counts(&prefix, &t).await;
    assert_eq!(counts.len(), 4_000);
    assert_eq!(counts.get(&base.to_string()), Some(&1));
    assert_eq!(counts.get(&(base + 3_999).to_string()), Some(&1));
}
