//! The `quote` scenario: `POST /api/v1/checkout/quote` for random users holding 50 coupons
//! each, with 5-item carts over 3 shops.
//!
//! Setup, through the API with tokens signed by the server's secret:
//! 1. 50 templates: per shop (shops 1, 2, 3, merchant tokens) 15 of mixed kinds — fixed,
//!    threshold, percent (some capped, one with a threshold), 4 of them scoped to goods — and
//!    5 platform templates (admin token), one of them goods-scoped across shops. Each has
//!    `stock_total = users` and `per_user_limit = 1`.
//! 2. Every user claims one coupon of each (`users × 50` claims, `--setup-in-flight` at a
//!    time; see `bulk_claim` for the per-user claim rate limit).
//! 3. `--carts` carts of 5 lines (2 of shop 1, 2 of shop 2, 1 of shop 3) drawn from a fixed
//!    seed, over goods `S001..S010` of shop `S` so that goods-scoped coupons apply to some.
//! 4. A sanity check: the first user quotes every cart; each answer must list all the user's
//!    coupons, some of them available, and a best combination with a positive discount, or
//!    the setup fails.
//!
//! Load: each request is a random user's token with a random cart.

use crate::auth::Tokens;
use crate::bulk_claim;
use crate::client::Target;
use crate::setup::{create_template, in_parallel, open_window, send};
use crate::workload::{Operation, Workload};
use anyhow::{Context, bail};
use hyper::body::Bytes;
use hyper::header::HeaderValue;
use hyper::{Method, Uri};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use stampede_domain::ids::ShopId;
use std::sync::Arc;

/// The shops of the scenario (1..=SHOPS).
pub const SHOPS: u64 = 3;
/// Templates (and so coupons per user) per shop, and of the platform.
pub const PER_SHOP: usize = 15;
pub const PLATFORM: usize = 5;
/// Coupons each user holds after the setup.
pub const COUPONS_PER_USER: usize = SHOPS as usize * PER_SHOP + PLATFORM;
/// Goods per shop: shop `S` sells goods `S*1000 + 1 ..= S*1000 + GOODS`.
const GOODS: u64 = 10;

/// The `quote` flags (their docs are the `--help` text).
#[derive(Debug, Clone, clap::Args)]
pub struct QuoteSetup {
    /// Simulated users; each claims 50 coupons in the setup.
    #[arg(long, default_value_t = 1_000)]
    pub users: u64,
    /// First user id (users are consecutive ids; apart from the other scenarios' by default).
    #[arg(long, default_value_t = 1_000_001)]
    pub first_user: u64,
    /// Distinct 5-item carts the requests draw from.
    #[arg(long, default_value_t = 8)]
    pub carts: usize,
    /// Setup requests (claims) in flight.
    #[arg(
        long = "setup-in-flight",
        value_name = "SETUP_IN_FLIGHT",
        default_value_t = 32
    )]
    pub in_flight: usize,
}

/// The quote requests: a random user with a random cart.
#[derive(Debug)]
pub struct QuoteWork {
    uri: Uri,
    auths: Vec<HeaderValue>,
    /// JSON bodies `{"items": [...]}`.
    carts: Vec<Bytes>,
}

impl QuoteWork {
    /// Quotes by `auths` (random) of `carts` (random) at `uri`.
    pub fn new(uri: Uri, auths: Vec<HeaderValue>, carts: Vec<Bytes>) -> Self {
        Self { uri, auths, carts }
    }

    pub fn users(&self) -> usize {
        self.auths.len()
    }

    pub fn carts(&self) -> &[Bytes] {
        &self.carts
    }
}

impl Workload for QuoteWork {
    fn next(&self, target: &Target, rng: &mut SmallRng) -> Option<Operation> {
        let auth = self.auths.get(rng.random_range(0..self.auths.len()))?;
        let cart = self.carts.get(rng.random_range(0..self.carts.len()))?;
        Some(Operation::Single(target.post_json(
            self.uri.clone(),
            auth,
            cart.clone(),
        )))
    }
}

