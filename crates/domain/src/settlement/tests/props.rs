//! Property tests: the exact optimum against a brute-force oracle written independently of
//! the production code, pricing of every subset, bounds, and order independence.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy)]
enum Window {
    Valid,
    NotYet,
    Past,
}

#[derive(Debug, Clone)]
struct Spec {
    /// 0: platform; 4 is never in the cart.
    shop: i64,
    goods: Vec<i64>,
    rule: R,
    status: CouponStatus,
    window: Window,
}

type Line = (i64, i64, i64, i64);

/// An amount in cents: often whole units (ties, as merchants set them), else any cents.
fn amount(max_units: i64) -> impl Strategy<Value = i64> {
    prop_oneof![(1..=max_units).prop_map(|u| u * 100), 1..=max_units * 100]
}

fn rule() -> impl Strategy<Value = R> {
    prop_oneof![
        amount(30).prop_map(R::Fixed),
        (amount(30), amount(80)).prop_map(|(a, extra)| R::Threshold(a, a + extra)),
        (
            1u8..=99,
            prop_oneof![Just(0i64), amount(100)],
            proptest::option::of(amount(30))
        )
            .prop_map(|(p, t, cap)| R::Percent(p, t, cap)),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop_oneof![3 => Just(0i64), 6 => 1i64..=2, 2 => Just(3i64), 1 => Just(4i64)],
        prop::collection::vec(1i64..=6, 0..=3),
        rule(),
        prop_oneof![
            8 => Just(CouponStatus::Unused),
            1 => Just(CouponStatus::Locked),
            1 => Just(CouponStatus::Used),
            1 => Just(CouponStatus::Revoked),
            1 => Just(CouponStatus::Expired),
        ],
        prop_oneof![8 => Just(Window::Valid), 1 => Just(Window::NotYet), 1 => Just(Window::Past)],
    )
        .prop_map(|(shop, mut goods, rule, status, window)| {
            goods.sort_unstable();
            goods.dedup();
            Spec {
                shop,
                goods,
                rule,
                status,
                window,
            }
        })
}

fn lines() -> impl Strategy<Value = Vec<Line>> {
    prop::collection::vec(
        (
            1i64..=6,
            prop_oneof![3 => 1i64..=2, 1 => Just(3i64)],
            prop_oneof![(0i64..=50).prop_map(|u| u * 100), 0i64..=5_000],
            1i64..=3,
        ),
        1..=6,
    )
}

/// Specs and a permutation of their coupon ids (so ids do not follow the list order).
fn specs() -> impl Strategy<Value = (Vec<Spec>, Vec<i64>)> {
    prop::collection::vec(spec(), 0..=10).prop_flat_map(|specs| {
        let ids: Vec<i64> = (1..=specs.len() as i64).map(|i| i * 7).collect();
        (Just(specs), Just(ids).prop_shuffle())
    })
}

