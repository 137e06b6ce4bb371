use super::*;
use crate::ids::TemplateId;
use crate::settlement::CartItemDraft;
use crate::template::{Kind, Source};
use proptest::prelude::*;

fn now() -> Timestamp {
    "2026-03-01T12:00:00Z"
        .parse()
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

fn money(c: i64) -> Money {
    Money::parse(c).unwrap_or_else(|e| panic!("{c}: {e}"))
}

fn shop(n: i64) -> ShopId {
    ShopId::from_stored(n).unwrap_or_else(|| panic!("shop {n}"))
}

fn goods(n: i64) -> GoodsId {
    GoodsId::new(n).unwrap_or_else(|| panic!("goods {n}"))
}

#[derive(Debug, Clone, Copy)]
enum Rule {
    Fixed(i64),
    Threshold(i64, i64),
    Percent(u8, i64, Option<i64>),
}

/// Template `id` of shop `s` (0: platform) over `g` (empty: shop-wide), open for
/// `[start_h, end_h)` hours around `now()`.
fn template(id: i64, s: i64, g: &[i64], rule: Rule, start_h: i64, end_h: i64) -> Template {
    let (kind, amount_off, threshold, percent_off, max_off) = match rule {
        Rule::Fixed(a) => (Kind::Fixed, Some(money(a)), None, None, None),
        Rule::Threshold(a, t) => (Kind::Threshold, Some(money(a)), Some(money(t)), None, None),
        Rule::Percent(p, t, c) => (Kind::Percent, None, Some(money(t)), Some(p), c.map(money)),
    };
    Template {
        id: TemplateId::new(id).unwrap_or_else(|| panic!("template {id}")),
        shop_id: shop(s),
        name: format!("t{id}"),
        instructions: String::new(),
        source: if s == 0 {
            Source::Platform
        } else {
            Source::Shop
        },
        scope: if g.is_empty() {
            Scope::Shop
        } else {
            Scope::Goods
        },
        goods_ids: g.iter().map(|&n| goods(n)).collect(),
        kind,
        amount_off,
        threshold,
        percent_off,
        max_off,
        stock_total: 100,
        stock: 100,
        claim_start: now() + SignedDuration::from_hours(start_h),
        claim_end: now() + SignedDuration::from_hours(end_h),
        valid_from: None,
        valid_until: None,
        validity_hours: Some(24),
        per_user_limit: 2,
        status: TemplateStatus::Active,
        created_at: now(),
        updated_at: now(),
    }
}

fn listing(limit: u32, after: Option<SortKey>) -> Listing {
    Listing {
        now: now(),
        horizon: SignedDuration::from_hours(24),
        include_sold_out: false,
        limit,
        after,
    }
}

fn open(t: &Template) -> Candidate<'_> {
    Candidate {
        template: t,
        remaining: t.stock,
        held: None,
    }
}

#[test]
fn stock_levels() {
    assert_eq!(stock_level(0, 100), StockLevel::SoldOut);
    assert_eq!(stock_level(-3, 100), StockLevel::SoldOut);
    assert_eq!(stock_level(10, 1_000_000), StockLevel::Few);
    assert_eq!(stock_level(100, 1_000), StockLevel::Few);
    assert_eq!(stock_level(101, 1_000), StockLevel::Plenty);
    assert_eq!(stock_level(11, 20), StockLevel::Plenty);
}

#[test]
fn stock_levels_write_their_wire_form() {
    for l in [StockLevel::Plenty, StockLevel::Few, StockLevel::SoldOut] {
        assert_eq!(
            serde_json::to_string(&l).unwrap_or_default(),
            format!("\"{}\"", l.as_str())
        );
    }
}

#[test]
fn places() {
    let shop_wide = template(1, 7, &[], Rule::Fixed(100), -1, 1);
    let scoped = template(2, 7, &[5, 6], Rule::Fixed(100), -1, 1);
    let other = template(3, 8, &[], Rule::Fixed(100), -1, 1);
    let platform = template(4, 0, &[], Rule::Fixed(100), -1, 1);
    let platform_scoped = template(5, 0, &[6], Rule::Fixed(100), -1, 1);
    let page = Place::Goods {
        shop: shop(7),
        goods: goods(5),
    };
    let seen: Vec<bool> = [&shop_wide, &scoped, &other, &platform, &platform_scoped]
        .iter()
        .map(|t| applies(t, page))
        .collect();
    assert_eq!(seen, [true, true, false, true, false]);
    let shop_page = Place::Shop {
        shop: shop(7),
        include_platform: false,
    };
    let seen: Vec<bool> = [&shop_wide, &scoped, &other, &platform, &platform_scoped]
        .iter()
        .map(|t| applies(t, shop_page))
        .collect();
    assert_eq!(seen, [true, true, false, false, false]);
    let with_platform = Place::Shop {
        shop: shop(7),
        include_platform: true,
    };
    assert!(applies(&platform_scoped, with_platform));
}