fn goods(shop: u64, k: u64) -> String {
    (shop * 1000 + k).to_string()
}

fn goods_list(shop: u64, ks: &[u64]) -> Value {
    Value::Array(ks.iter().map(|&k| Value::String(goods(shop, k))).collect())
}

/// The kind-specific fields of the scenario's templates, in creation order: `(shop, fields)`
/// with `shop` `None` for the platform's.
pub fn template_fields() -> Vec<(Option<u64>, Value)> {
    let mut out = Vec::with_capacity(COUPONS_PER_USER);
    for s in 1..=SHOPS {
        // Amounts differ a little per shop so that shops do not tie.
        let d = i64::try_from(s).unwrap_or(0) * 10;
        let shop_templates = [
            json!({"kind": "fixed", "amount_off": 200 + d}),
            json!({"kind": "fixed", "amount_off": 500 + d}),
            json!({"kind": "fixed", "amount_off": 800 + d}),
            json!({"kind": "fixed", "amount_off": 1200 + d}),
            json!({"kind": "threshold", "threshold": 5000, "amount_off": 600 + d}),
            json!({"kind": "threshold", "threshold": 10000, "amount_off": 1500 + d}),
            json!({"kind": "threshold", "threshold": 20000, "amount_off": 3200 + d}),
            json!({"kind": "threshold", "threshold": 40000, "amount_off": 7000 + d}),
            json!({"kind": "percent", "percent_off": 5}),
            json!({"kind": "percent", "percent_off": 10, "max_off": 2500 + d}),
            json!({"kind": "percent", "percent_off": 15, "threshold": 15000, "max_off": 5000}),
            json!({"kind": "fixed", "amount_off": 300 + d,
                   "scope": "goods", "goods_ids": goods_list(s, &[1, 2, 3])}),
            json!({"kind": "threshold", "threshold": 3000, "amount_off": 700 + d,
                   "scope": "goods", "goods_ids": goods_list(s, &[1, 2, 3, 4])}),
            json!({"kind": "percent", "percent_off": 20, "max_off": 1500,
                   "scope": "goods", "goods_ids": goods_list(s, &[5, 6])}),
            json!({"kind": "fixed", "amount_off": 1000 + d,
                   "scope": "goods", "goods_ids": goods_list(s, &[9, 10])}),
        ];
        out.extend(shop_templates.into_iter().map(|t| (Some(s), t)));
    }
    let mut cross = Vec::new();
    for s in 1..=SHOPS {
        cross.push(Value::String(goods(s, 1)));
        cross.push(Value::String(goods(s, 2)));
    }
    let platform = [
        json!({"kind": "fixed", "amount_off": 300}),
        json!({"kind": "threshold", "threshold": 20000, "amount_off": 2000}),
        json!({"kind": "threshold", "threshold": 50000, "amount_off": 6000}),
        json!({"kind": "percent", "percent_off": 5, "max_off": 3000}),
        json!({"kind": "percent", "percent_off": 10, "scope": "goods", "goods_ids": cross}),
    ];
    out.extend(platform.into_iter().map(|t| (None, t)));
    out
}

/// `n` carts of 5 lines: 2 of shop 1, 2 of shop 2, 1 of shop 3 (distinct goods per shop),
/// unit prices 5.00–200.00, quantities 1–3; the same for every run.
pub fn carts(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let mut rng = SmallRng::seed_from_u64(0x5eed_0000 + i as u64);
            let mut items = Vec::with_capacity(5);
            for (shop, lines) in [(1, 2), (2, 2), (3, 1)] {
                let first = rng.random_range(1..=GOODS);
                for l in 0..lines {
                    let k = (first + l - 1) % GOODS + 1;
                    items.push(json!({
                        "goods_id": goods(shop, k),
                        "shop_id": shop.to_string(),
                        "unit_price": rng.random_range(5..=200) * 100,
                        "quantity": rng.random_range(1..=3),
                    }));
                }
            }
            json!({ "items": items })
        })
        .collect()
}

