//! Accounts, sessions and refresh-token rotation (global tables in databases[0]).

use crate::helpers::*;
use jiff::SignedDuration;
use stampede_core::ports::{Account, AccountStore, RefreshOutcome, StoreError};
use stampede_domain::auth::Role;
use stampede_store_mysql::MysqlStore;

both_layouts!(accounts_are_unique_by_username, refresh_rotation_and_reuse);

fn account(id: i64, username: &str, role: Role, shop_id: Option<i64>) -> Account {
    Account {
        id,
        username: username.to_owned(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        role,
        shop_id: shop_id.map(shop),
        created_at: now(),
    }
}

fn hash(n: u64) -> String {
    format!("{n:064x}")
}

async fn accounts_are_unique_by_username(ctx: Ctx) {
    let store = &ctx.store;
    let alice = account(1, "alice", Role::Merchant, Some(5));
    let root = account(2, "root@example.com", Role::Admin, None);
    store.create_account(&alice).await.unwrap();
    store.create_account(&root).await.unwrap();
    let taken = store
        .create_account(&account(3, "alice", Role::Admin, None))
        .await;
    assert!(matches!(taken, Err(StoreError::Duplicate(_))), "{taken:?}");
    // Usernames match exactly: another case is another account.
    store
        .create_account(&account(4, "Alice", Role::User, None))
        .await
        .unwrap();

    assert_eq!(
        store.account_by_username("alice").await.unwrap(),
        Some(alice)
    );
    assert_eq!(
        store.account_by_username("root@example.com").await.unwrap(),
        Some(root)
    );
    assert_eq!(
        store
            .account_by_username("Alice")
            .await
            .unwrap()
            .map(|a| a.id),
        Some(4)
    );
    assert_eq!(store.account_by_username("bob").await.unwrap(), None);
}

async fn rotate(store: &MysqlStore, presented: u64, next: u64, at_mins: i64) -> RefreshOutcome {
    let at = now() + SignedDuration::from_mins(at_mins);
    store
        .rotate_refresh(&hash(presented), &hash(next), at + hours(24), at)
        .await
        .unwrap()
}

async fn refresh_rotation_and_reuse(ctx: Ctx) {
    let store = &ctx.store;
    let alice = account(1, "alice", Role::Merchant, Some(5));
    store.create_account(&alice).await.unwrap();
    store
        .create_session("s1", alice.id, &hash(1), now() + hours(24), now())
        .await
        .unwrap();
    assert_eq!(
        store.session_of_refresh(&hash(1)).await.unwrap().as_deref(),
        Some("s1")
    );
    assert_eq!(store.session_of_refresh(&hash(999)).await.unwrap(), None);

    match rotate(store, 1, 2, 1).await {
        RefreshOutcome::Rotated {
            account,
            session_id,
        } => {
            assert_eq!(account, alice);
            assert_eq!(session_id, "s1");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        rotate(store, 2, 3, 2).await,
        RefreshOutcome::Rotated { .. }
    ));
    assert_eq!(
        store.session_of_refresh(&hash(3)).await.unwrap().as_deref(),
        Some("s1")
    );
    // Token 1 again: it leaked, so the whole session ends, current token included.
    assert!(matches!(
        rotate(store, 1, 4, 3).await,
        RefreshOutcome::Reused
    ));
    assert!(matches!(
        rotate(store, 3, 5, 4).await,
        RefreshOutcome::Invalid
    ));
    assert!(
        matches!(rotate(store, 1, 6, 5).await, RefreshOutcome::Invalid),
        "a revoked session stays revoked"
    );
    assert!(
        matches!(rotate(store, 777, 8, 5).await, RefreshOutcome::Invalid),
        "unknown token"
    );

    // Expired.
    store
        .create_session("s2", alice.id, &hash(20), now() + hours(1), now())
        .await
        .unwrap();
    assert!(matches!(
        rotate(store, 20, 21, 61).await,
        RefreshOutcome::Invalid
    ));

    // Logged out (twice: revoking is idempotent).
    store
        .create_session("s3", alice.id, &hash(30), now() + hours(1), now())
        .await
        .unwrap();
    store.revoke_session("s3", now()).await.unwrap();
    store.revoke_session("s3", now() + hours(1)).await.unwrap();
    store
        .revoke_session("no-such-session", now())
        .await
        .unwrap();
    assert!(matches!(
        rotate(store, 30, 31, 1).await,
        RefreshOutcome::Invalid
    ));

    // Session ids are compared exactly.
    store
        .create_session("S3", alice.id, &hash(40), now() + hours(1), now())
        .await
        .unwrap();
    assert!(matches!(
        rotate(store, 40, 41, 1).await,
        RefreshOutcome::Rotated { .. }
    ));

    // The same token presented twice at once: one rotation, one reuse.
    store
        .create_session("s5", alice.id, &hash(50), now() + hours(1), now())
        .await
        .unwrap();
    let racers: Vec<_> = (0..2)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { rotate(&store, 50, 51 + i, 1).await })
        })
        .collect();
    let outcomes: Vec<RefreshOutcome> = futures::future::join_all(racers)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, RefreshOutcome::Rotated { .. }))
            .count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, RefreshOutcome::Reused))
            .count(),
        1,
        "{outcomes:?}"
    );
}
