//! `LoginAttempts`: failed logins per key, lockouts that start after the free failures and
//! double up to a cap, a reset on success, independent keys, concurrent failures each
//! counted, and failures forgotten after the window.

use futures::future::join_all;
use stampede_core::login::{LockoutPolicy, LoginAttempts};

/// Runs every `LoginAttempts` scenario; `$run` takes `impl AsyncFnOnce(&dyn LoginAttempts)`
/// and hands each a fresh, empty store.
#[macro_export]
macro_rules! login_attempts_suite {
    ($run:path) => {
        mod login_attempts {
            #[allow(unused_imports)]
            use super::*;
            $crate::__scenarios!($run; login;
                a_key_is_free_until_its_free_failures_are_used,
                lockouts_double_up_to_the_cap,
                a_reset_forgets_the_failures,
                keys_are_independent,
                concurrent_failures_are_each_counted,
                failures_are_forgotten_after_the_window,
            );
        }
    };
}

const POLICY: LockoutPolicy = LockoutPolicy {
    free_failures: 3,
    initial_lockout_ms: 1_000,
    max_lockout_ms: 4_000,
    window_ms: 60_000,
};

fn now() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

pub async fn a_key_is_free_until_its_free_failures_are_used(a: &dyn LoginAttempts) {
    let t = now();
    for n in 1..=3 {
        assert_eq!(
            a.record_failure("acct:ann", t, &POLICY).await.unwrap(),
            (n, None)
        );
        assert_eq!(a.locked_until("acct:ann", t).await.unwrap(), None);
    }
    let (n, until) = a.record_failure("acct:ann", t, &POLICY).await.unwrap();
    assert_eq!((n, until), (4, Some(t + 1_000)));
    assert_eq!(
        a.locked_until("acct:ann", t).await.unwrap(),
        Some(t + 1_000)
    );
    assert_eq!(
        a.locked_until("acct:ann", t + 999).await.unwrap(),
        Some(t + 1_000)
    );
    assert_eq!(a.locked_until("acct:ann", t + 1_000).await.unwrap(), None);
}

pub async fn lockouts_double_up_to_the_cap(a: &dyn LoginAttempts) {
    let t = now();
    for _ in 0..3 {
        a.record_failure("acct:bo", t, &POLICY).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        let (_, until) = a.record_failure("acct:bo", t, &POLICY).await.unwrap();
        got.push(until.map(|u| u - t));
    }
    assert_eq!(
        got,
        [
            Some(1_000),
            Some(2_000),
            Some(4_000),
            Some(4_000),
            Some(4_000)
        ]
    );
}

pub async fn a_reset_forgets_the_failures(a: &dyn LoginAttempts) {
    let t = now();
    for _ in 0..4 {
        a.record_failure("acct:cy", t, &POLICY).await.unwrap();
    }
    assert!(a.locked_until("acct:cy", t).await.unwrap().is_some());
    a.reset("acct:cy").await.unwrap();
    assert_eq!(a.locked_until("acct:cy", t).await.unwrap(), None);
    assert_eq!(
        a.record_failure("acct:cy", t, &POLICY).await.unwrap(),
        (1, None)
    );
    // Resetting a key that has no record is fine.
    a.reset("acct:nobody").await.unwrap();
}

pub async fn keys_are_independent(a: &dyn LoginAttempts) {
    let t = now();
    for _ in 0..4 {
        a.record_failure("ip:10.0.0.1", t, &POLICY).await.unwrap();
    }
    assert!(a.locked_until("ip:10.0.0.1", t).await.unwrap().is_some());
    assert_eq!(a.locked_until("ip:10.0.0.2", t).await.unwrap(), None);
    assert_eq!(a.locked_until("acct:10.0.0.1", t).await.unwrap(), None);
    assert_eq!(
        a.record_failure("ip:10.0.0.2", t, &POLICY).await.unwrap(),
        (1, None)
    );
}

pub async fn concurrent_failures_are_each_counted(a: &dyn LoginAttempts) {
    let t = now();
    let all = join_all((0..20).map(|_| a.record_failure("acct:dee", t, &POLICY))).await;
    let mut counts: Vec<u32> = all.into_iter().map(|r| r.unwrap().0).collect();
    counts.sort_unstable();
    assert_eq!(counts, (1..=20).collect::<Vec<u32>>());
}

pub async fn failures_are_forgotten_after_the_window(a: &dyn LoginAttempts) {
    let short = LockoutPolicy {
        free_failures: 3,
        initial_lockout_ms: 50,
        max_lockout_ms: 50,
        window_ms: 100,
    };
    a.record_failure("acct:eve", now(), &short).await.unwrap();
    a.record_failure("acct:eve", now(), &short).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        a.record_failure("acct:eve", now(), &short).await.unwrap(),
        (1, None)
    );
}
