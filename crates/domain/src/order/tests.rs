#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use jiff::SignedDuration;
use proptest::prelude::*;

fn t0() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn line(id: i64, until: Timestamp) -> SettlementLine {
    SettlementLine {
        coupon_id: CouponId::new(id).unwrap(),
        template_id: TemplateId::new(100 + id).unwrap(),
        discount: Money::parse(100).unwrap(),
        status: LineStatus::Locked,
        valid_until: until,
    }
}

fn locked(n: i64) -> Settlement {
    let now = t0();
    Settlement {
        order_id: "o-1".into(),
        user_id: UserId::new(7).unwrap(),
        status: OrderStatus::Locked,
        subtotal: Money::parse(10_000).unwrap(),
        discount: Money::parse(100 * n).unwrap(),
        payable: Money::parse(10_000 - 100 * n).unwrap(),
        lock_expires_at: now + SignedDuration::from_mins(15),
        coupons: (1..=n)
            .map(|i| line(i, now + SignedDuration::from_hours(i)))
            .collect(),
        created_at: now,
        updated_at: now,
    }
}

fn changed(a: Applied) -> (Settlement, Vec<CouponMove>) {
    match a {
        Applied::Changed { settlement, moves } => (settlement, moves),
        other => panic!("expected a change, got {other:?}"),
    }
}

#[test]
fn order_ids() {
    assert!(valid_order_id("ord-2026:11.21_x"));
    for bad in ["", "has space", "ü", &"x".repeat(65)] {
        assert!(!valid_order_id(bad), "{bad}");
    }
}

#[test]
fn redeem_then_refund_one_then_all() {
    let s = locked(2);
    let now = t0() + SignedDuration::from_mins(1);
    let (s, moves) = changed(s.apply(&OrderChange::Redeem, now));
    assert_eq!(s.status, OrderStatus::Redeemed);
    assert!(
        moves
            .iter()
            .all(|m| m.to == CouponStatus::Used && m.used_at == Some(now))
    );
    assert_eq!(s.apply(&OrderChange::Redeem, now), Applied::Unchanged);
    let first = s.coupons[0].coupon_id;
    let (s, moves) = changed(s.apply(&OrderChange::Refund(Some(vec![first])), now));
    assert_eq!(moves.len(), 1);
    assert_eq!(moves[0].to, CouponStatus::Unused);
    assert_eq!(
        s.status,
        OrderStatus::Redeemed,
        "partly refunded stays redeemed"
    );
    assert_eq!(
        s.apply(&OrderChange::Refund(Some(vec![first])), now),
        Applied::Unchanged
    );
    // Past the second coupon's validity, its refund gives it back expired.
    let late = t0() + SignedDuration::from_hours(3);
    let (s, moves) = changed(s.apply(&OrderChange::Refund(None), late));
    assert_eq!(moves.len(), 1);
    assert_eq!(moves[0].to, CouponStatus::Expired);
    assert_eq!(s.status, OrderStatus::Refunded);
    assert_eq!(
        s.apply(&OrderChange::Refund(None), late),
        Applied::Unchanged
    );
    assert_eq!(s.apply(&OrderChange::Redeem, late), Applied::Unchanged);
}

#[test]
fn release_and_its_conflicts() {
    let s = locked(1);
    let now = t0();
    let (released, moves) = changed(s.apply(&OrderChange::Release, now));
    assert_eq!(released.status, OrderStatus::Released);
    assert_eq!(moves[0].to, CouponStatus::Unused);
    assert_eq!(moves[0].locked_order, None);
    assert_eq!(
        released.apply(&OrderChange::Release, now),
        Applied::Unchanged
    );
    assert!(matches!(
        released.apply(&OrderChange::Redeem, now),
        Applied::Refused {
            conflict: OrderConflict::CannotRedeem("released"),
            release: None
        }
    ));
    assert!(matches!(
        released.apply(&OrderChange::Refund(None), now),
        Applied::Refused {
            conflict: OrderConflict::CannotRefund("released"),
            ..
        }
    ));
    let (redeemed, _) = changed(s.apply(&OrderChange::Redeem, now));
    assert!(matches!(
        redeemed.apply(&OrderChange::Release, now),
        Applied::Refused {
            conflict: OrderConflict::CannotRelease("redeemed"),
            ..
        }
    ));
    assert!(matches!(
        redeemed.apply(
            &OrderChange::Refund(Some(vec![CouponId::new(999).unwrap()])),
            now
        ),
        Applied::Refused {
            conflict: OrderConflict::NotInOrder(_),
            ..
        }
    ));
}

