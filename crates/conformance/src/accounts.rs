//! `AccountStore`: accounts unique by exact username, login sessions and refresh-token
//! rotation, where presenting a rotated token revokes the whole session.

use crate::StoreFixture;
use crate::fixtures::*;
use stampede_core::ports::{Account, RefreshOutcome, StoreError};
use stampede_domain::auth::Role;

/// Runs every `AccountStore` scenario; see the crate docs.
#[macro_export]
macro_rules! account_store_suite {
    ($run:path) => {
        mod account_store {
            #[allow(unused_imports)]
            use super::*;
            $crate::__scenarios!($run; accounts;
                accounts_are_unique_by_exact_username,
                refresh_rotation_then_reuse_revokes_the_session,
            );
        }
    };
}

/// A merchant of shop 77 named `username`.
pub fn account(id: i64, username: &str) -> Account {
    Account {
        id,
        username: username.to_owned(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        role: Role::Merchant,
        shop_id: Some(shop(77)),
        created_at: now(),
    }
}

fn hash(n: u64) -> String {
    format!("{n:064x}")
}

pub async fn accounts_are_unique_by_exact_username(f: &dyn StoreFixture) {
    let s = f.store();
    let alice = account(1, "alice");
    let root = Account {
        role: Role::Admin,
        shop_id: None,
        ..account(2, "root@example.com")
    };
    s.create_account(&alice).await.unwrap();
    s.create_account(&root).await.unwrap();
    let taken = s.create_account(&account(3, "alice")).await;
    assert!(matches!(taken, Err(StoreError::Duplicate(_))), "{taken:?}");
    // Usernames match exactly: another case is another account.
    let upper = Account {
        role: Role::User,
        shop_id: None,
        ..account(4, "Alice")
    };
    s.create_account(&upper).await.unwrap();

    assert_eq!(s.account_by_username("alice").await.unwrap(), Some(alice));
    assert_eq!(
        s.account_by_username("root@example.com").await.unwrap(),
        Some(root)
    );
    assert_eq!(s.account_by_username("Alice").await.unwrap(), Some(upper));
    assert_eq!(s.account_by_username("bob").await.unwrap(), None);
}

pub async fn refresh_rotation_then_reuse_revokes_the_session(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let rotate = async |presented: u64, next: u64, at_mins: i64| {
        store
            .rotate_refresh(
                &hash(presented),
                &hash(next),
                at(at_mins) + hours(24),
                at(at_mins),
            )
            .await
            .unwrap()
    };
    let alice = account(1, "alice");
    store.create_account(&alice).await.unwrap();
    store
        .create_session("s1", alice.id, &hash(1), at(60), now())
        .await
        .unwrap();
    assert_eq!(
        store.session_of_refresh(&hash(1)).await.unwrap().as_deref(),
        Some("s1")
    );
    assert_eq!(store.session_of_refresh(&hash(999)).await.unwrap(), None);

    match rotate(1, 2, 1).await {
        RefreshOutcome::Rotated {
            account,
            session_id,
        } => assert_eq!((account, session_id.as_str()), (alice.clone(), "s1")),
        other => panic!("expected Rotated, got {other:?}"),
    }
    assert_eq!(
        store.session_of_refresh(&hash(2)).await.unwrap().as_deref(),
        Some("s1")
    );
    match rotate(2, 3, 2).await {
        RefreshOutcome::Rotated { session_id, .. } => assert_eq!(session_id, "s1"),
        other => panic!("expected Rotated, got {other:?}"),
    }
    assert_eq!(
        store.session_of_refresh(&hash(3)).await.unwrap().as_deref(),
        Some("s1")
    );

    // Token 1 again: it leaked, so the whole session ends, the newest token included.
    assert!(matches!(rotate(1, 4, 3).await, RefreshOutcome::Reused));
    assert!(matches!(rotate(3, 5, 4).await, RefreshOutcome::Invalid));
    assert!(
        matches!(rotate(1, 6, 5).await, RefreshOutcome::Invalid),
        "a revoked session stays revoked"
    );
    assert!(
        matches!(rotate(777, 8, 5).await, RefreshOutcome::Invalid),
        "unknown token"
    );

    // Expiry is exclusive of the deadline: a token expiring at `now` is already dead.
    store
        .create_session("s2", alice.id, &hash(20), at(10), now())
        .await
        .unwrap();
    assert!(matches!(rotate(20, 21, 10).await, RefreshOutcome::Invalid));

    // Logout: revoking is idempotent and kills the live token.
    store
        .create_session("s3", alice.id, &hash(30), at(60), now())
        .await
        .unwrap();
    store.revoke_session("s3", now()).await.unwrap();
    store.revoke_session("s3", at(1)).await.unwrap();
    store
        .revoke_session("no-such-session", now())
        .await
        .unwrap();
    assert!(matches!(rotate(30, 31, 2).await, RefreshOutcome::Invalid));

    // Session ids are compared exactly.
    store
        .create_session("S3", alice.id, &hash(40), at(60), now())
        .await
        .unwrap();
    assert!(matches!(
        rotate(40, 41, 1).await,
        RefreshOutcome::Rotated { .. }
    ));

    // A second session with an existing id is refused, not merged.
    let dup = store
        .create_session("s1", alice.id, &hash(60), at(60), now())
        .await;
    assert!(matches!(dup, Err(StoreError::Duplicate(_))), "{dup:?}");

    // The same token presented twice at once: one rotation, one reuse.
    store
        .create_session("s5", alice.id, &hash(50), at(60), now())
        .await
        .unwrap();
    let outcomes = race(2, |i| {
        let s = s.clone();
        async move {
            s.rotate_refresh(&hash(50), &hash(51 + i as u64), at(1) + hours(24), at(1))
                .await
                .unwrap()
        }
    })
    .await;
    let rotated = outcomes
        .iter()
        .filter(|o| matches!(o, RefreshOutcome::Rotated { .. }))
        .count();
    let reused = outcomes
        .iter()
        .filter(|o| matches!(o, RefreshOutcome::Reused))
        .count();
    assert_eq!((rotated, reused), (1, 1), "{outcomes:?}");
}
