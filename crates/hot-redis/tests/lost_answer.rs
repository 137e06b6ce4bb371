//! A claim whose answer is lost on the wire: Redis ran the script, the connection broke
//! before the reply arrived. The adapter reports `OutcomeUnknown` (not a plain failure),
//! `find_claim` finds the claim by its key, and the retry with the same key replays the same
//! coupon without taking more stock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use stampede_core::claim_ports::{ClaimOutcome, HotState};
use stampede_core::ports::{Dependency, StoreError};
use stampede_hot_redis::RedisHotState;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy to Redis that, once armed, swallows the next reply and drops the connection.
struct LossyProxy {
    port: u16,
    armed: Arc<AtomicBool>,
}

impl LossyProxy {
    async fn start() -> Self {
        let upstream = redis_url()
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let armed2 = armed.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(pipe(client, server, armed2.clone()));
            }
        });
        Self { port, armed }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

async fn pipe(client: TcpStream, server: TcpStream, armed: Arc<AtomicBool>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = cr.read(&mut buf).await {
            if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = sr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        if armed.swap(false, Ordering::SeqCst) {
            // The reply never reaches the client: both halves close.
            break;
        }
        if cw.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    up.abort();
}

#[tokio::test]
async fn a_claim_whose_reply_is_lost_is_found_by_its_key_and_replayed_once() {
    let prefix = TestPrefix::new();
    let proxy = LossyProxy::start().await;
    let hot = RedisHotState::connect(&proxy.url(), &prefix.0, Arc::new(FakeCoupons::default()))
        .await
        .expect("connect through the proxy");
    let t = template(41, 10, 2);
    let now = open_time();
    // Load the template first, so the lost reply is the claim's own.
    let first = hot
        .claim(&t, coupon(&t, 1, now), Some("warm"), now)
        .await
        .unwrap();
    assert!(matches!(first, ClaimOutcome::Claimed(_)));

    proxy.armed.store(true, Ordering::SeqCst);
    let sent = coupon(&t, 7, now);
    let err = hot
        .claim(&t, sent.clone(), Some("tap-1"), now)
        .await
        .expect_err("the reply was lost");
    assert!(
        matches!(
            err,
            StoreError::OutcomeUnknown {
                dependency: Dependency::Redis,
                ..
            }
        ),
        "{err:?}"
    );

    // The connection comes back; the lookup by key shows the claim happened.
    let mut found = None;
    for _ in 0..50 {
        match hot.find_claim(&t, sent.user_id, "tap-1").await {
            Ok(c) => {
                found = c;
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    let found = found.expect("the claim happened and is found by its key");
    assert_eq!(found.id, sent.id);
    assert_eq!(
        hot.find_claim(&t, sent.user_id, "other").await.unwrap(),
        None
    );

    // The client's retry with the same key: the same coupon, nothing more taken.
    let again = hot
        .claim(&t, coupon(&t, 7, now), Some("tap-1"), now)
        .await
        .unwrap();
    match again {
        ClaimOutcome::Replayed(c) => assert_eq!(c.id, sent.id),
        other => panic!("expected a replay, got {other:?}"),
    }
    assert_eq!(hot.stock(&t).await.unwrap(), Some(8));
    let mut conn = conn().await;
    assert_eq!(xlen(&mut conn, &prefix.0, t.id).await, 2);
    // It also shows in the user's pending coupons (read-your-writes).
    let pending = hot.pending_coupons(sent.user_id).await.unwrap();
    assert!(pending.iter().any(|c| c.id == sent.id));
}