/// Carts and coupons where the stacking is tight: several shop coupons per shop and platform
/// thresholds between half the subtotal and all of it, so the greedy choice is often wrong.
fn dense() -> impl Strategy<Value = (Vec<Line>, Vec<Spec>, Vec<i64>)> {
    prop::collection::vec(
        (
            1i64..=4,
            1i64..=2,
            (1i64..=40).prop_map(|u| u * 100),
            1i64..=2,
        ),
        1..=5,
    )
    .prop_flat_map(|lines| {
        let total: i64 = lines.iter().map(|l| l.2 * l.3).sum();
        let unused = |shop: i64, goods: Vec<i64>, rule: R| Spec {
            shop,
            goods,
            rule,
            status: CouponStatus::Unused,
            window: Window::Valid,
        };
        let shop_coupon = (
            1i64..=2,
            prop_oneof![3 => Just(vec![]), 1 => prop::collection::vec(1i64..=4, 1..=2)],
            prop_oneof![
                (1..=total.max(1)).prop_map(R::Fixed),
                (1i64..=10).prop_map(|u| R::Fixed(u * 500)),
                (1u8..=99).prop_map(|p| R::Percent(p, 0, None)),
            ],
        )
            .prop_map(move |(shop, goods, rule)| unused(shop, goods, rule));
        let platform = (
            prop_oneof![3 => Just(vec![]), 1 => prop::collection::vec(1i64..=4, 1..=2)],
            (total / 2).max(2)..=total.max(2),
            prop_oneof![
                (1..=total.max(1)).prop_map(Some),
                (1i64..=10).prop_map(|u| Some(u * 500)),
                Just(None)
            ],
            1u8..=99,
        )
            .prop_map(move |(goods, threshold, off, p)| match off {
                Some(a) => unused(0, goods, R::Threshold(a.min(threshold - 1), threshold)),
                None => unused(0, goods, R::Percent(p, threshold, None)),
            });
        (
            Just(lines),
            prop::collection::vec(shop_coupon, 2..=6),
            prop::collection::vec(platform, 1..=3),
        )
    })
    .prop_flat_map(|(lines, mut shops, platforms)| {
        shops.extend(platforms);
        let ids: Vec<i64> = (1..=shops.len() as i64).collect();
        (Just(lines), Just(shops), Just(ids).prop_shuffle())
    })
}

fn build(specs: &[Spec], ids: &[i64]) -> Vec<(UserCoupon, Template)> {
    specs
        .iter()
        .zip(ids)
        .enumerate()
        .map(|(i, (s, &id))| {
            let t = template(i as i64 + 1, s.shop, &s.goods, s.rule);
            let mut c = coupon(id, &t);
            c.status = s.status;
            let hour = SignedDuration::from_hours(1);
            match s.window {
                Window::Valid => {}
                Window::NotYet => c.valid_from = now() + hour,
                Window::Past => c.valid_until = now() - hour,
            }
            (c, t)
        })
        .collect()
}

// ---- The oracle: the settlement rules read literally, no shared code with production. ----

fn o_rule(t: &Template, eligible: i64) -> i64 {
    let m = |v: Option<Money>| v.map_or(0, Money::cents);
    if eligible <= 0 {
        return 0;
    }
    let threshold = if t.kind == Kind::Fixed {
        0
    } else {
        m(t.threshold)
    };
    if eligible < threshold {
        return 0;
    }
    match t.kind {
        Kind::Fixed | Kind::Threshold => m(t.amount_off).min(eligible),
        Kind::Percent => {
            let pct = eligible * i64::from(t.percent_off.unwrap_or(0)) / 100;
            let capped = t.max_off.map_or(pct, |c| pct.min(c.cents()));
            capped.min(eligible)
        }
    }
}

fn o_in_shop(t: &Template, lines: &[Line], shop: i64) -> i64 {
    lines
        .iter()
        .filter(|l| l.1 == shop && (t.scope == Scope::Shop || t.goods_ids.contains(&gid(l.0))))
        .map(|l| l.2 * l.3)
        .sum()
}

fn o_shops(lines: &[Line]) -> Vec<i64> {
    let mut s: Vec<i64> = lines.iter().map(|l| l.1).collect();
    s.sort_unstable();
    s.dedup();
    s
}

fn o_standalone(c: &UserCoupon, t: &Template, lines: &[Line]) -> i64 {
    if c.status != CouponStatus::Unused || now() < c.valid_from || now() >= c.valid_until {
        return 0;
    }
    let eligible = match t.source {
        Source::Shop => o_in_shop(t, lines, t.shop_id.get()),
        Source::Platform => o_shops(lines).iter().map(|&s| o_in_shop(t, lines, s)).sum(),
    };
    o_rule(t, eligible)
}