#[test]
fn listed_follows_status_window_and_horizon() {
    let h = SignedDuration::from_hours(24);
    assert!(listed(
        &template(1, 7, &[], Rule::Fixed(1), -1, 1),
        now(),
        h
    ));
    assert!(listed(
        &template(1, 7, &[], Rule::Fixed(1), 24, 48),
        now(),
        h
    ));
    assert!(!listed(
        &template(1, 7, &[], Rule::Fixed(1), 25, 48),
        now(),
        h
    ));
    assert!(!listed(
        &template(1, 7, &[], Rule::Fixed(1), -2, 0),
        now(),
        h
    ));
    let mut ended = template(1, 7, &[], Rule::Fixed(1), -1, 1);
    ended.status = TemplateStatus::Terminated;
    assert!(!listed(&ended, now(), h));
}

#[test]
fn reference_discounts() {
    let p = money(10_000);
    let d = |r| reference_discount(&template(1, 7, &[], r, -1, 1), p).cents();
    assert_eq!(d(Rule::Fixed(500)), 500);
    assert_eq!(d(Rule::Fixed(50_000)), 10_000);
    assert_eq!(d(Rule::Threshold(2_000, 10_000)), 2_000);
    assert_eq!(d(Rule::Threshold(2_000, 10_001)), 0);
    assert_eq!(d(Rule::Percent(15, 0, None)), 1_500);
    assert_eq!(d(Rule::Percent(15, 0, Some(900))), 900);
    assert_eq!(d(Rule::Percent(15, 20_000, None)), 0);
}

#[test]
fn cart_discount_uses_the_settlement_rules() {
    let user = UserId::new(9).unwrap_or_else(|| unreachable!());
    let cart = Cart::validate(&[CartItemDraft {
        goods_id: Some(goods(5)),
        shop_id: Some(shop(7)),
        unit_price: Some(3_000),
        quantity: Some(2),
    }])
    .unwrap_or_else(|e| panic!("{e}"));
    let c = |t: Template| cart_discount(&t, user, &cart, now()).map(|m| m.cents());
    assert_eq!(c(template(1, 7, &[], Rule::Fixed(500), -1, 1)), Some(500));
    assert_eq!(c(template(2, 7, &[6], Rule::Fixed(500), -1, 1)), None);
    assert_eq!(c(template(3, 8, &[], Rule::Fixed(500), -1, 1)), None);
    assert_eq!(
        c(template(4, 0, &[], Rule::Percent(10, 0, None), -1, 1)),
        Some(600)
    );
    assert_eq!(
        c(template(5, 7, &[], Rule::Threshold(1_000, 6_001), -1, 1)),
        None
    );
    // Opening later still says what it would be worth.
    assert_eq!(c(template(6, 7, &[5], Rule::Fixed(700), 2, 5)), Some(700));
}

#[test]
fn can_claim_for_users_only() {
    let t = template(1, 7, &[], Rule::Fixed(1), -1, 1);
    let mut c = open(&t);
    assert_eq!(c.can_claim(now()), None);
    c.held = Some(1);
    assert_eq!(c.can_claim(now()), Some(true));
    c.held = Some(2);
    assert_eq!(c.can_claim(now()), Some(false));
    let later = template(2, 7, &[], Rule::Fixed(1), 2, 3);
    let c = Candidate {
        held: Some(0),
        ..open(&later)
    };
    assert_eq!(c.can_claim(now()), Some(false));
}

#[test]
fn cursors_round_trip_and_reject_junk() {
    let t = template(77, 7, &[], Rule::Fixed(250), -1, 1);
    let k = SortKey::of(&t, money(250));
    assert_eq!(SortKey::from_text(&k.to_text()), Some(k));
    for junk in ["", "1.2", "1.2.3.4", "a.b.c", "1..3"] {
        assert_eq!(SortKey::from_text(junk), None, "{junk}");
    }
}