/// Creates the templates, claims the coupons, checks a quote; returns the load.
pub async fn setup(target: &Target, secret: &[u8], cfg: &QuoteSetup) -> anyhow::Result<QuoteWork> {
    if cfg.users == 0 || cfg.carts == 0 {
        bail!("--users and --carts must be at least 1");
    }
    if cfg.users > u64::from(u32::MAX) {
        bail!("--users is too large");
    }
    let tokens = Tokens::new(secret);
    let admin = tokens.admin()?;
    let mut merchants = Vec::new();
    for s in 1..=SHOPS {
        let shop = ShopId::new(i64::try_from(s).unwrap_or(1)).context("shop id")?;
        merchants.push(tokens.merchant(&format!("bench-merchant-{s}"), shop)?);
    }

    // 1. Templates.
    let (start, end) = open_window(24);
    let mut conn = target.connect().await?;
    let mut template_ids = Vec::with_capacity(COUPONS_PER_USER);
    for (i, (shop, fields)) in template_fields().into_iter().enumerate() {
        let mut body = fields;
        let extra = json!({
            "name": format!("bench quote {} #{i}",
                shop.map_or_else(|| "platform".to_owned(), |s| format!("shop {s}"))),
            "stock_total": cfg.users,
            "claim_start": start,
            "claim_end": end,
            "validity_hours": 24,
            "per_user_limit": 1,
        });
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
            if shop.is_none() {
                b.insert("source".into(), "platform".into());
            }
        }
        let auth = match shop {
            Some(s) => merchants
                .get(usize::try_from(s - 1).unwrap_or(0))
                .context("merchant token")?,
            None => &admin,
        };
        let id = create_template(target, &mut conn, auth, &body)
            .await
            .with_context(|| format!("creating template #{i}: {body}"))?;
        template_ids.push(id);
    }
    eprintln!(
        "created {} templates ({PER_SHOP} in each of {SHOPS} shops, {PLATFORM} platform)",
        template_ids.len()
    );

    // 2. Tokens and claims, template by template so one user's claims are spread out.
    let auths: Arc<[HeaderValue]> = tokens.users(cfg.first_user, cfg.users)?.into();
    let users = u32::try_from(cfg.users).context("--users")?;
    let claims: Arc<[(u32, u32)]> = (0..template_ids.len() as u32)
        .flat_map(|t| (0..users).map(move |u| (u, t)))
        .collect();
    bulk_claim::claim_all(target, auths.clone(), &template_ids, claims, cfg.in_flight).await?;

    // 3. Carts, 4. the sanity check.
    let carts: Vec<Bytes> = carts(cfg.carts)
        .iter()
        .map(|c| serde_json::to_vec(c).map(Bytes::from))
        .collect::<Result<_, _>>()
        .context("encoding the carts")?;
    let first = auths.first().context("no user")?.clone();
    let checked = {
        let t = target.clone();
        let carts = carts.clone();
        in_parallel(
            target,
            carts.len(),
            4,
            "sanity quotes",
            move |i, mut conn| {
                let (t, first, cart) = (t.clone(), first.clone(), carts[i].clone());
                async move {
                    let v: Value = serde_json::from_slice(&cart)?;
                    let (status, body) = send(
                        &t,
                        &mut conn,
                        Method::POST,
                        "/api/v1/checkout/quote",
                        &first,
                        Some(&v),
                    )
                    .await?;
                    let text = String::from_utf8_lossy(&body);
                    if status != 200 {
                        bail!("quote of cart #{i}: {status} {text}");
                    }
                    let q: Value =
                        serde_json::from_slice(&body).context("the quote is not JSON")?;
                    let summary = check_quote(&q, COUPONS_PER_USER)
                        .with_context(|| format!("quote of cart #{i} looks wrong: {text}"))?;
                    Ok((conn, summary))
                }
            },
        )
        .await?
    };
    for (i, s) in checked.iter().enumerate() {
        eprintln!("sanity: user {} cart #{i}: {s}", cfg.first_user);
    }

    Ok(QuoteWork {
        uri: target.uri("/api/v1/checkout/quote")?,
        auths: auths.to_vec(),
        carts,
    })
}

