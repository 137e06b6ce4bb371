use super::*;
use proptest::prelude::*;
use stampede_domain::template::{Kind, Scope, Source};

fn now() -> Timestamp {
    "2026-03-01T12:00:00.123Z"
        .parse()
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

fn money(c: i64) -> Option<Money> {
    Money::parse(c).ok()
}

#[derive(Debug, Clone)]
struct Shape {
    id: i64,
    shop: i64,
    name: String,
    instructions: String,
    goods: Vec<i64>,
    kind: u8,
    amount: i64,
    threshold: i64,
    percent: u8,
    cap: Option<i64>,
    absolute: bool,
    start_mins: i64,
    limit: u32,
    stock: Option<i64>,
    held: Option<u32>,
}

fn template(s: &Shape) -> Template {
    let start = now() + SignedDuration::from_mins(s.start_mins);
    let end = start + SignedDuration::from_hours(48);
    let (kind, amount_off, threshold, percent_off, max_off) = match s.kind {
        0 => (Kind::Fixed, money(s.amount), None, None, None),
        1 => (
            Kind::Threshold,
            money(s.amount),
            money(s.threshold),
            None,
            None,
        ),
        _ => (
            Kind::Percent,
            None,
            money(s.threshold),
            Some(s.percent),
            s.cap.and_then(money),
        ),
    };
    Template {
        id: TemplateId::new(s.id).unwrap_or_else(|| unreachable!()),
        shop_id: ShopId::from_stored(s.shop).unwrap_or(ShopId::PLATFORM),
        name: s.name.clone(),
        instructions: s.instructions.clone(),
        source: if s.shop == 0 {
            Source::Platform
        } else {
            Source::Shop
        },
        scope: if s.goods.is_empty() {
            Scope::Shop
        } else {
            Scope::Goods
        },
        goods_ids: s.goods.iter().filter_map(|&g| GoodsId::new(g)).collect(),
        kind,
        amount_off,
        threshold,
        percent_off,
        max_off,
        stock_total: 1_000,
        stock: 700,
        claim_start: start,
        claim_end: end,
        valid_from: s.absolute.then_some(start),
        valid_until: s.absolute.then(|| end + SignedDuration::from_hours(24)),
        validity_hours: (!s.absolute).then_some(72),
        per_user_limit: s.limit,
        status: TemplateStatus::Active,
        created_at: start,
        updated_at: start,
    }
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        (1i64..1_000_000, 0i64..3, ".{0,12}", "(.|\n){0,20}"),
        prop::collection::vec(1i64..9_007_199_254_740_993, 0..4),
        (
            0u8..3,
            1i64..5_000,
            0i64..20_000,
            1u8..99,
            prop::option::of(1i64..3_000),
        ),
        (any::<bool>(), -120i64..600, 1u32..5),
        (prop::option::of(0i64..1_200), prop::option::of(0u32..6)),
    )
        .prop_map(
            |(
                (id, shop, name, instructions),
                goods,
                (kind, amount, threshold, percent, cap),
                (absolute, start_mins, limit),
                (stock, held),
            )| Shape {
                id,
                shop,
                name,
                instructions,
                goods,
                kind,
                amount,
                threshold,
                percent,
                cap,
                absolute,
                start_mins,
                limit,
                stock,
                held,
            },
        )
}

proptest! {
    /// The page written from fragments is byte for byte the serialised `DiscoveryPage`:
    /// names with quotes, control characters and non-ASCII text, every kind, absolute and
    /// relative validity, ids past 2^53, users and others, partial pages, every page size.
    #[test]
    fn a_rendered_page_is_the_serialised_page(
        mut shapes in prop::collection::vec(shape(), 0..12),
        user in any::<bool>(),
        partial in any::<bool>(),
        limit in 1u32..6,
        price in 0i64..30_000,
    ) {
        shapes.sort_by_key(|s| s.id);
        shapes.dedup_by_key(|s| s.id);
        // Two shops' listings, as a goods page with platform templates reads them.
        let (platform, shop): (Vec<Template>, Vec<Template>) =
            shapes.iter().map(template).partition(|t| t.shop_id.is_platform());
        let listings = [Arc::new(ShopListing::new(0, shop)), Arc::new(ShopListing::new(0, platform))];
        let mut ts = Picked::default();
        for l in &listings {
            for i in 0..l.templates.len() {
                ts.push(l.entry(i));
            }
        }
        // Standing goes with the picked order, so look each template's shape up by id.
        let shape_of = |t: &Template| shapes.iter().find(|s| s.id == t.id.get());
        let standing: Vec<Standing> = ts
            .templates
            .iter()
            .filter_map(|&t| shape_of(t))
            .map(|s| Standing { stock: s.stock, held: if user { s.held.or(Some(0)) } else { None } })
            .collect();
        prop_assert_eq!(standing.len(), ts.templates.len());
        let listing = Listing {
            now: now(),
            horizon: SignedDuration::from_hours(24),
            include_sold_out: true,
            limit,
            after: None,
        };
        let price = Money::parse(price).unwrap_or(Money::ZERO);
        let discount = |t: &Template| Some(rules::reference_discount(t, price));
        let fast = render(&ts, &standing, partial, &listing, discount, now());
        let slow = page_of(&ts, &standing, partial, &listing, discount, now());
        let expected = serde_json::to_string(&slow).unwrap_or_default();
        prop_assert_eq!(&fast.body, &expected);
        prop_assert_eq!(fast.partial, partial);
        let parsed: serde_json::Value = serde_json::from_str(&fast.body).unwrap_or_default();
        prop_assert!(parsed["items"].is_array());
    }
}