#[test]
fn pages_neither_repeat_nor_skip_when_items_go() {
    let ts: Vec<Template> = (1..=9)
        .map(|i| template(i, 7, &[], Rule::Fixed(100 * (i % 4) + 1), -1, i))
        .collect();
    let p = money(DEFAULT_REFERENCE_PRICE);
    let first = rank(ts.iter().map(open), &listing(4, None), |t| {
        Some(reference_discount(t, p))
    });
    assert_eq!(first.items.len(), 4);
    let seen: Vec<i64> = first.items.iter().map(|r| r.key.id).collect();
    // Two of the remaining templates sell out between pages.
    let rest = rank(
        ts.iter().map(|t| Candidate {
            remaining: if t.id.get() % 3 == 0 && !seen.contains(&t.id.get()) {
                0
            } else {
                t.stock
            },
            ..open(t)
        }),
        &listing(100, first.next),
        |t| Some(reference_discount(t, p)),
    );
    let mut all: Vec<i64> = seen.clone();
    all.extend(rest.items.iter().map(|r| r.key.id));
    let mut unique = all.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), all.len(), "no repeats: {all:?}");
    for id in 1..=9 {
        let sold_out = id % 3 == 0 && !seen.contains(&id);
        assert_eq!(all.contains(&id), !sold_out, "template {id}: {all:?}");
    }
    assert_eq!(rest.next, None);
}

fn arb_template() -> impl Strategy<Value = (Template, i64)> {
    (
        1i64..400,
        0i64..4,
        prop::collection::vec(1i64..6, 0..3),
        prop_oneof![
            (1i64..3_000).prop_map(Rule::Fixed),
            (1i64..3_000, 0i64..20_000).prop_map(|(a, t)| Rule::Threshold(a, t)),
            (1u8..99, 0i64..20_000, prop::option::of(1i64..3_000))
                .prop_map(|(p, t, c)| Rule::Percent(p, t, c)),
        ],
        -48i64..48,
        1i64..72,
        0u8..3,
        0i64..3,
    )
        .prop_map(|(id, s, mut g, rule, start, len, status, stock)| {
            g.sort_unstable();
            g.dedup();
            let mut t = template(id, s, &g, rule, start, start + len);
            t.status = match status {
                0 | 1 => TemplateStatus::Active,
                _ => TemplateStatus::Terminated,
            };
            (t, stock)
        })
}

proptest! {
    /// Walking every page of a listing gives exactly the brute-force answer: every
    /// template that applies to the place, is listed now and has stock, in usefulness order.
    #[test]
    fn pages_equal_a_brute_force_filter(
        mut pool in prop::collection::vec(arb_template(), 0..60),
        s in 0i64..4,
        g in 1i64..6,
        product_page in any::<bool>(),
        include_platform in any::<bool>(),
        price in 0i64..30_000,
        limit in 1u32..7,
    ) {
        // Ids are unique in a store.
        pool.sort_by_key(|(t, _)| t.id);
        pool.dedup_by_key(|(t, _)| t.id);
        let place = if product_page {
            Place::Goods { shop: shop(s), goods: goods(g) }
        } else {
            Place::Shop { shop: shop(s), include_platform }
        };
        let price = money(price);
        let horizon = SignedDuration::from_hours(24);

        let mut expected: Vec<(Reverse<i64>, i64, i64)> = pool
            .iter()
            .filter(|(t, stock)| {
                let here = match place {
                    Place::Shop { shop, include_platform } => {
                        t.shop_id == shop || (include_platform && t.shop_id == ShopId::PLATFORM)
                    }
                    Place::Goods { shop, goods } => {
                        (t.shop_id == shop || t.shop_id == ShopId::PLATFORM)
                            && (t.goods_ids.is_empty() || t.goods_ids.contains(&goods))
                    }
                };
                here && t.status == TemplateStatus::Active
                    && t.claim_end > now()
                    && t.claim_start <= now() + horizon
                    && *stock > 0
            })
            .map(|(t, _)| (Reverse(reference_discount(t, price).cents()), to_ms(t.claim_end), t.id.get()))
            .collect();
        expected.sort_unstable();
        let expected: Vec<i64> = expected.into_iter().map(|k| k.2).collect();

        let mut got = Vec::new();
        let mut after = None;
        for _ in 0..=pool.len() {
            let page = rank(
                pool.iter()
                    .filter(|(t, _)| applies(t, place))
                    .map(|(t, stock)| Candidate { template: t, remaining: *stock, held: None }),
                &Listing { after, ..listing(limit, None) },
                |t| Some(reference_discount(t, price)),
            );
            prop_assert!(page.items.len() <= limit as usize);
            got.extend(page.items.iter().map(|r| r.key.id));
            match page.next {
                Some(k) => after = Some(SortKey::from_text(&k.to_text()).unwrap_or(k)),
                None => break,
            }
        }
        prop_assert_eq!(got, expected);
    }
}
