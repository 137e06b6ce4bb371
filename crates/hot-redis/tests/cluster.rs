//! What only a Redis Cluster shows (the shared claim behaviour runs on it in
//! `conformance.rs`): invalidations reach a subscriber on any node, a subscriber moves past a
//! dead seed, and claims keep exact counts while their template's slot migrates to another
//! master (`ASK`/`TRYAGAIN` during the move, `MOVED` after). Needs
//! `STAMPEDE_TEST_REDIS_CLUSTER` (the test command starts a private 3-master cluster).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use stampede_core::claim_ports::{ClaimOutcome, HotState};
use stampede_hot_redis::{Invalidation, RedisHotState, RedisTopology, connect_bare};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

async fn cluster_conn() -> stampede_hot_redis::Connection {
    connect_bare(&RedisTopology::Cluster(redis_cluster()))
        .await
        .expect("cluster reachable")
}

/// Subscribes to `prefix`'s template invalidations on `seeds`; publishes through the cluster
/// client until one arrives.
async fn heard_through(seeds: Vec<String>, prefix: &str) -> bool {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let token = CancellationToken::new();
    let subscriber = tokio::spawn(
        Invalidation::subscribe(
            seeds,
            prefix,
            move |t| {
                let _ = tx.send(t);
            },
            token.clone(),
        )
        .expect("Redis URLs"),
    );
    let publisher = Invalidation::new(cluster_conn().await, prefix);
    let heard = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            publisher.publish(tid(42)).await.unwrap();
            tokio::select! {
                Some(t) = rx.recv() => return t == tid(42),
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    })
    .await
    .unwrap_or(false);
    token.cancel();
    let _ = subscriber.await;
    heard
}

#[tokio::test]
async fn an_invalidation_published_anywhere_reaches_a_subscriber_on_every_node() {
    let prefix = TestPrefix::new();
    for seed in redis_cluster() {
        assert!(
            heard_through(vec![seed.clone()], &prefix.0).await,
            "subscriber on {seed}"
        );
    }
}

#[tokio::test]
async fn a_subscriber_moves_past_a_seed_that_is_down() {
    let prefix = TestPrefix::new();
    let mut seeds = vec!["redis://127.0.0.1:1".to_owned()];
    seeds.extend(redis_cluster());
    assert!(heard_through(seeds, &prefix.0).await);
}

/// A cluster node as `CLUSTER NODES` lists it.
struct Node {
    id: String,
    port: u16,
    master: bool,
    slots: Vec<(u16, u16)>,
}

fn sync_conn(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|c| c.get_connection())
        .expect("cluster node reachable")
}

fn nodes(port: u16) -> Vec<Node> {
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut sync_conn(port))
        .unwrap();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let port = f
                .get(1)?
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let slots = f
                .iter()
                .skip(8)
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|x| (x, x)),
                })
                .collect();
            Some(Node {
                id: (*f.first()?).to_owned(),
                port,
                master: f.get(2)?.contains("master"),
                slots,
            })
        })
        .collect()
}

/// Moves `slot` from its master to another one, key by key, the way `redis-cli --cluster
/// reshard` does: IMPORTING/MIGRATING, `MIGRATE` in small batches (so claims run against a
/// slot whose keys are split between two nodes), then `SETSLOT … NODE` on every master.
fn migrate_slot(slot: u16) -> String {
    let seed = seed_port();
    let all = nodes(seed);
    let source = master_of(&all, slot).expect("the slot's master");
    let target = all
        .iter()
        .find(|n| n.master && n.id != source.id)
        .expect("another master");
    let (mut src, mut dst) = (sync_conn(source.port), sync_conn(target.port));
    let set = |c: &mut redis::Connection, what: &str, id: &str| {
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg(what)
            .arg(id)
            .query(c)
            .unwrap();
    };
    set(&mut dst, "IMPORTING", &source.id);
    set(&mut src, "MIGRATING", &target.id);
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(1)
            .query(&mut src)
            .unwrap();
        if keys.is_empty() {
            break;
        }
        let _: () = redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(target.port)
            .arg("")
            .arg(0)
            .arg(5_000)
            .arg("KEYS")
            .arg(&keys)
            .query(&mut src)
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    for n in all.iter().filter(|n| n.master) {
        set(&mut sync_conn(n.port), "NODE", &target.id);
    }
    target.id.clone()
}

/// The port of the first seed node.
fn seed_port() -> u16 {
    redis_cluster()[0]
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a seed URL ends with its port")
}

/// The master serving `slot` in `all`.
fn master_of(all: &[Node], slot: u16) -> Option<&Node> {
    all.iter()
        .find(|n| n.master && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
}

/// The id of the master serving `slot` now.
fn owner(slot: u16) -> String {
    master_of(&nodes(seed_port()), slot)
        .map(|n| n.id.clone())
        .expect("a master serves every slot")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_stay_exact_while_their_templates_slot_moves_to_another_master() {
    let prefix = TestPrefix::new();
    let coupons = Arc::new(FakeCoupons::default());
    let hot = Arc::new(RedisHotState::from_manager(
        cluster_conn().await,
        &prefix.0,
        coupons,
    ));
    let t = template(7_001, 300, 1);
    let now = open_time();
    assert!(matches!(
        hot.claim(&t, coupon(&t, 1, now), None, now).await.unwrap(),
        ClaimOutcome::Claimed(_)
    ));
    let before_slot: u16 = {
        let seed = seed_port();
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(format!("{}:{{tpl:7001}}:meta", prefix.0))
            .query(&mut sync_conn(seed))
            .unwrap()
    };
    let slot = before_slot;
    let source = owner(slot);
    // Claims by 399 more users while the slot moves: 299 coupons are left for them.
    let mover = tokio::task::spawn_blocking(move || migrate_slot(slot));
    let mut claimed = BTreeSet::from([1]);
    let mut sold_out = 0;
    for user in 2..=400 {
        match hot.claim(&t, coupon(&t, user, now), None, now).await {
            Ok(ClaimOutcome::Claimed(c)) => {
                assert!(claimed.insert(c.user_id.get()));
            }
            Ok(ClaimOutcome::Refused(_)) => sold_out += 1,
            other => panic!("claim of user {user} during the move: {other:?}"),
        }
        if user % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let target = mover.await.unwrap();
    assert_eq!(owner(slot), target, "the slot moved");
    assert_ne!(source, target);
    assert_eq!(claimed.len(), 300, "exactly the stock");
    assert_eq!(sold_out, 100);
    assert_eq!(hot.stock(&t).await.unwrap(), Some(0));
    // After the move the template lives on its new master: reads and claims follow `MOVED`.
    assert!(matches!(
        hot.claim(&t, coupon(&t, 1, now), None, now).await.unwrap(),
        ClaimOutcome::Refused(_)
    ));
}
