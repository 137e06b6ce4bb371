//! Template invalidations reach subscribers across connections (real Redis pub/sub).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use stampede_hot_redis::Invalidation;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn published_invalidations_are_delivered_until_cancelled() {
    let prefix = TestPrefix::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let token = CancellationToken::new();
    let subscriber = tokio::spawn(
        Invalidation::subscribe(
            &redis_url(),
            &prefix.0,
            move |t| {
                let _ = tx.send(t);
            },
            token.clone(),
        )
        .expect("a Redis URL"),
    );
    let publisher = Invalidation::connect(&redis_url(), &prefix.0)
        .await
        .unwrap();
    // Another prefix's channel is not ours.
    let stranger = Invalidation::connect(&redis_url(), &format!("{}-other", prefix.0))
        .await
        .unwrap();

    // The subscription starts asynchronously: publish until it is heard.
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            stranger.publish(tid(41)).await.unwrap();
            publisher.publish(tid(42)).await.unwrap();
            tokio::select! {
                Some(t) = rx.recv() => return t,
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    })
    .await
    .expect("an invalidation arrives");
    assert_eq!(got, tid(42));
    assert_eq!(
        publisher.publish(tid(43)).await.unwrap(),
        1,
        "one subscriber"
    );
    let next = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match rx.recv().await {
                Some(t) if t == tid(42) => continue,
                other => return other,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(next, Some(tid(43)));

    token.cancel();
    let res = tokio::time::timeout(Duration::from_secs(5), subscriber)
        .await
        .expect("stops when cancelled");
    assert!(res.is_ok(), "the subscriber ended cleanly");
}

/// Ids of the server's pub/sub clients.
async fn pubsub_clients(conn: &mut redis::aio::ConnectionManager) -> Vec<String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(conn)
        .await
        .unwrap();
    list.lines()
        .filter_map(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("id="))
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn the_subscriber_reconnects_after_losing_its_connection() {
    let prefix = TestPrefix::new();
    let mut admin = conn().await;
    let before = pubsub_clients(&mut admin).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let token = CancellationToken::new();
    let subscriber = tokio::spawn(
        Invalidation::subscribe(
            &redis_url(),
            &prefix.0,
            move |t| {
                let _ = tx.send(t);
            },
            token.clone(),
        )
        .expect("a Redis URL"),
    );
    let publisher = Invalidation::connect(&redis_url(), &prefix.0)
        .await
        .unwrap();
    let heard = |n: i64| {
        let publisher = publisher.clone();
        async move {
            loop {
                if publisher.publish(tid(n)).await.unwrap() > 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), heard(1))
        .await
        .expect("subscribed");
    assert_eq!(rx.recv().await, Some(tid(1)));

    // Kill only the connection this test opened (other processes may use the same Redis).
    let ours: Vec<String> = pubsub_clients(&mut admin)
        .await
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    if ours.len() != 1 {
        eprintln!(
            "could not single out this test's pub/sub connection ({ours:?}); skipping the reconnect check"
        );
        token.cancel();
        return;
    }
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&ours[0])
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(killed, 1);

    tokio::time::timeout(Duration::from_secs(10), heard(2))
        .await
        .expect("resubscribed");
    let next = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match rx.recv().await {
                Some(t) if t == tid(1) => continue,
                other => return other,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(next, Some(tid(2)));
    token.cancel();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), subscriber)
            .await
            .is_ok()
    );
}

/// The catch-up hook runs once the subscription is in place, and only then is a publish heard:
/// what was published before it must be caught up from the store.
#[tokio::test]
async fn the_catch_up_hook_runs_when_the_subscription_is_in_place() {
    let prefix = TestPrefix::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (subscribed_tx, mut subscribed_rx) = tokio::sync::mpsc::unbounded_channel();
    let token = CancellationToken::new();
    let subscriber = tokio::spawn(
        Invalidation::subscribe_with_catch_up(
            &redis_url(),
            &prefix.0,
            move |t| {
                let _ = tx.send(t);
            },
            move || {
                let _ = subscribed_tx.send(());
            },
            token.clone(),
        )
        .expect("a Redis URL"),
    );
    tokio::time::timeout(Duration::from_secs(10), subscribed_rx.recv())
        .await
        .expect("the hook runs")
        .expect("once");
    let publisher = Invalidation::connect(&redis_url(), &prefix.0)
        .await
        .unwrap();
    assert_eq!(
        publisher.publish(tid(7)).await.unwrap(),
        1,
        "subscribed when the hook ran"
    );
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("delivered");
    assert_eq!(got, Some(tid(7)));
    token.cancel();
    subscriber.await.unwrap();
}

/// Shops travel on their own channel (the platform's `0` included), not on the templates'.
#[tokio::test]
async fn shop_invalidations_are_delivered_on_their_own_channel() {
    let prefix = TestPrefix::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (tpl_tx, mut tpl_rx) = tokio::sync::mpsc::unbounded_channel();
    let subscribed = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let token = CancellationToken::new();
    let seen = subscribed.clone();
    tokio::spawn(
        Invalidation::subscribe_shops(
            &redis_url(),
            &prefix.0,
            move |s| {
                let _ = tx.send(s);
            },
            move || {
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            },
            token.clone(),
        )
        .expect("a Redis URL"),
    );
    tokio::spawn(
        Invalidation::subscribe(
            &redis_url(),
            &prefix.0,
            move |t| {
                let _ = tpl_tx.send(t);
            },
            token.clone(),
        )
        .expect("a Redis URL"),
    );
    let publisher = Invalidation::connect(&redis_url(), &prefix.0)
        .await
        .unwrap();
    let shop = |n: i64| stampede_domain::ids::ShopId::from_stored(n).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            publisher.publish_shop(shop(7)).await.unwrap();
            tokio::select! {
                Some(s) = rx.recv() => return s,
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    })
    .await
    .expect("a shop invalidation arrives");
    assert_eq!(got, shop(7));
    assert!(subscribed.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    publisher.publish_shop(shop(0)).await.unwrap();
    let platform = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match rx.recv().await {
                Some(s) if s == shop(7) => continue,
                other => return other,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(platform, Some(shop(0)));
    // Nothing reached the template channel's subscriber.
    assert!(tpl_rx.try_recv().is_err());
    token.cancel();
}