/// The total of a combination, `None` when it is not a valid one.
fn o_value(set: &[&(UserCoupon, Template)], lines: &[Line]) -> Option<i64> {
    let mut shop_d: BTreeMap<i64, i64> = BTreeMap::new();
    let mut platform = None;
    for (c, t) in set {
        let d = o_standalone(c, t, lines);
        if d == 0 {
            return None;
        }
        match t.source {
            Source::Shop => {
                if shop_d.insert(t.shop_id.get(), d).is_some() {
                    return None;
                }
            }
            Source::Platform => {
                if platform.replace(t).is_some() {
                    return None;
                }
            }
        }
    }
    let shops_total: i64 = shop_d.values().sum();
    let Some(p) = platform else {
        return Some(shops_total);
    };
    let left: i64 = o_shops(lines)
        .iter()
        .map(|&s| (o_in_shop(p, lines, s) - shop_d.get(&s).copied().unwrap_or(0)).max(0))
        .sum();
    match o_rule(p, left) {
        0 => None,
        pd => Some(shops_total + pd),
    }
}

fn subsets<T>(items: &[T]) -> impl Iterator<Item = Vec<&T>> {
    (0u32..1 << items.len()).map(move |mask| {
        items
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, x)| x)
            .collect()
    })
}

fn cart_of(lines: &[Line]) -> Cart {
    cart(lines)
}

