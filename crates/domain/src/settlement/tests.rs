//! Unit tests on hand-built cases; `props` holds the property tests and the brute-force
//! oracle, `timing` an ignored timing loop (`cargo test --release -- --ignored timing`).

use super::*;
use crate::coupon::{CouponStatus, Origin, UserCoupon};
use crate::ids::{CouponId, GoodsId, ShopId, TemplateId, UserId};
use crate::money::Money;
use crate::template::{Kind, Scope, Source, Template, TemplateStatus};
use jiff::{SignedDuration, Timestamp};

mod props;
mod timing;

pub(super) fn now() -> Timestamp {
    "2026-03-01T12:00:00Z"
        .parse()
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

pub(super) fn cents(c: i64) -> Money {
    Money::parse(c).unwrap_or_else(|e| panic!("{c}: {e}"))
}

pub(super) fn cid(n: i64) -> CouponId {
    CouponId::new(n).unwrap_or_else(|| panic!("coupon id {n}"))
}

pub(super) fn gid(n: i64) -> GoodsId {
    GoodsId::new(n).unwrap_or_else(|| panic!("goods id {n}"))
}

/// Shop `0` is the platform.
pub(super) fn sid(n: i64) -> ShopId {
    ShopId::from_stored(n).unwrap_or_else(|| panic!("shop id {n}"))
}

/// `(goods, shop, unit_price, quantity)` lines.
pub(super) fn cart(lines: &[(i64, i64, i64, i64)]) -> Cart {
    let drafts: Vec<CartItemDraft> = lines
        .iter()
        .map(|&(g, s, p, q)| CartItemDraft {
            goods_id: Some(gid(g)),
            shop_id: Some(sid(s)),
            unit_price: Some(p),
            quantity: Some(q),
        })
        .collect();
    Cart::validate(&drafts).unwrap_or_else(|e| panic!("cart: {e}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum R {
    Fixed(i64),
    /// `(amount_off, threshold)`
    Threshold(i64, i64),
    /// `(percent_off, threshold, max_off)`
    Percent(u8, i64, Option<i64>),
}

/// A template of shop `shop` (`0`: platform) over `goods` (empty: scope shop).
pub(super) fn template(id: i64, shop: i64, goods: &[i64], rule: R) -> Template {
    let (kind, amount_off, threshold, percent_off, max_off) = match rule {
        R::Fixed(a) => (Kind::Fixed, Some(cents(a)), None, None, None),
        R::Threshold(a, t) => (Kind::Threshold, Some(cents(a)), Some(cents(t)), None, None),
        R::Percent(p, t, cap) => (Kind::Percent, None, Some(cents(t)), Some(p), cap.map(cents)),
    };
    let t0 = now() - SignedDuration::from_hours(24 * 30);
    Template {
        id: TemplateId::new(id).unwrap_or_else(|| panic!("template id {id}")),
        shop_id: sid(shop),
        name: format!("template {id}"),
        instructions: String::new(),
        source: if shop == 0 {
            Source::Platform
        } else {
            Source::Shop
        },
        scope: if goods.is_empty() {
            Scope::Shop
        } else {
            Scope::Goods
        },
        goods_ids: goods.iter().map(|&g| gid(g)).collect(),
        kind,
        amount_off,
        threshold,
        percent_off,
        max_off,
        stock_total: 100,
        stock: 100,
        claim_start: t0,
        claim_end: t0 + SignedDuration::from_hours(24),
        valid_from: None,
        valid_until: None,
        validity_hours: Some(24 * 60),
        per_user_limit: 1,
        status: TemplateStatus::Active,
        created_at: t0,
        updated_at: t0,
    }
}

/// An unused coupon of `t`, valid from a day before `now()` to a day after.
pub(super) fn coupon(id: i64, t: &Template) -> UserCoupon {
    let day = SignedDuration::from_hours(24);
    UserCoupon {
        id: cid(id),
        user_id: UserId::new(42).unwrap_or_else(|| unreachable!()),
        template_id: t.id,
        shop_id: t.shop_id,
        seq: 1,
        origin: Origin::Claim,
        status: CouponStatus::Unused,
        valid_from: now() - day,
        valid_until: now() + day,
        claimed_at: now() - day,
        locked_order_id: None,
        used_at: None,
    }
}

/// Coupon `id` of a fresh template `id` of `shop` over `goods`.
pub(super) fn held(id: i64, shop: i64, goods: &[i64], rule: R) -> (UserCoupon, Template) {
    let t = template(id, shop, goods, rule);
    (coupon(id, &t), t)
}

fn usable(e: &Evaluation) -> (i64, i64) {
    match e {
        Evaluation::Usable { eligible, discount } => (eligible.cents(), discount.cents()),
        Evaluation::Unusable(r) => panic!("expected usable, got {r:?}"),
    }
}

fn refused(e: Evaluation) -> Refusal {
    match e {
        Evaluation::Unusable(r) => r,
        Evaluation::Usable { .. } => panic!("expected unusable, got {e:?}"),
    }
}

fn eval(h: &(UserCoupon, Template), c: &Cart) -> Evaluation {
    evaluate(&h.0, &h.1, c, now())
}

fn ids(ns: &[i64]) -> Vec<CouponId> {
    ns.iter().map(|&n| cid(n)).collect()
}

#[test]
fn percent_rounds_down_then_caps() {
    let c = cart(&[(1, 1, 999, 1)]);
    assert_eq!(
        usable(&eval(&held(1, 1, &[], R::Percent(15, 0, None)), &c)),
        (999, 149)
    );
    assert_eq!(
        usable(&eval(&held(2, 1, &[], R::Percent(15, 0, Some(100))), &c)),
        (999, 100)
    );
    // The cap applies after rounding: 99% of 999 = 989.01 → 989, cap 989 changes nothing.
    assert_eq!(
        usable(&eval(&held(3, 1, &[], R::Percent(99, 0, Some(989))), &c)),
        (999, 989)
    );
    let big = cart(&[(1, 1, 1_000_000_000_000, 1)]);
    assert_eq!(
        usable(&eval(&held(4, 1, &[], R::Percent(99, 0, None)), &big)),
        (1_000_000_000_000, 990_000_000_000)
    );
}

#[test]
fn amount_never_exceeds_eligible() {
    let c = cart(&[(1, 1, 300, 1), (2, 1, 700, 1)]);
    assert_eq!(
        usable(&eval(&held(1, 1, &[1], R::Fixed(500)), &c)),
        (300, 300)
    );
    assert_eq!(
        usable(&eval(&held(2, 1, &[], R::Fixed(500)), &c)),
        (1000, 500)
    );
    assert_eq!(
        usable(&eval(&held(3, 1, &[], R::Threshold(500, 1000)), &c)),
        (1000, 500)
    );
}

#[test]
fn eligible_subtotal_by_source_and_scope() {
    // Goods 1 is sold by shops 1 and 2; goods 2 by shop 1; goods 3 by shop 2.
    let c = cart(&[
        (1, 1, 100, 2),
        (2, 1, 1000, 1),
        (1, 2, 10, 1),
        (3, 2, 5000, 1),
    ]);
    let eligible = |h| usable(&eval(&h, &c)).0;
    assert_eq!(eligible(held(1, 1, &[], R::Fixed(1))), 1200);
    assert_eq!(eligible(held(2, 1, &[1], R::Fixed(1))), 200);
    assert_eq!(eligible(held(3, 2, &[1, 2], R::Fixed(1))), 10);
    assert_eq!(eligible(held(4, 0, &[], R::Fixed(1))), 6210);
    assert_eq!(eligible(held(5, 0, &[1], R::Fixed(1))), 210);
    assert_eq!(eligible(held(6, 0, &[1, 3, 9], R::Fixed(1))), 5210);
    assert_eq!(c.subtotal(), cents(6210));
    assert_eq!(c.shop_subtotal(sid(2)), cents(5010));
    assert_eq!(c.shop_subtotal(sid(9)), Money::ZERO);
}

#[test]
fn every_reason_code() {
    let c = cart(&[(1, 1, 1000, 1), (2, 2, 50, 1)]);
    let base = held(1, 1, &[], R::Fixed(100));
    let with_status = |s| {
        let mut h = base.clone();
        h.0.status = s;
        refused(eval(&h, &c)).reason_code
    };
    assert_eq!(with_status(CouponStatus::Locked), ReasonCode::Locked);
    assert_eq!(with_status(CouponStatus::Used), ReasonCode::Used);
    assert_eq!(with_status(CouponStatus::Revoked), ReasonCode::Revoked);
    assert_eq!(with_status(CouponStatus::Expired), ReasonCode::Expired);

    let mut past = base.clone();
    past.0.valid_until = now();
    assert_eq!(refused(eval(&past, &c)).reason_code, ReasonCode::Expired);
    past.0.valid_until = now() + SignedDuration::from_millis(1);
    usable(&eval(&past, &c));

    let mut early = base.clone();
    early.0.valid_from = now() + SignedDuration::from_millis(1);
    let r = refused(eval(&early, &c));
    assert_eq!(r.reason_code, ReasonCode::NotYetValid);
    assert!(r.reason.contains("becomes valid"), "{}", r.reason);
    early.0.valid_from = now();
    usable(&eval(&early, &c));

    let other = held(2, 3, &[], R::Fixed(100));
    assert_eq!(refused(eval(&other, &c)).reason_code, ReasonCode::OtherShop);
    let unlisted = held(3, 1, &[2], R::Fixed(100));
    assert_eq!(
        refused(eval(&unlisted, &c)).reason_code,
        ReasonCode::NoEligibleGoods
    );
    let platform_unlisted = held(4, 0, &[7], R::Fixed(100));
    assert_eq!(
        refused(eval(&platform_unlisted, &c)).reason_code,
        ReasonCode::NoEligibleGoods
    );
    let free = cart(&[(1, 1, 0, 3)]);
    assert_eq!(
        refused(eval(&base, &free)).reason_code,
        ReasonCode::NoEligibleGoods
    );

    let below = held(5, 1, &[], R::Threshold(500, 2250));
    let r = refused(eval(&below, &c));
    assert_eq!(r.reason_code, ReasonCode::BelowThreshold);
    assert_eq!(r.missing, Some(cents(1250)));
    assert_eq!(
        r.reason,
        "add 12.50 more of eligible goods to reach the threshold"
    );
    let percent_below = held(6, 0, &[], R::Percent(10, 1051, None));
    assert_eq!(refused(eval(&percent_below, &c)).missing, Some(cents(1)));

    // 1% of 0.50 is half a cent: rounds down to nothing; 1.00 would give a cent.
    let tiny = held(7, 2, &[], R::Percent(1, 0, None));
    let r = refused(eval(&tiny, &c));
    assert_eq!(r.reason_code, ReasonCode::ZeroDiscount);
    assert_eq!(r.missing, Some(cents(50)));
    // 99% of one cent: two cents would give a cent.
    let one = cart(&[(1, 1, 1, 1)]);
    let r = refused(eval(&held(8, 1, &[], R::Percent(99, 0, None)), &one));
    assert_eq!(
        (r.reason_code, r.missing),
        (ReasonCode::ZeroDiscount, Some(cents(1)))
    );

    // Every code has a stable wire form.
    for code in ReasonCode::ALL {
        assert_eq!(ReasonCode::parse(code.as_str()), Some(code));
        assert_eq!(
            serde_json::to_value(code).ok(),
            Some(serde_json::json!(code.as_str()))
        );
    }
}

#[test]
fn first_failing_check_wins() {
    let c = cart(&[(1, 1, 1000, 1)]);
    // Locked and outside its window, for another shop: the status is reported.
    let mut h = held(1, 9, &[], R::Threshold(100, 5000));
    h.0.status = CouponStatus::Locked;
    h.0.valid_until = now();
    assert_eq!(refused(eval(&h, &c)).reason_code, ReasonCode::Locked);
    h.0.status = CouponStatus::Unused;
    h.0.valid_until = now() + SignedDuration::from_hours(1);
    h.0.valid_from = now() + SignedDuration::from_millis(1);
    assert_eq!(refused(eval(&h, &c)).reason_code, ReasonCode::NotYetValid);
    h.0.valid_from = now();
    assert_eq!(refused(eval(&h, &c)).reason_code, ReasonCode::OtherShop);
    let h = held(2, 1, &[5], R::Threshold(100, 5000));
    assert_eq!(
        refused(eval(&h, &c)).reason_code,
        ReasonCode::NoEligibleGoods
    );
}

#[test]
fn format_money_shows_units_and_cents() {
    for (c, s) in [
        (0, "0.00"),
        (5, "0.05"),
        (1250, "12.50"),
        (100_000, "1000.00"),
    ] {
        assert_eq!(format_money(cents(c)), s);
    }
}

#[test]
fn smaller_shop_discount_keeps_the_platform_threshold() {
    // Shop 1 sells 100.00. Its coupons take 30.00 or 10.00; the platform coupon takes 25.00
    // from 80.00 up. Greedy takes 30.00 and leaves 70.00: no platform discount (30.00 total).
    // 10.00 leaves 90.00, and the platform adds 25.00: 35.00.
    let c = cart(&[(1, 1, 10_000, 1)]);
    let coupons = vec![
        held(1, 1, &[], R::Fixed(3_000)),
        held(2, 1, &[], R::Fixed(1_000)),
        held(3, 0, &[], R::Threshold(2_500, 8_000)),
    ];
    let b = best(&coupons, &c, now());
    assert_eq!(b.coupon_ids, ids(&[2, 3]));
    assert_eq!((b.discount, b.payable), (cents(3_500), cents(6_500)));

    let chosen = |ns: &[usize]| ns.iter().map(|&i| coupons[i].clone()).collect::<Vec<_>>();
    let priced = price_selection(&chosen(&[1, 2]), &c, now());
    let Ok(p) = priced else { panic!("{priced:?}") };
    assert_eq!(p.discount, cents(3_500));
    assert_eq!(
        p.per_coupon,
        vec![
            CouponDiscount {
                coupon_id: cid(2),
                discount: cents(1_000)
            },
            CouponDiscount {
                coupon_id: cid(3),
                discount: cents(2_500)
            },
        ]
    );
    // The greedy pair is refused: after the 30.00 shop discount the platform is short 10.00.
    match price_selection(&chosen(&[0, 2]), &c, now()) {
        Err(SelectionError::NotUsable { coupon_id, refusal }) => {
            assert_eq!(coupon_id, cid(3));
            assert_eq!(refusal.reason_code, ReasonCode::BelowThreshold);
            assert_eq!(refusal.missing, Some(cents(1_000)));
            assert!(
                refusal
                    .reason
                    .starts_with("after the shop coupons' discounts")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn shop_discount_comes_off_the_platform_covered_goods_first() {
    // Shop 1: goods 1 (60.00, platform-listed) and goods 2 (40.00). A 50.00 shop coupon
    // leaves the platform 10.00 of goods 1; a 70.00 one leaves nothing of it.
    let c = cart(&[(1, 1, 6_000, 1), (2, 1, 4_000, 1), (3, 2, 2_000, 1)]);
    let platform = held(9, 0, &[1, 3], R::Percent(50, 0, None));
    let s50 = held(1, 1, &[], R::Fixed(5_000));
    let s70 = held(2, 1, &[], R::Fixed(7_000));
    let price = |hs: Vec<(UserCoupon, Template)>| {
        price_selection(&hs, &c, now()).map(|p| p.discount.cents())
    };
    // 50.00 + 50% of (10.00 + 20.00)
    assert_eq!(price(vec![s50.clone(), platform.clone()]), Ok(6_500));
    // 70.00 + 50% of (0 + 20.00)
    assert_eq!(price(vec![s70.clone(), platform.clone()]), Ok(8_000));
    let b = best(&[s50, s70, platform], &c, now());
    assert_eq!((b.coupon_ids, b.discount), (ids(&[2, 9]), cents(8_000)));
}

#[test]
fn ties_go_to_fewer_coupons_then_smaller_ids() {
    // 30.00 in one shop: a 30.00 coupon alone ties with 25.00 + a 5.00 platform coupon.
    let c = cart(&[(1, 1, 3_000, 1)]);
    let coupons = vec![
        held(5, 1, &[], R::Fixed(3_000)),
        held(1, 1, &[], R::Fixed(2_500)),
        held(2, 0, &[], R::Fixed(500)),
    ];
    let b = best(&coupons, &c, now());
    assert_eq!((b.coupon_ids, b.discount), (ids(&[5]), cents(3_000)));
    // Two pairs of two coupons at 20.00: {1, 2} wins over {3, 4} although the stronger
    // platform coupon 4 is searched first.
    let c100 = cart(&[(1, 1, 10_000, 1)]);
    let pairs = vec![
        held(1, 1, &[], R::Fixed(1_000)),
        held(2, 0, &[], R::Threshold(1_000, 9_000)),
        held(3, 1, &[], R::Fixed(500)),
        held(4, 0, &[], R::Threshold(1_500, 9_500)),
    ];
    let b = best(&pairs, &c100, now());
    assert_eq!((b.coupon_ids, b.discount), (ids(&[1, 2]), cents(2_000)));
    // Same with a second shop: {1, 2}, {3, 4} and {4, 5} all take 20.00 with two coupons.
    let two_shops = cart(&[(1, 1, 10_000, 1), (2, 2, 1_000, 1)]);
    let pairs = vec![
        held(1, 1, &[], R::Fixed(1_000)),
        held(2, 0, &[], R::Threshold(1_000, 10_000)),
        held(3, 1, &[], R::Fixed(500)),
        held(4, 0, &[], R::Threshold(1_500, 10_500)),
        held(5, 2, &[], R::Fixed(500)),
    ];
    let b = best(&pairs, &two_shops, now());
    assert_eq!((b.coupon_ids, b.discount), (ids(&[1, 2]), cents(2_000)));
    // Two copies of the same template: the smaller id.
    let t = template(1, 1, &[], R::Fixed(700));
    let copies = vec![(coupon(8, &t), t.clone()), (coupon(4, &t), t.clone())];
    assert_eq!(best(&copies, &c, now()).coupon_ids, ids(&[4]));
    // Nothing usable: no coupon, full price.
    let b = best(&[held(3, 2, &[], R::Fixed(1))], &c, now());
    assert_eq!(
        (b.coupon_ids, b.discount, b.payable),
        (vec![], Money::ZERO, cents(3_000))
    );
}

#[test]
fn selection_errors() {
    let c = cart(&[(1, 1, 10_000, 1), (2, 2, 10_000, 1)]);
    let a = held(1, 1, &[], R::Fixed(100));
    let a2 = held(2, 1, &[], R::Fixed(200));
    let b = held(3, 2, &[], R::Fixed(300));
    let p = held(4, 0, &[], R::Fixed(400));
    let p2 = held(5, 0, &[], R::Fixed(500));
    let far = held(6, 2, &[], R::Threshold(100, 50_000));
    let price = |hs: &[&(UserCoupon, Template)]| {
        let v: Vec<_> = hs.iter().map(|&h| h.clone()).collect();
        price_selection(&v, &c, now())
    };
    assert_eq!(price(&[&a, &b, &a]), Err(SelectionError::Duplicate(cid(1))));
    assert_eq!(
        price(&[&a2, &b, &a]),
        Err(SelectionError::SameShop {
            shop_id: sid(1),
            first: cid(1),
            second: cid(2)
        })
    );
    assert_eq!(
        price(&[&p2, &p]),
        Err(SelectionError::TwoPlatform {
            first: cid(4),
            second: cid(5)
        })
    );
    let err = price(&[&a, &far]);
    let Err(SelectionError::NotUsable { coupon_id, refusal }) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (*coupon_id, refusal.reason_code),
        (cid(6), ReasonCode::BelowThreshold)
    );
    assert_eq!(
        err.as_ref().map_err(SelectionError::code),
        Err(crate::ErrorCode::CouponNotUsable)
    );
    assert_eq!(
        SelectionError::Duplicate(cid(1)).code(),
        crate::ErrorCode::ValidationFailed
    );
    let ok = price(&[&p, &b, &a]);
    assert_eq!(
        ok.map(|p| (p.discount.cents(), p.payable.cents(), p.per_coupon.len())),
        Ok((800, 19_200, 3))
    );
    assert_eq!(price(&[]).map(|p| p.discount), Ok(Money::ZERO));
}

#[test]
fn quote_lists_and_orders() {
    let c = cart(&[(1, 1, 5_000, 1), (2, 2, 3_000, 1)]);
    let mut coupons = vec![
        held(10, 1, &[], R::Fixed(500)),
        held(11, 2, &[], R::Fixed(500)),
        held(12, 0, &[], R::Percent(10, 0, None)),
        held(13, 1, &[], R::Threshold(1_000, 9_000)),
        held(14, 1, &[], R::Threshold(1_000, 6_000)),
        held(15, 3, &[], R::Fixed(100)),
        held(16, 1, &[], R::Fixed(100)),
    ];
    coupons[1].0.valid_until = now() + SignedDuration::from_hours(2);
    coupons[6].0.status = CouponStatus::Used;
    let q = quote(&coupons, &c, now());
    assert_eq!(q.subtotal, cents(8_000));
    let avail: Vec<(i64, i64)> = q
        .available
        .iter()
        .map(|a| (a.coupon_id.get(), a.discount.cents()))
        .collect();
    // 11 expires before 10: same discount, listed first.
    assert_eq!(avail, vec![(12, 800), (11, 500), (10, 500)]);
    let unavail: Vec<(i64, ReasonCode, Option<i64>)> = q
        .unavailable
        .iter()
        .map(|u| {
            (
                u.coupon_id.get(),
                u.reason_code,
                u.missing.map(Money::cents),
            )
        })
        .collect();
    assert_eq!(
        unavail,
        vec![
            (14, ReasonCode::BelowThreshold, Some(1_000)),
            (13, ReasonCode::BelowThreshold, Some(4_000)),
            (15, ReasonCode::OtherShop, None),
            (16, ReasonCode::Used, None),
        ]
    );
    // 5.00 + 5.00 from the shops, then 10% of the 70.00 left.
    assert_eq!(q.best.coupon_ids, ids(&[10, 11, 12]));
    assert_eq!(
        (q.best.discount, q.best.payable),
        (cents(1_700), cents(6_300))
    );

    let json = serde_json::to_value(&q).unwrap_or_default();
    assert_eq!(json["subtotal"], serde_json::json!(8000));
    assert_eq!(json["available"][0]["coupon_id"], serde_json::json!("12"));
    assert_eq!(json["available"][0]["kind"], serde_json::json!("percent"));
    assert_eq!(
        json["unavailable"][0]["reason_code"],
        serde_json::json!("BELOW_THRESHOLD")
    );
    assert_eq!(json["unavailable"][0]["missing"], serde_json::json!(1000));
    assert_eq!(
        json["best"]["coupon_ids"],
        serde_json::json!(["10", "11", "12"])
    );
    assert_eq!(json["best"]["payable"], serde_json::json!(6300));
}

#[test]
fn cart_reports_every_error_at_once() {
    let good = CartItemDraft {
        goods_id: Some(gid(1)),
        shop_id: Some(sid(1)),
        unit_price: Some(100),
        quantity: Some(1),
    };
    let drafts = vec![
        good,
        CartItemDraft {
            quantity: Some(0),
            unit_price: Some(-1),
            ..good
        },
        CartItemDraft {
            shop_id: Some(ShopId::PLATFORM),
            quantity: Some(10_001),
            ..good
        },
        CartItemDraft::default(),
        CartItemDraft {
            unit_price: Some(1_000_000_000),
            quantity: Some(10_000),
            ..good
        },
        CartItemDraft {
            unit_price: Some(1_000_000_000_001),
            ..good
        },
    ];
    let fields: Vec<String> = Cart::validate(&drafts)
        .err()
        .map(|e| e.into_vec().into_iter().map(|f| f.field).collect())
        .unwrap_or_default();
    assert_eq!(
        fields,
        [
            "items[1].unit_price",
            "items[1].quantity",
            "items[2].shop_id",
            "items[2].quantity",
            "items[3].goods_id",
            "items[3].shop_id",
            "items[3].unit_price",
            "items[3].quantity",
            "items[4]",
            "items[5].unit_price",
        ]
    );

    let no_items = Cart::validate(&[]).err().map(|e| e.has("items"));
    assert_eq!(no_items, Some(true));
    let too_many = Cart::validate(&vec![good; MAX_CART_ITEMS + 1])
        .err()
        .map(|e| e.into_vec().len());
    assert_eq!(too_many, Some(1));
    assert!(Cart::validate(&vec![good; MAX_CART_ITEMS]).is_ok());

    // Each line fits, the sum does not.
    let half = CartItemDraft {
        unit_price: Some(500_000_000_001),
        ..good
    };
    let sum = Cart::validate(&[half, half]).err().map(|e| e.into_vec());
    assert_eq!(sum.as_deref().map(|v| v[0].field.as_str()), Some("items"));
    let max = CartItemDraft {
        unit_price: Some(100_000_000),
        quantity: Some(10_000),
        ..good
    };
    assert_eq!(
        Cart::validate(&[max]).map(|c| c.subtotal()),
        Ok(cents(1_000_000_000_000))
    );
}

#[test]
fn contrived_carts_stop_at_the_budget_with_a_valid_combination() {
    // 14 shops with 4 close shop coupons each, percent platform coupons whose threshold
    // binds: the exact search would take millions of nodes.
    let lines: Vec<(i64, i64, i64, i64)> = (1..=14).map(|s| (s, s, 10_000 + s * 37, 1)).collect();
    let c = cart(&lines);
    let subtotal = c.subtotal().cents();
    let mut coupons = Vec::new();
    let mut x: i64 = 12_345;
    let mut next = |n: i64| {
        x = (x * 1_103_515_245 + 12_345) % 2_147_483_648;
        x % n
    };
    for s in 1..=14 {
        for k in 0..4 {
            coupons.push(held(s * 10 + k, s, &[], R::Fixed(100 + next(3_000))));
        }
    }
    for k in 0..10 {
        let threshold = subtotal - 2_000 - next(20_000);
        coupons.push(held(1_000 + k, 0, &[], R::Percent(99, threshold, None)));
    }
    let b = best(&coupons, &c, now());
    assert!(!b.exact);
    let chosen: Vec<_> = coupons
        .iter()
        .filter(|h| b.coupon_ids.contains(&h.0.id))
        .cloned()
        .collect();
    assert_eq!(
        price_selection(&chosen, &c, now()).map(|p| p.discount),
        Ok(b.discount)
    );
    // Still deterministic, and no worse than the shops' own maxima alone.
    let mut reversed = coupons.clone();
    reversed.reverse();
    assert_eq!(best(&reversed, &c, now()), b);
    let shops_only: Vec<_> = coupons
        .iter()
        .filter(|h| h.1.source == Source::Shop)
        .cloned()
        .collect();
    assert!(b.discount >= best(&shops_only, &c, now()).discount);
}