/// Checks a quote answer: at least `coupons` coupons listed, some available, a best
/// combination with a positive discount and a consistent payable. A one-line summary.
pub fn check_quote(q: &Value, coupons: usize) -> anyhow::Result<String> {
    let available = q["available"].as_array().context("no `available` list")?;
    let unavailable = q["unavailable"]
        .as_array()
        .context("no `unavailable` list")?;
    let subtotal = q["subtotal"].as_i64().context("no `subtotal`")?;
    let best = &q["best"];
    let discount = best["discount"].as_i64().context("no `best.discount`")?;
    let payable = best["payable"].as_i64().context("no `best.payable`")?;
    let chosen = best["coupon_ids"]
        .as_array()
        .context("no `best.coupon_ids`")?;
    if available.is_empty() {
        bail!("no coupon is available");
    }
    if available.len() + unavailable.len() < coupons {
        bail!(
            "{} coupons listed, the user holds {coupons}",
            available.len() + unavailable.len()
        );
    }
    if discount <= 0 || chosen.is_empty() {
        bail!("the best combination takes nothing off");
    }
    if payable != subtotal - discount {
        bail!("payable {payable} is not subtotal {subtotal} - discount {discount}");
    }
    Ok(format!(
        "subtotal {subtotal}, {} available, {} unavailable, best {} coupons for {discount} off",
        available.len(),
        unavailable.len(),
        chosen.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifty_templates_of_every_kind() {
        let t = template_fields();
        assert_eq!(t.len(), COUPONS_PER_USER);
        assert_eq!(t.len(), 50);
        assert_eq!(t.iter().filter(|(s, _)| s.is_none()).count(), PLATFORM);
        for kind in ["fixed", "threshold", "percent"] {
            assert!(t.iter().any(|(_, v)| v["kind"] == kind), "{kind}");
        }
        assert!(t.iter().filter(|(_, v)| v["scope"] == "goods").count() >= 3 * 4);
    }

    #[test]
    fn carts_are_stable_and_span_three_shops() {
        let a = carts(8);
        assert_eq!(a, carts(8));
        for c in &a {
            let items = c["items"].as_array().map_or(&[][..], |v| v.as_slice());
            assert_eq!(items.len(), 5);
            let mut shops: Vec<&str> = items.iter().filter_map(|i| i["shop_id"].as_str()).collect();
            shops.dedup();
            assert_eq!(shops, ["1", "2", "3"]);
            let mut g: Vec<&str> = items
                .iter()
                .filter_map(|i| i["goods_id"].as_str())
                .collect();
            g.sort_unstable();
            g.dedup();
            assert_eq!(g.len(), 5, "{c}");
        }
    }

    #[test]
    fn a_quote_without_discount_fails_the_check() {
        let good = json!({"subtotal": 1000, "available": [{}], "unavailable": [{}],
            "best": {"coupon_ids": ["1"], "discount": 100, "payable": 900}});
        assert!(check_quote(&good, 2).is_ok());
        assert!(check_quote(&good, 3).is_err());
        let none = json!({"subtotal": 1000, "available": [], "unavailable": [{}, {}],
            "best": {"coupon_ids": [], "discount": 0, "payable": 1000}});
        assert!(check_quote(&none, 2).is_err());
        let zero = json!({"subtotal": 1000, "available": [{}], "unavailable": [{}],
            "best": {"coupon_ids": [], "discount": 0, "payable": 1000}});
        assert!(check_quote(&zero, 2).is_err());
    }
}