fn check_best(lines: &[Line], specs: &[Spec], ids: &[i64]) -> Result<(), TestCaseError> {
    let c = cart_of(lines);
    let coupons = build(specs, ids);

    // Oracle: every subset; larger total, then fewer coupons, then smaller sorted ids.
    let mut oracle: (i64, Vec<CouponId>) = (0, vec![]);
    for set in subsets(&coupons) {
        let value = o_value(&set, lines);
        let priced = price_selection(
            &set.iter().map(|&h| h.clone()).collect::<Vec<_>>(),
            &c,
            now(),
        );
        // price_selection accepts exactly the valid combinations, at the oracle's value.
        prop_assert_eq!(priced.as_ref().ok().map(|p| p.discount.cents()), value);
        if let Ok(p) = &priced {
            let sum: i64 = p.per_coupon.iter().map(|d| d.discount.cents()).sum();
            prop_assert_eq!(sum, p.discount.cents());
            prop_assert_eq!(p.payable.cents(), c.subtotal().cents() - sum);
        }
        let Some(total) = value else { continue };
        let mut set_ids: Vec<CouponId> = set.iter().map(|h| h.0.id).collect();
        set_ids.sort_unstable();
        let better = total > oracle.0
            || (total == oracle.0 && set_ids.len() < oracle.1.len())
            || (total == oracle.0 && set_ids.len() == oracle.1.len() && set_ids < oracle.1);
        if better {
            oracle = (total, set_ids);
        }
    }

    let b = best(&coupons, &c, now());
    prop_assert!(b.exact);
    prop_assert_eq!(b.discount.cents(), oracle.0);
    prop_assert_eq!(&b.coupon_ids, &oracle.1);
    prop_assert_eq!(b.payable.cents(), c.subtotal().cents() - oracle.0);
    prop_assert!(b.payable >= Money::ZERO);

    // The best set is a valid selection priced at the same discount.
    let chosen: Vec<_> = coupons
        .iter()
        .filter(|h| b.coupon_ids.contains(&h.0.id))
        .cloned()
        .collect();
    let priced = price_selection(&chosen, &c, now());
    prop_assert_eq!(priced.map(|p| p.discount), Ok(b.discount));
    prop_assert_eq!(quote(&coupons, &c, now()).best, b);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn best_is_the_brute_force_optimum(lines in lines(), (specs, ids) in specs()) {
        check_best(&lines, &specs, &ids)?;
    }

    #[test]
    fn best_is_the_brute_force_optimum_when_stacking_is_tight((lines, specs, ids) in dense()) {
        check_best(&lines, &specs, &ids)?;
    }

    #[test]
    fn evaluation_matches_the_oracle_and_stays_within_eligible(
        lines in lines(), (specs, ids) in specs()
    ) {
        let c = cart_of(&lines);
        for (coupon, t) in build(&specs, &ids) {
            let expected = o_standalone(&coupon, &t, &lines);
            match evaluate(&coupon, &t, &c, now()) {
                Evaluation::Usable { eligible, discount } => {
                    prop_assert_eq!(discount.cents(), expected);
                    prop_assert!(discount > Money::ZERO && discount <= eligible);
                    let limit = match t.source {
                        Source::Shop => c.shop_subtotal(t.shop_id),
                        Source::Platform => c.subtotal(),
                    };
                    prop_assert!(eligible <= limit);
                }
                Evaluation::Unusable(r) => {
                    prop_assert_eq!(expected, 0, "{:?}", r);
                    prop_assert!(!r.reason.is_empty());
                    let has_missing = matches!(r.reason_code, ReasonCode::BelowThreshold | ReasonCode::ZeroDiscount);
                    if !has_missing {
                        prop_assert_eq!(r.missing, None);
                    }
                    if let Some(m) = r.missing {
                        prop_assert!(has_missing && m > Money::ZERO);
                    }
                }
            }
        }
    }

    #[test]
    fn quote_does_not_depend_on_coupon_order(
        lines in lines(),
        (specs, ids) in specs(),
        seed in any::<u64>(),
    ) {
        let c = cart_of(&lines);
        let coupons = build(&specs, &ids);
        let mut shuffled = coupons.clone();
        // A seeded Fisher–Yates, so the case shrinks with the inputs.
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let q = quote(&coupons, &c, now());
        prop_assert_eq!(&quote(&shuffled, &c, now()), &q);
        prop_assert_eq!(q.available.len() + q.unavailable.len(), coupons.len());
        prop_assert!(q.available.windows(2).all(|w| w[0].discount >= w[1].discount));
    }

    #[test]
    fn a_rendered_plan_is_the_serialised_quote(
        lines in lines(),
        (specs, ids) in specs(),
    ) {
        let c = cart_of(&lines);
        let coupons = build(&specs, &ids);
        let p = plan(&coupons, |(c, t)| (c, t), &c, now());
        let heads: Vec<String> = coupons.iter().map(|(c, t)| quote_fragment(c, t)).collect();
        let rendered = render_quote(&p, |i| (heads[i].as_str(), coupons[i].1.kind));
        let expected = serde_json::to_vec(&quote(&coupons, &c, now()));
        match (rendered, expected) {
            (Ok(r), Ok(e)) => prop_assert_eq!(String::from_utf8_lossy(&r), String::from_utf8_lossy(&e)),
            (r, e) => prop_assert!(false, "rendering failed: {:?} / {:?}", r.err(), e.err()),
        }
    }

    #[test]
    fn percent_is_floor_then_cap(
        eligible in 1i64..=1_000_000_000_000,
        percent in 1u8..=99,
        cap in proptest::option::of(1i64..=1_000_000_000_000),
    ) {
        let c = cart(&[(1, 1, eligible, 1)]);
        let h = held(1, 1, &[], R::Percent(percent, 0, cap));
        let exact = i128::from(eligible) * i128::from(percent);
        match evaluate(&h.0, &h.1, &c, now()) {
            Evaluation::Usable { discount, .. } => {
                let d = i128::from(discount.cents());
                prop_assert!(d * 100 <= exact);
                prop_assert!(d <= i128::from(eligible));
                match cap {
                    Some(cap) if i128::from(cap) * 100 <= exact => prop_assert_eq!(d, i128::from(cap)),
                    _ => prop_assert!(exact < (d + 1) * 100),
                }
            }
            Evaluation::Unusable(r) => {
                prop_assert_eq!(r.reason_code, ReasonCode::ZeroDiscount);
                prop_assert!(exact < 100);
            }
        }
    }
}
