//! Claims whose answer is lost: looked up by their idempotency key before answering; a claim
//! that may have happened is never answered as a plain failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use stampede_core::AppError;
use stampede_domain::ErrorCode;
use support::*;

#[tokio::test]
async fn a_lost_answer_of_a_claim_that_happened_is_the_original_201() {
    let w = world(true).await;
    w.hot.next(Fault::LostAfterMaking);
    let (c, replayed) = w
        .claims
        .claim(&user(7), w.template.id, Some("k-1"))
        .await
        .expect("resolved by the key");
    assert!(!replayed, "answered as the original claim (201)");
    assert_eq!(w.hot.made.lock().unwrap().len(), 1);
    // The client's own retry with the key gets the same coupon, nothing more taken.
    let (again, replayed) = w
        .claims
        .claim(&user(7), w.template.id, Some("k-1"))
        .await
        .unwrap();
    assert!(replayed);
    assert_eq!(again.id, c.id);
    assert_eq!(w.hot.made.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_lost_answer_the_lookup_cannot_find_is_outcome_unknown_and_the_retry_is_safe() {
    let w = world(true).await;
    w.hot.next(Fault::LostBeforeMaking);
    let e = w
        .claims
        .claim(&user(7), w.template.id, Some("k-2"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::OutcomeUnknown);
    assert!(w.hot.made.lock().unwrap().is_empty());
    let (_, replayed) = w
        .claims
        .claim(&user(7), w.template.id, Some("k-2"))
        .await
        .unwrap();
    assert!(!replayed);
    assert_eq!(w.hot.made.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_lost_answer_whose_lookup_fails_is_outcome_unknown_then_the_retry_replays() {
    let w = world(true).await;
    w.hot.next(Fault::LostAndLookupFails);
    let e = w
        .claims
        .claim(&user(7), w.template.id, Some("k-3"))
        .await
        .unwrap_err();
    assert!(matches!(e, AppError::OutcomeUnknown(_)), "{e:?}");
    let first = w.hot.made.lock().unwrap()[0].clone();
    let (c, replayed) = w
        .claims
        .claim(&user(7), w.template.id, Some("k-3"))
        .await
        .unwrap();
    assert!(replayed);
    assert_eq!(c.id, first.id, "the same coupon, not a second one");
    assert_eq!(w.hot.made.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_claim_that_was_never_sent_is_a_plain_unavailable() {
    let w = world(true).await;
    w.hot.next(Fault::NotSent);
    let e = w
        .claims
        .claim(&user(7), w.template.id, Some("k-4"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unavailable);
    assert!(w.hot.made.lock().unwrap().is_empty());
}

#[tokio::test]
async fn without_a_key_a_lost_answer_cannot_be_looked_up() {
    let w = world(false).await;
    w.hot.next(Fault::LostAfterMaking);
    let e = w
        .claims
        .claim(&user(7), w.template.id, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::OutcomeUnknown);
}

#[tokio::test]
async fn a_claim_without_a_key_is_refused_when_keys_are_required() {
    let w = world(true).await;
    let e = w
        .claims
        .claim(&user(7), w.template.id, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::IdempotencyKeyRequired);
    assert!(w.hot.made.lock().unwrap().is_empty());
    // Not required: the claim goes through.
    let w = world(false).await;
    assert!(w.claims.claim(&user(7), w.template.id, None).await.is_ok());
}

#[tokio::test]
async fn a_keyed_claim_before_the_start_is_refused_without_the_hot_state() {
    let w = world(true).await;
    w.clock.set(ts(START) - jiff::SignedDuration::from_secs(1));
    // The hot state would lose the answer: it is never asked.
    w.hot.next(Fault::LostAfterMaking);
    let e = w
        .claims
        .claim(&user(7), w.template.id, Some("early"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::ClaimNotStarted);
    assert!(w.hot.made.lock().unwrap().is_empty());
}
