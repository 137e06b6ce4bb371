//! The database down (every store call answers `Unavailable { Database }`): template reads
//! serve this node's copy with its age, claims go on, "my coupons" serves what the node holds
//! marked partial, and what needs the database says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use stampede_core::AppError;
use stampede_core::ports::Dependency;
use std::sync::atomic::Ordering;
use support::*;

#[tokio::test]
async fn a_template_read_serves_the_stale_copy_with_its_age_when_the_database_is_down() {
    let w = world(true).await;
    let id = w.template.id;
    let (_, age) = w.claims.public_template(id).await.unwrap();
    assert_eq!(age, None, "fresh while the database answers");

    w.store.down.store(true, Ordering::SeqCst);
    // The fresh entry goes (a change notification, or its TTL): the next read must load.
    w.claims.catalog().invalidate(id).await;
    let (view, age) = w.claims.public_template(id).await.expect("stale copy");
    assert_eq!(view.id, id);
    assert!(age.is_some(), "a stale copy says how old it is");

    // Claims keep working on the stale copy (the hot state holds the stock).
    let (c, _) = w
        .claims
        .claim(&user(3), id, Some("while-down"))
        .await
        .expect("claims ride through");
    assert_eq!(c.template_id, id);

    // Back up: fresh again.
    w.store.down.store(false, Ordering::SeqCst);
    w.claims.catalog().invalidate(id).await;
    assert_eq!(w.claims.public_template(id).await.unwrap().1, None);
}

#[tokio::test]
async fn a_template_never_loaded_is_unavailable_naming_the_database() {
    let w = world(true).await;
    w.store.down.store(true, Ordering::SeqCst);
    let e = w
        .claims
        .public_template(w.template.id)
        .await
        .expect_err("no copy to serve");
    assert!(
        matches!(
            e,
            AppError::Unavailable {
                dependency: Some(Dependency::Database),
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn my_coupons_serves_pending_claims_marked_partial_when_the_database_is_down() {
    let w = world(true).await;
    let (c, _) = w
        .claims
        .claim(&user(5), w.template.id, Some("a"))
        .await
        .unwrap();
    let page = w
        .claims
        .my_coupons(&user(5), None, None, None)
        .await
        .unwrap();
    assert!(!page.partial);
    assert_eq!(page.items.len(), 1);

    w.store.down.store(true, Ordering::SeqCst);
    let page = w
        .claims
        .my_coupons(&user(5), None, None, None)
        .await
        .expect("partial, not 503");
    assert!(page.partial);
    assert_eq!(page.items.iter().map(|c| c.id).collect::<Vec<_>>(), [c.id]);
    // One coupon the node holds is served; one it does not waits for the database.
    assert_eq!(w.claims.my_coupon(&user(5), c.id).await.unwrap().id, c.id);
    let other = stampede_domain::ids::CouponId::new(c.id.get() + 1).unwrap();
    let e = w.claims.my_coupon(&user(5), other).await.unwrap_err();
    assert!(
        matches!(
            e,
            AppError::Unavailable {
                dependency: Some(Dependency::Database),
                ..
            }
        ),
        "{e:?}"
    );
}

/// A claim leaves the pending set only after it is stored. "My coupons" reads the pending
/// set first, so a coupon applied between its two reads is in the second (the other order
/// missed it: gone from pending, not yet in the stored page).
#[tokio::test]
async fn my_coupons_keeps_a_claim_applied_between_its_two_reads() {
    let w = world(true).await;
    let (c, _) = w
        .claims
        .claim(&user(5), w.template.id, Some("a"))
        .await
        .unwrap();
    *w.hot.apply_before_pending_read.lock().unwrap() = Some(w.store.clone());
    let page = w
        .claims
        .my_coupons(&user(5), None, None, None)
        .await
        .unwrap();
    assert_eq!(page.items.iter().map(|c| c.id).collect::<Vec<_>>(), [c.id]);
    assert!(
        w.hot.made.lock().unwrap().is_empty(),
        "the coupon was applied"
    );
}

#[tokio::test]
async fn a_write_that_needs_the_database_is_unavailable_naming_it() {
    use stampede_core::backoffice::{BackOffice, CreateTemplate};
    use stampede_domain::auth::{Principal, Role};
    use stampede_domain::ids::ShopId;
    use stampede_domain::template::{Kind, TemplateDraft};

    let w = world(true).await;
    w.store.down.store(true, Ordering::SeqCst);
    let ids = std::sync::Arc::new(
        stampede_core::ids::IdGenerator::new(
            2,
            w.clock.clone(),
            std::time::Duration::from_millis(10),
        )
        .unwrap(),
    );
    let office = BackOffice::new(w.store.clone(), ids, w.clock.clone());
    let merchant = Principal {
        subject: "m".into(),
        role: Role::Merchant,
        shop_id: ShopId::new(77),
        session_id: None,
    };
    let draft = TemplateDraft {
        name: Some("new".into()),
        kind: Some(Kind::Fixed),
        amount_off: Some(100),
        stock_total: Some(5),
        claim_start: Some(ts("2032-01-01T00:00:00Z")),
        claim_end: Some(ts("2032-01-02T00:00:00Z")),
        validity_hours: Some(24),
        per_user_limit: Some(1),
        ..TemplateDraft::default()
    };
    let e = office
        .create(
            &merchant,
            CreateTemplate {
                draft,
                shop_id: None,
                idempotency: None,
                edge_errors: Default::default(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            AppError::Unavailable {
                dependency: Some(Dependency::Database),
                ..
            }
        ),
        "{e:?}"
    );
}
