//! `RateLimiter`: a key gets its burst at once, then tokens at its rate; a refusal names the
//! check that refused and when to retry; keys and rules do not share buckets; concurrent
//! callers never get more than the burst.
//!
//! Scenarios run on the wall clock (the limiters measure real time), with rates chosen so
//! that a slow test machine can only make them pass more surely, not fail.

use stampede_core::flow::{Check, Decision, FlowKey, RateLimiter};
use stampede_domain::flow::{Rate, RouteClass};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

/// Runs every `RateLimiter` scenario. `$run` takes `impl AsyncFnOnce(Arc<dyn RateLimiter>)`
/// and hands it a fresh limiter (its own key space).
#[macro_export]
macro_rules! rate_limiter_suite {
    ($run:path) => {
        mod rate_limiter {
            #[allow(unused_imports)]
            use super::*;
            $crate::__scenarios!($run; rate_limiter;
                the_burst_is_allowed_then_refused_with_retry_after,
                keys_and_rules_have_their_own_buckets,
                tokens_come_back_at_the_rate,
                a_refusal_names_the_check_that_refused,
                concurrent_callers_never_exceed_the_burst,
            );
        }
    };
}

fn rate(per_second: u32, burst: u32) -> Rate {
    Rate { per_second, burst }
}

fn user(u: i64, r: Rate) -> Check {
    Check {
        key: FlowKey::ClaimUser(u),
        rate: r,
    }
}

async fn ask(l: &dyn RateLimiter, checks: &[Check]) -> Decision {
    l.check(checks).await.expect("the limiter answers")
}

pub async fn the_burst_is_allowed_then_refused_with_retry_after(l: Arc<dyn RateLimiter>) {
    // 2 per second: a token every 500 ms, far longer than the test takes.
    let r = rate(2, 3);
    for i in 0..3 {
        assert_eq!(ask(&*l, &[user(1, r)]).await, Decision::Allowed, "call {i}");
    }
    match ask(&*l, &[user(1, r)]).await {
        Decision::Limited { index, retry_after } => {
            assert_eq!(index, 0);
            assert!(retry_after > Duration::ZERO, "{retry_after:?}");
            assert!(retry_after <= Duration::from_millis(505), "{retry_after:?}");
        }
        Decision::Allowed => panic!("a fourth call within the burst of three"),
    }
}

pub async fn keys_and_rules_have_their_own_buckets(l: Arc<dyn RateLimiter>) {
    let r = rate(1, 1);
    assert_eq!(ask(&*l, &[user(7, r)]).await, Decision::Allowed);
    assert!(matches!(
        ask(&*l, &[user(7, r)]).await,
        Decision::Limited { .. }
    ));
    // Another user, an IP, a template and a route: each a bucket of its own.
    let others = [
        FlowKey::ClaimUser(8),
        FlowKey::ClaimIp(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))),
        FlowKey::ClaimTemplate(7),
        FlowKey::Route(RouteClass::Claim),
    ];
    for key in others {
        let c = Check { key, rate: r };
        assert_eq!(ask(&*l, &[c]).await, Decision::Allowed, "{key}");
    }
}

pub async fn tokens_come_back_at_the_rate(l: Arc<dyn RateLimiter>) {
    // 20 per second: one token every 50 ms.
    let r = rate(20, 1);
    assert_eq!(ask(&*l, &[user(3, r)]).await, Decision::Allowed);
    let Decision::Limited { retry_after, .. } = ask(&*l, &[user(3, r)]).await else {
        panic!("the burst of one is spent");
    };
    assert!(retry_after <= Duration::from_millis(55), "{retry_after:?}");
    tokio::time::sleep(retry_after + Duration::from_millis(20)).await;
    assert_eq!(ask(&*l, &[user(3, r)]).await, Decision::Allowed);
}

pub async fn a_refusal_names_the_check_that_refused(l: Arc<dyn RateLimiter>) {
    let roomy = user(4, rate(1_000, 1_000));
    let tight = Check {
        key: FlowKey::ClaimTemplate(4),
        rate: rate(1, 1),
    };
    assert_eq!(ask(&*l, &[roomy, tight]).await, Decision::Allowed);
    assert!(matches!(
        ask(&*l, &[roomy, tight]).await,
        Decision::Limited { index: 1, .. }
    ));
}

pub async fn concurrent_callers_never_exceed_the_burst(l: Arc<dyn RateLimiter>) {
    let r = rate(1, 10);
    let calls = (0..50).map(|_| {
        let l = l.clone();
        tokio::spawn(async move { ask(&*l, &[user(5, r)]).await })
    });
    let answers = futures::future::join_all(calls).await;
    let allowed = answers
        .into_iter()
        .filter(|a| matches!(a, Ok(Decision::Allowed)))
        .count();
    // The burst, plus at most one token that came back while the calls ran.
    assert!((10..=11).contains(&allowed), "{allowed} allowed");
}
