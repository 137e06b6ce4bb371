//! Redis under Sentinel: a node follows a failover, and with `WAIT 1` (`ReplicaWait`) the
//! failover loses no acknowledged claim. The test starts its own group (master, replica, three
//! sentinels: `scripts/redis-sentinel.sh`), never the shared Redis, kills the master with
//! SIGKILL under claim load, and checks every acknowledged claim on the promoted master.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use stampede_core::claim_ports::{ClaimOutcome, HotState};
use stampede_core::ports::StoreError;
use stampede_domain::template::Template;
use stampede_hot_redis::{Persister, RedisHotState, RedisTopology, ReplicaWait, connect_bare};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../scripts/redis-sentinel.sh"
);

/// A private Sentinel group, stopped (and its data removed) on drop.
struct Group {
    env: BTreeMap<String, String>,
}

impl Group {
    fn start() -> Self {
        let out = Command::new(SCRIPT)
            .arg("start")
            .output()
            .expect("run redis-sentinel.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self { env }
    }

    fn var(&self, k: &str) -> &str {
        self.env.get(k).map(String::as_str).expect(k)
    }

    fn topology(&self) -> RedisTopology {
        RedisTopology::Sentinel {
            sentinels: self
                .var("STAMPEDE_TEST_REDIS_SENTINEL")
                .split(',')
                .map(str::to_owned)
                .collect(),
            master: self.var("STAMPEDE_TEST_REDIS_SENTINEL_MASTER").to_owned(),
        }
    }

    fn pid(&self, port: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/{port}/redis.pid",
            self.var("REDIS_SENTINEL_DIR")
        ))
        .expect("pid file")
        .trim()
        .to_owned()
    }

    /// The port of the master the sentinels name now.
    fn master_port(&self) -> Option<String> {
        let first = self.var("STAMPEDE_TEST_REDIS_SENTINEL").split(',').next()?;
        let port = first.rsplit(':').next()?;
        let out = Command::new("redis-cli")
            .args([
                "-p",
                port,
                "sentinel",
                "get-master-addr-by-name",
                "stampede",
            ])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .map(str::to_owned)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(dir) = self.env.get("REDIS_SENTINEL_DIR") {
            let _ = Command::new(SCRIPT).args(["stop", dir]).status();
        }
    }
}

/// What the load saw: acknowledged coupons by key, and keys whose outcome was unknown.
#[derive(Default)]
struct Seen {
    acked: BTreeMap<String, String>,
    unknown: BTreeSet<String>,
    unavailable: usize,
}

async fn claim_once(hot: &RedisHotState, t: &Template, user: i64, seen: &Mutex<Seen>) {
    let key = format!("k{user}");
    let now = open_time();
    let outcome = hot.claim(t, coupon(t, user, now), Some(&key), now).await;
    let mut s = seen.lock().unwrap();
    match outcome {
        Ok(ClaimOutcome::Claimed(c) | ClaimOutcome::Replayed(c)) => {
            s.unknown.remove(&key);
            s.acked.insert(key, c.id.to_string());
        }
        Ok(ClaimOutcome::Refused(r)) => panic!("refused {r:?}: the stock is ample"),
        Err(StoreError::OutcomeUnknown { .. }) => {
            s.unknown.insert(key);
        }
        Err(StoreError::Unavailable { .. }) => s.unavailable += 1,
        Err(e) => panic!("claim of user {user}: {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_under_claim_load_loses_no_acknowledged_claim() {
    let group = Group::start();
    let prefix = TestPrefix::new();
    let wait = ReplicaWait {
        replicas: 1,
        timeout: Duration::from_millis(200),
    };
    let conn = connect_bare(&group.topology())
        .await
        .expect("master reachable");
    let hot = Arc::new(
        RedisHotState::from_manager(conn.clone(), &prefix.0, Arc::new(FakeCoupons::default()))
            .with_replica_wait(Some(wait)),
    );
    let t = template(8_001, 1_000_000, 1);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let old_master = group.var("REDIS_SENTINEL_MASTER_PORT").to_owned();

    // 8 clients claiming for distinct users until told to stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let next_user = Arc::new(std::sync::atomic::AtomicI64::new(1));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (hot, t, seen, stop, next) = (
            hot.clone(),
            t.clone(),
            seen.clone(),
            stop.clone(),
            next_user.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let user = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                claim_once(&hot, &t, user, &seen).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let acked_before = seen.lock().unwrap().acked.len();
    assert!(
        acked_before > 50,
        "claims flow before the kill: {acked_before}"
    );

    // SIGKILL the master; Sentinel promotes the replica.
    let killed_at = Instant::now();
    Command::new("kill")
        .args(["-9", &group.pid(&old_master)])
        .status()
        .unwrap();
    let promoted = loop {
        if let Some(p) = group.master_port().filter(|p| *p != old_master) {
            break p;
        }
        assert!(killed_at.elapsed() < Duration::from_secs(30), "no failover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let promoted_after = killed_at.elapsed();
    // The new master has no replica until the old one returns (Sentinel makes it one): until
    // then `WAIT 1` cannot be met and claims are answered as unknown, never acknowledged.
    let out = Command::new(SCRIPT)
        .args(["revive", group.var("REDIS_SENTINEL_DIR"), &old_master])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acked_at_revive = seen.lock().unwrap().acked.len();
    let recovered = loop {
        let n = seen.lock().unwrap().acked.len();
        if n > acked_at_revive + 50 {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(60),
            "claims did not resume"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    // Unknown outcomes are retried with their keys, as a client does: each either replays
    // (it survived) or claims anew (it was lost with the old master); either way, once.
    let retry: Vec<String> = seen.lock().unwrap().unknown.iter().cloned().collect();
    for key in &retry {
        let user: i64 = key[1..].parse().unwrap();
        let mut tries = 0;
        loop {
            claim_once(&hot, &t, user, &seen).await;
            if seen.lock().unwrap().acked.contains_key(key) {
                break;
            }
            tries += 1;
            assert!(tries < 100, "retry of {key} never settled");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Every acknowledged claim is on the promoted master, once, and the counts agree.
    assert_eq!(group.master_port().as_deref(), Some(promoted.as_str()));
    let reader = Persister::new(
        conn.clone(),
        &prefix.0,
        Arc::new(FakeLog::default()),
        "reader",
        10_000_000,
    );
    let logged: BTreeMap<String, String> = reader
        .read_batch(t.id)
        .await
        .unwrap()
        .map(|b| b.records)
        .unwrap_or_default()
        .into_iter()
        .map(|r| (r.coupon.user_id.to_string(), r.coupon.id.to_string()))
        .collect();
    let stock = hot.stock(&t).await.unwrap().unwrap();
    let s = seen.lock().unwrap();
    for (key, coupon) in &s.acked {
        assert_eq!(
            logged.get(&key[1..]),
            Some(coupon),
            "acknowledged claim {key} → {coupon} is in the promoted master's log"
        );
    }
    assert_eq!(
        1_000_000 - stock,
        i64::try_from(logged.len()).unwrap(),
        "stock taken = claims in the log"
    );
    assert!(s.unknown.is_empty());
    eprintln!(
        "sentinel failover: {} claims acknowledged ({} before the kill), {} answered unknown \
         and retried by key, {} refused as unavailable; promoted after {:.1} s, claims \
         acknowledged again {:.1} s after the kill; {} in the log, none acknowledged missing",
        s.acked.len(),
        acked_before,
        retry.len(),
        s.unavailable,
        promoted_after.as_secs_f64(),
        recovered.as_secs_f64(),
        logged.len()
    );
}
