//! `Persister` against a real Redis and a fake system of record: exactly-once draining,
//! crash recovery, concurrent persisters, lease takeover and pending coupons.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use stampede_core::claim_ports::{ClaimLogStore, ClaimOutcome, HotState};
use stampede_domain::coupon::UserCoupon;
use stampede_domain::template::Template;
use stampede_hot_redis::{ClaimLogHints, Persister, RedisHotState};
use std::sync::Arc;
use std::time::Duration;

struct Fixture {
    prefix: TestPrefix,
    hot: Arc<RedisHotState>,
    log: Arc<FakeLog>,
    conn: redis::aio::ConnectionManager,
}

async fn fixture() -> Fixture {
    let prefix = TestPrefix::new();
    let hot = Arc::new(
        RedisHotState::connect(&redis_url(), &prefix.0, Arc::new(FakeCoupons::default()))
            .await
            .unwrap(),
    );
    Fixture {
        prefix,
        hot,
        log: Arc::default(),
        conn: conn().await,
    }
}

impl Fixture {
    fn persister(&self, node: &str, batch: usize) -> Persister {
        Persister::new(
            self.conn.clone(),
            &self.prefix.0,
            self.log.clone(),
            node,
            batch,
        )
    }

    async fn claim(&self, t: &Template, user: i64, key: Option<&str>) -> UserCoupon {
        let now = open_time();
        match self
            .hot
            .claim(t, coupon(t, user, now), key, now)
            .await
            .unwrap()
        {
            ClaimOutcome::Claimed(c) => c,
            other => panic!("expected Claimed, got {other:?}"),
        }
    }

    async fn xlen(&self, t: &Template) -> i64 {
        xlen(&mut self.conn.clone(), &self.prefix.0, t.id).await
    }
}

#[tokio::test]
async fn drains_the_log_into_the_store_exactly_once() {
    let f = fixture().await;
    let t = template(20, 50, 3);
    let mut claimed = Vec::new();
    for user in 1..=10 {
        claimed.push(f.claim(&t, user, None).await);
        claimed.push(f.claim(&t, user, Some(&format!("key-{user}"))).await);
    }
    assert_eq!(f.xlen(&t).await, 20);
    let p = f.persister("node-a", 7);

    assert_eq!(p.run_once().await.unwrap(), 20);
    assert_eq!(f.log.coupons(), 20);
    assert_eq!(f.log.taken(t.id), 20);
    assert_eq!(f.xlen(&t).await, 0, "persisted entries leave the log");
    {
        let s = f.log.0.lock().unwrap();
        for c in &claimed {
            let r = s
                .coupons
                .get(&(c.user_id, c.template_id, c.seq))
                .expect("persisted");
            assert_eq!(&r.coupon, c, "the persisted coupon is the acknowledged one");
            let key = (c.seq == 2).then(|| format!("key-{}", c.user_id));
            assert_eq!(r.claim_key, key);
        }
    }

    let inserts = f.log.insert_calls();
    assert_eq!(
        p.run_once().await.unwrap(),
        0,
        "a second pass has nothing to do"
    );
    assert_eq!(f.log.insert_calls(), inserts);
    assert_eq!(f.log.taken(t.id), 20);

    // Claims keep landing after a pass; the next pass takes exactly those.
    f.claim(&t, 11, None).await;
    assert_eq!(p.run_once().await.unwrap(), 1);
    assert_eq!(f.log.taken(t.id), 21);
    assert_eq!(f.log.coupons(), 21);
    // The lease was released.
    let lease: Option<String> = redis::cmd("GET")
        .arg(format!("{}:{{tpl:20}}:lease", f.prefix.0))
        .query_async(&mut f.conn.clone())
        .await
        .unwrap();
    assert_eq!(lease, None);
}

#[tokio::test]
async fn a_crash_after_insert_is_recovered_without_applying_stock_twice() {
    let f = fixture().await;
    let t = template(21, 50, 1);
    for user in 1..=5 {
        f.claim(&t, user, None).await;
    }
    let crashed = f.persister("node-crashed", 100);
    let batch = crashed.read_batch(t.id).await.unwrap().expect("a batch");
    assert_eq!(batch.records.len(), 5);
    f.log.insert_claimed(&batch.records).await.unwrap();
    drop(batch);
    drop(crashed);
    assert_eq!((f.log.coupons(), f.log.taken(t.id)), (5, 0));

    let p = f.persister("node-b", 100);
    assert_eq!(p.run_once().await.unwrap(), 5);
    assert_eq!((f.log.coupons(), f.log.taken(t.id)), (5, 5));
    assert_eq!(f.xlen(&t).await, 0);
    assert_eq!(p.run_once().await.unwrap(), 0);
    assert_eq!(f.log.taken(t.id), 5);
}