#[test]
fn an_expired_lock_cannot_be_redeemed_and_is_released_instead() {
    let s = locked(2);
    let at = s.lock_expires_at;
    match s.apply(&OrderChange::Redeem, at) {
        Applied::Refused {
            conflict: OrderConflict::LockExpired(when),
            release: Some(r),
        } => {
            assert_eq!(when, at);
            let (after, moves) = changed(*r);
            assert_eq!(after.status, OrderStatus::Released);
            assert!(moves.iter().all(|m| m.to == CouponStatus::Unused));
        }
        other => panic!("{other:?}"),
    }
    // The expiry job: nothing before the time, a release at it.
    assert_eq!(
        s.apply(&OrderChange::Expire, at - SignedDuration::from_millis(1)),
        Applied::Unchanged
    );
    let (after, _) = changed(s.apply(&OrderChange::Expire, at));
    assert_eq!(after.status, OrderStatus::Released);
    // A redeemed order is never expired.
    let (redeemed, _) = changed(s.apply(&OrderChange::Redeem, t0()));
    assert_eq!(redeemed.apply(&OrderChange::Expire, at), Applied::Unchanged);
}

fn change() -> impl Strategy<Value = (u8, Option<Vec<i64>>, i64)> {
    (
        0u8..4,
        proptest::option::of(proptest::collection::vec(1i64..4, 0..3)),
        0i64..40,
    )
}

proptest! {
    /// Any sequence of changes keeps the state machine's promises: a coupon is used at most
    /// once per order, lines and coupon moves agree, and repeating the last change right away
    /// changes nothing.
    #[test]
    fn any_sequence_keeps_the_state_machine(steps in proptest::collection::vec(change(), 1..12)) {
        let mut s = locked(3);
        let mut redeemed_once = std::collections::HashSet::new();
        for (kind, ids, minutes) in steps {
            let now = t0() + SignedDuration::from_mins(minutes);
            let c = match kind {
                0 => OrderChange::Redeem,
                1 => OrderChange::Release,
                2 => OrderChange::Expire,
                _ => OrderChange::Refund(ids.map(|v| v.into_iter().map(|i| CouponId::new(i).unwrap()).collect())),
            };
            let before = s.clone();
            let outcome = s.apply(&c, now);
            let next = match &outcome {
                Applied::Changed { settlement, moves } => {
                    for m in moves {
                        let l = settlement.coupons.iter().find(|l| l.coupon_id == m.coupon_id).unwrap();
                        let expected = match l.status {
                            LineStatus::Redeemed => CouponStatus::Used,
                            LineStatus::Released => CouponStatus::Unused,
                            LineStatus::Refunded => if now >= l.valid_until { CouponStatus::Expired } else { CouponStatus::Unused },
                            LineStatus::Locked => CouponStatus::Locked,
                        };
                        prop_assert_eq!(m.to, expected);
                        if m.to == CouponStatus::Used {
                            prop_assert!(redeemed_once.insert(m.coupon_id), "redeemed twice");
                        }
                    }
                    prop_assert_eq!(settlement.status, order_status(&settlement.coupons));
                    settlement.clone()
                }
                Applied::Refused { release: Some(r), .. } => match r.as_ref() {
                    Applied::Changed { settlement, .. } => settlement.clone(),
                    _ => before.clone(),
                },
                _ => before.clone(),
            };
            if let Applied::Changed { .. } = outcome {
                prop_assert_eq!(next.apply(&c, now), Applied::Unchanged, "not idempotent: {:?}", c);
            }
            // Released and refunded are terminal for locks: never back to locked.
            if before.status != OrderStatus::Locked {
                prop_assert_ne!(next.status, OrderStatus::Locked);
            }
            s = next;
        }
    }
}
