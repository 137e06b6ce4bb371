//! `RedisRateLimiter` against the rate-limiter conformance suite (a real Redis, a random key
//! prefix per scenario), plus what only it shows: two nodes share one limit, and an
//! unreachable Redis falls back to the per-node limiter within the deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestPrefix, redis_url};
use stampede_core::flow::{Check, Decision, FlowKey, RateLimiter};
use stampede_domain::flow::Rate;
use stampede_hot_memory::MemoryRateLimiter;
use stampede_hot_redis::RedisRateLimiter;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn limiter(prefix: &TestPrefix) -> RedisRateLimiter {
    let conn = stampede_hot_redis::connect(&redis_url()).await.unwrap();
    RedisRateLimiter::new(
        conn,
        &prefix.0,
        Duration::from_millis(200),
        Arc::new(MemoryRateLimiter::new()),
        1,
    )
}

async fn run(scenario: impl AsyncFnOnce(Arc<dyn RateLimiter>)) {
    let prefix = TestPrefix::new();
    scenario(Arc::new(limiter(&prefix).await)).await;
}

stampede_conformance::rate_limiter_suite!(run);

fn check(per_second: u32, burst: u32) -> [Check; 1] {
    [Check {
        key: FlowKey::ClaimTemplate(42),
        rate: Rate { per_second, burst },
    }]
}

#[tokio::test]
async fn two_nodes_share_one_limit() {
    let prefix = TestPrefix::new();
    let (a, b) = (limiter(&prefix).await, limiter(&prefix).await);
    let c = check(1, 4);
    let mut allowed = 0;
    for _ in 0..4 {
        for node in [&a, &b] {
            if node.check(&c).await.unwrap() == Decision::Allowed {
                allowed += 1;
            }
        }
    }
    assert_eq!(allowed, 4, "the burst is the fleet's, not each node's");
}

/// A private `redis-server` on a spare port, killed when dropped.
struct PrivateRedis {
    child: std::process::Child,
    url: String,
}

impl PrivateRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let url = format!("redis://127.0.0.1:{port}");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, url }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_dead_redis_falls_back_to_the_node_share_within_the_deadline() {
    let mut redis = PrivateRedis::start();
    let conn = stampede_hot_redis::connect(&redis.url).await.unwrap();
    let l = RedisRateLimiter::new(
        conn,
        "stampede-test-down",
        Duration::from_millis(20),
        Arc::new(MemoryRateLimiter::new()),
        2,
    );
    assert_eq!(l.check(&check(1, 1)).await.unwrap(), Decision::Allowed);
    redis.child.kill().unwrap();
    redis.child.wait().unwrap();

    let started = Instant::now();
    // Fleet rule: burst 10 over 2 expected nodes, so this node alone allows 5.
    let c = [Check {
        key: FlowKey::ClaimUser(9),
        rate: Rate {
            per_second: 1,
            burst: 10,
        },
    }];
    let mut allowed = 0;
    for _ in 0..10 {
        if l.check(&c).await.unwrap() == Decision::Allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 5);
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "at most one deadline, then local answers: {:?}",
        started.elapsed()
    );
}