#[tokio::test]
async fn a_crash_after_apply_is_cleaned_up_without_applying_again() {
    let f = fixture().await;
    let t = template(22, 50, 1);
    let c = f.claim(&t, 1, None).await;
    for user in 2..=4 {
        f.claim(&t, user, None).await;
    }
    let crashed = f.persister("node-crashed", 100);
    let b = crashed.read_batch(t.id).await.unwrap().expect("a batch");
    f.log.insert_claimed(&b.records).await.unwrap();
    assert!(f.log.apply_claims(t.id, &b.from, &b.to, 4).await.unwrap());
    drop(crashed);
    assert_eq!(f.xlen(&t).await, 4, "crashed before removing the entries");
    assert_eq!(f.hot.pending_coupons(uid(1)).await.unwrap(), vec![c]);

    let p = f.persister("node-b", 100);
    assert_eq!(p.run_once().await.unwrap(), 0, "nothing new to persist");
    assert_eq!(f.log.taken(t.id), 4);
    assert_eq!(f.xlen(&t).await, 0, "applied entries removed");
    assert_eq!(f.hot.pending_coupons(uid(1)).await.unwrap(), vec![]);
}

#[tokio::test]
async fn a_dead_nodes_lease_expires_and_its_work_is_taken_over() {
    let f = fixture().await;
    let t = template(23, 50, 1);
    f.claim(&t, 1, None).await;
    let _: () = redis::cmd("SET")
        .arg(format!("{}:{{tpl:23}}:lease", f.prefix.0))
        .arg("dead-node")
        .arg("PX")
        .arg(300)
        .query_async(&mut f.conn.clone())
        .await
        .unwrap();
    let p = f.persister("node-b", 100);
    assert_eq!(
        p.run_once().await.unwrap(),
        0,
        "another node's lease is respected"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(p.run_once().await.unwrap(), 1);
    assert_eq!(f.log.taken(t.id), 1);
}

async fn race_persisters(node_a: &str, node_b: &str) {
    let f = fixture().await;
    let templates = [template(24, 150, 2), template(25, 150, 2)];
    let (a, b) = (
        Arc::new(f.persister(node_a, 16)),
        Arc::new(f.persister(node_b, 16)),
    );

    // Claims land while both persisters drain.
    let claims = {
        let hot = f.hot.clone();
        let templates = templates.clone();
        tokio::spawn(async move {
            let now = open_time();
            let mut n = 0;
            for user in 1..=100 {
                for t in &templates {
                    for _ in 0..2 {
                        if let ClaimOutcome::Claimed(_) =
                            hot.claim(t, coupon(t, user, now), None, now).await.unwrap()
                        {
                            n += 1;
                        }
                    }
                }
            }
            n
        })
    };
    let drain = |p: Arc<Persister>| {
        tokio::spawn(async move {
            let mut total = 0;
            for _ in 0..200 {
                total += p.run_once().await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            total
        })
    };
    let (ha, hb) = (drain(a.clone()), drain(b.clone()));
    let claimed = claims.await.unwrap();
    assert_eq!(claimed, 300, "150 per template");
    let (ta, tb) = (ha.await.unwrap(), hb.await.unwrap());
    // Whatever is left after the racing passes.
    let rest = a.run_once().await.unwrap() + b.run_once().await.unwrap();
    assert_eq!(
        ta + tb + rest,
        300,
        "each entry persisted by exactly one pass"
    );
    assert_eq!(f.log.coupons(), 300);
    {
        let s = f.log.0.lock().unwrap();
        eprintln!(
            "apply calls: {}, refused (lost the race): {}",
            s.apply_calls, s.apply_refused
        );
    }
    for t in &templates {
        assert_eq!(f.log.taken(t.id), 150, "stock applied once per entry");
        assert_eq!(f.xlen(t).await, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_persisters_apply_each_entry_once() {
    race_persisters("node-a", "node-b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_persisters_without_lease_protection_still_apply_each_entry_once() {
    // Sharing a node id defeats the lease: both drain the same logs at the same time, and
    // only the idempotent insert and the compare-and-set apply keep it exactly-once.
    race_persisters("node-x", "node-x").await;
}

#[tokio::test]
async fn pending_coupons_show_a_claim_until_it_is_persisted() {
    let f = fixture().await;
    let t = template(26, 50, 2);
    let other = template(27, 50, 2);
    let c1 = f.claim(&t, 1, None).await;
    let c2 = f.claim(&other, 1, Some("k")).await;
    f.claim(&t, 2, None).await;
    let mut expected = vec![c1, c2];
    expected.sort_by_key(|c| c.id);
    assert_eq!(f.hot.pending_coupons(uid(1)).await.unwrap(), expected);
    assert_eq!(f.hot.pending_coupons(uid(3)).await.unwrap(), vec![]);

    assert_eq!(f.persister("node-a", 10).run_once().await.unwrap(), 3);
    assert_eq!(f.hot.pending_coupons(uid(1)).await.unwrap(), vec![]);
    assert_eq!(f.hot.pending_coupons(uid(2)).await.unwrap(), vec![]);
}

#[tokio::test]
async fn with_hints_a_pass_visits_the_logs_this_node_claimed_into_and_a_sweep_the_rest() {
    let f = fixture().await;
    let hints = Arc::new(ClaimLogHints::default());
    let hinted =
        RedisHotState::connect(&redis_url(), &f.prefix.0, Arc::new(FakeCoupons::default()))
            .await
            .unwrap()
            .with_hints(hints.clone());
    let mine = template(31, 50, 3);
    let theirs = template(32, 50, 3);
    // Before this node starts: another node's log with entries left.
    f.claim(&theirs, 1, None).await;
    let p = f
        .persister("node-a", 100)
        .with_hints(hints.clone(), Duration::from_secs(3_600));
    assert_eq!(
        p.run_once().await.unwrap(),
        1,
        "the first pass is a full sweep"
    );
    assert_eq!(f.xlen(&theirs).await, 0);

    // This node's claims: drained by the next (hinted) pass.
    let now = open_time();
    for user in 1..=3 {
        let out = hinted
            .claim(&mine, coupon(&mine, user, now), None, now)
            .await
            .unwrap();
        assert!(matches!(out, ClaimOutcome::Claimed(_)), "{out:?}");
    }
    // Another node's new entry: not hinted here, so left for its own persister or the sweep.
    f.claim(&theirs, 2, None).await;
    assert_eq!(p.run_once().await.unwrap(), 3);
    assert_eq!(f.xlen(&mine).await, 0);
    assert_eq!(
        f.xlen(&theirs).await,
        1,
        "a hinted pass does not visit other logs"
    );
    assert_eq!(p.run_once().await.unwrap(), 0, "the hints were taken");

    // A sweep (due at once here) takes it over.
    let sweeping = f
        .persister("node-b", 100)
        .with_hints(Arc::new(ClaimLogHints::default()), Duration::ZERO);
    assert_eq!(sweeping.run_once().await.unwrap(), 1);
    assert_eq!(f.xlen(&theirs).await, 0);
    assert_eq!(f.log.taken(mine.id), 3);
    assert_eq!(f.log.taken(theirs.id), 2);
}

#[tokio::test]
async fn a_full_sweep_finds_non_empty_logs_among_many_in_chunks() {
    let f = fixture().await;
    // More logs than one pipelined round trip asks about; a few of them with entries.
    let ts: Vec<Template> = (0..2_500).map(|i| template(10_000 + i, 5, 1)).collect();
    for t in &ts {
        f.hot
            .standing(&[t], Some(stampede_domain::ids::UserId::new(1).unwrap()))
            .await
            .unwrap();
    }
    let with_entries = [&ts[0], &ts[999], &ts[1_000], &ts[2_499]];
    for (i, t) in with_entries.iter().enumerate() {
        f.claim(t, i as i64 + 1, None).await;
    }
    assert_eq!(f.persister("node-a", 100).run_once().await.unwrap(), 4);
    for t in with_entries {
        assert_eq!(f.xlen(t).await, 0);
        assert_eq!(f.log.taken(t.id), 1);
    }
}

/// The sweep publishes the claim logs' backlog and the age of their oldest entry; both fall
/// to zero once the logs are drained.
#[tokio::test]
async fn a_sweep_publishes_the_backlog_and_the_lag_of_the_oldest_entry() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshots = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let gauges = || {
        let mut out = std::collections::HashMap::new();
        for (key, _, _, value) in snapshots.snapshot().into_vec() {
            if let DebugValue::Gauge(v) = value {
                out.insert(key.key().name().to_owned(), v.into_inner());
            }
        }
        out
    };

    let f = fixture().await;
    let (a, b) = (template(41, 50, 3), template(42, 50, 3));
    for user in 1..=3 {
        f.claim(&a, user, None).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.claim(&b, 9, None).await;
    // Without hints every pass starts with a full sweep, which reads the logs before draining.
    let p = f.persister("node-a", 100);
    assert_eq!(p.run_once().await.unwrap(), 4);
    let g = gauges();
    assert_eq!(g.get("stampede_persister_backlog_entries"), Some(&4.0));
    let lag = g
        .get("stampede_persister_lag_seconds")
        .copied()
        .unwrap_or(-1.0);
    assert!(
        (0.3..30.0).contains(&lag),
        "the oldest entry waited about 0.3 s: lag {lag}"
    );
    assert_eq!(p.run_once().await.unwrap(), 0);
    let g = gauges();
    assert_eq!(g.get("stampede_persister_backlog_entries"), Some(&0.0));
    assert_eq!(g.get("stampede_persister_lag_seconds"), Some(&0.0));
}
