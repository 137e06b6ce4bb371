//! Users invalidated on one node reach the other nodes' subscribers, batched, and a node
//! does not hear itself (real Redis pub/sub).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use stampede_domain::ids::UserId;
use stampede_hot_redis::UserInvalidation;
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A subscriber for node `tag`: what it hears, and how often it (re)subscribed.
fn listen(
    prefix: &str,
    tag: u64,
    token: &CancellationToken,
) -> (
    mpsc::UnboundedReceiver<Vec<UserId>>,
    mpsc::UnboundedReceiver<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (sub_tx, sub_rx) = mpsc::unbounded_channel();
    tokio::spawn(
        UserInvalidation::subscribe(
            &redis_url(),
            prefix,
            tag,
            move |users| {
                let _ = tx.send(users);
            },
            move || {
                let _ = sub_tx.send(());
            },
            token.clone(),
        )
        .expect("a Redis URL"),
    );
    (rx, sub_rx)
}

#[tokio::test]
async fn other_nodes_hear_every_user_and_the_sender_does_not() {
    let prefix = TestPrefix::new();
    let token = CancellationToken::new();
    let (mut other, mut other_subscribed) = listen(&prefix.0, 2, &token);
    let (mut own, mut own_subscribed) = listen(&prefix.0, 1, &token);
    for s in [&mut other_subscribed, &mut own_subscribed] {
        tokio::time::timeout(Duration::from_secs(10), s.recv())
            .await
            .expect("subscribed");
    }
    // Pub/sub subscription is confirmed before `on_subscribed`; publishing now is heard.
    let (tx, rx) = mpsc::channel(10_000);
    tokio::spawn(UserInvalidation::publisher(
        conn().await.into(),
        &prefix.0,
        1,
        rx,
        token.clone(),
    ));
    let sent: HashSet<UserId> = (1..=5_000).map(uid).collect();
    for u in &sent {
        tx.send(*u).await.unwrap();
    }
    let mut heard = HashSet::new();
    let mut messages = 0;
    tokio::time::timeout(Duration::from_secs(10), async {
        while heard.len() < sent.len() {
            let batch = other.recv().await.expect("a message");
            messages += 1;
            heard.extend(batch);
        }
    })
    .await
    .expect("every user is heard");
    assert_eq!(heard, sent);
    assert!(
        messages < sent.len(),
        "ids are batched: {messages} messages for {} users",
        sent.len()
    );
    // The sender's own subscriber skipped all of it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(own.try_recv().is_err(), "a node does not hear itself");
    token.cancel();
}
