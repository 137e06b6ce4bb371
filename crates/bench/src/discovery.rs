//! The `discovery` scenario: shoppers opening random product pages,
//! `GET /api/v1/goods/{goods}/templates?shop_id={shop}&price={price}`.
//!
//! Setup, through the API with tokens signed by the server's secret:
//! 1. `--shops` shops (ids from `--first-shop`), each with `--per-shop` templates: per shop
//!    60 % shop-wide (fixed, threshold, percent) and 40 % goods-scoped, each listing 3 of the
//!    shop's goods; plus 5 platform templates. Each shop sells `--goods / --shops` goods
//!    (ids `shop * 1000 + k`), each with one price (5.00–500.00).
//! 2. Every shop's listing is read once by a user (so the node caches it and its templates'
//!    hot state is loaded), and one product page is checked to list templates.
//!
//! Load: each request is a random user's token on a random product of a random shop.
//! The server's `stampede_discovery_db_queries_total` is read before and after the window:
//! in steady state no request queries the database.

use crate::auth::Tokens;
use crate::client::Target;
use crate::setup::{create_template, in_parallel, open_window, send};
use crate::workload::{Operation, Workload};
use anyhow::{Context, bail};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::HeaderValue;
use hyper::{Method, Uri};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use stampede_domain::ids::ShopId;
use std::sync::Arc;

/// Platform templates (they apply on every product page).
const PLATFORM: usize = 5;

/// The `discovery` flags (their docs are the `--help` text).
#[derive(Debug, Clone, clap::Args)]
pub struct DiscoverySetup {
    /// Shops with templates.
    #[arg(long, default_value_t = 10_000)]
    pub shops: u64,
    /// Templates per shop.
    #[arg(long = "per-shop", default_value_t = 20)]
    pub per_shop: usize,
    /// Goods over all shops (each shop sells goods / shops of them, at least 3).
    #[arg(long, default_value_t = 100_000)]
    pub goods: u64,
    /// First shop id (apart from the other scenarios' shops).
    #[arg(long = "first-shop", default_value_t = 100_001)]
    pub first_shop: u64,
    /// Simulated shoppers (user tokens).
    #[arg(long, default_value_t = 10_000)]
    pub users: u64,
    /// First user id.
    #[arg(long, default_value_t = 3_000_001)]
    pub first_user: u64,
    /// Setup requests in flight.
    #[arg(
        long = "setup-in-flight",
        value_name = "SETUP_IN_FLIGHT",
        default_value_t = 32
    )]
    pub in_flight: usize,
    /// `limit` of each product page request (the server's default, 20, when unset).
    #[arg(long = "page-limit")]
    pub page_limit: Option<u32>,
    /// The templates exist already (a previous run with the same flags against this
    /// server): only warm the listings and measure.
    #[arg(long = "skip-create")]
    pub skip_create: bool,
}

impl DiscoverySetup {
    fn goods_per_shop(&self) -> u64 {
        (self.goods / self.shops.max(1)).max(3)
    }
}

/// The product pages: a random user on a random product.
#[derive(Debug)]
pub struct DiscoveryWork {
    pages: Vec<Uri>,
    auths: Vec<HeaderValue>,
}

impl Workload for DiscoveryWork {
    fn next(&self, target: &Target, rng: &mut SmallRng) -> Option<Operation> {
        let uri = self.pages.get(rng.random_range(0..self.pages.len()))?;
        let auth = self.auths.get(rng.random_range(0..self.auths.len()))?;
        Some(Operation::Single(target.request(
            Method::GET,
            uri.clone(),
            Some(auth),
            Full::new(Bytes::new()),
        )))
    }
}

/// The price of goods `g` in minor units (500–50,000), fixed per goods.
fn price(g: u64) -> u64 {
    let mut rng = SmallRng::seed_from_u64(g);
    rng.random_range(5..=500) * 100
}

/// Template `k` of a shop (`k < per_shop`) selling `goods` (ids).
fn shop_template(k: usize, per_shop: usize, goods: &[u64]) -> Value {
    let shop_wide = per_shop * 3 / 5;
    let amount = 100 + 50 * k as i64;
    let mut t = match k % 3 {
        0 => json!({"kind": "fixed", "amount_off": amount}),
        1 => json!({"kind": "threshold", "threshold": amount * 10, "amount_off": amount * 2}),
        _ => json!({"kind": "percent", "percent_off": 5 + (k % 20), "max_off": amount * 3}),
    };
    if k >= shop_wide && goods.len() >= 3 {
        let first = k % goods.len();
        let listed: Vec<String> = (0..3)
            .map(|i| goods[(first + i) % goods.len()].to_string())
            .collect();
        if let Value::Object(o) = &mut t {
            o.insert("scope".into(), "goods".into());
            o.insert("goods_ids".into(), json!(listed));
        }
    }
    t
}

/// Creates the templates, warms every shop's listing, checks a product page.
pub async fn setup(
    target: &Target,
    secret: &[u8],
    cfg: &DiscoverySetup,
) -> anyhow::Result<DiscoveryWork> {
    if cfg.shops == 0 || cfg.per_shop == 0 || cfg.users == 0 {
        bail!("--shops, --per-shop and --users must be at least 1");
    }
    let tokens = Arc::new(Tokens::new(secret));
    let per_goods = cfg.goods_per_shop();
    let shop_goods = |s: u64| -> Vec<u64> { (1..=per_goods).map(|k| s * 1000 + k).collect() };
    let (start, end) = open_window(24);
    let base = json!({"stock_total": 1_000_000, "claim_start": start, "claim_end": end,
                      "validity_hours": 24, "per_user_limit": 1});
    let with = |mut t: Value, name: String| {
        if let (Value::Object(o), Value::Object(b)) = (&mut t, base.clone()) {
            o.extend(b);
            o.insert("name".into(), name.into());
        }
        t
    };

    // 1. Templates: the platform's, then every shop's.
    let admin = tokens.admin()?;
    let mut conn = target.connect().await?;
    let n = usize::try_from(cfg.shops).context("--shops")? * cfg.per_shop;
    let (first, per_shop) = (cfg.first_shop, cfg.per_shop);
    let platform = if cfg.skip_create { 0 } else { PLATFORM };
    for k in 0..platform {
        let mut t = with(
            json!({"kind": "fixed", "amount_off": 100 + 100 * k as i64}),
            format!("bench discovery platform #{k}"),
        );
        if let Value::Object(o) = &mut t {
            o.insert("source".into(), "platform".into());
        }
        create_template(target, &mut conn, &admin, &t)
            .await
            .with_context(|| format!("creating platform template #{k}"))?;
    }
    let bodies: Arc<Vec<(u64, Value)>> = Arc::new(
        (0..n)
            .map(|i| {
                let s = first + (i / per_shop) as u64;
                let k = i % per_shop;
                let t = shop_template(k, per_shop, &shop_goods(s));
                (s, with(t, format!("bench discovery {s} #{k}")))
            })
            .collect(),
    );
    if !cfg.skip_create {
        let (t, tokens, bodies) = (target.clone(), tokens.clone(), bodies.clone());
        in_parallel(
            target,
            n,
            cfg.in_flight,
            "creating templates",
            move |i, mut conn| {
                let (t, tokens, bodies) = (t.clone(), tokens.clone(), bodies.clone());
                async move {
                    let (s, body) = &bodies[i];
                    let shop = ShopId::new(i64::try_from(*s)?).context("shop id")?;
                    let auth = tokens.merchant(&format!("bench-merchant-{s}"), shop)?;
                    create_template(&t, &mut conn, &auth, body)
                        .await
                        .with_context(|| format!("creating {body}"))?;
                    Ok((conn, ()))
                }
            },
        )
        .await?;
    }
    if !cfg.skip_create {
        eprintln!(
            "created {n} templates ({per_shop} in each of {} shops, {PLATFORM} platform)",
            cfg.shops
        );
    }

    // 2. Every listing read once by a user; one product page checked.
    let auths: Arc<[HeaderValue]> = tokens.users(cfg.first_user, cfg.users)?.into();
    let shops = usize::try_from(cfg.shops).context("--shops")?;
    {
        let (t, auths) = (target.clone(), auths.clone());
        in_parallel(
            target,
            shops,
            cfg.in_flight,
            "warming listings",
            move |i, mut conn| {
                let (t, auths) = (t.clone(), auths.clone());
                async move {
                    let s = first + i as u64;
                    let path =
                        format!("/api/v1/shops/{s}/templates?include_platform=true&limit=100");
                    let auth = &auths[i % auths.len()];
                    let (status, body) =
                        send(&t, &mut conn, Method::GET, &path, auth, None).await?;
                    if status != 200 {
                        bail!("{path}: {status} {}", String::from_utf8_lossy(&body));
                    }
                    Ok((conn, ()))
                }
            },
        )
        .await?;
    }
    let g = shop_goods(first)[0];
    let path = format!(
        "/api/v1/goods/{g}/templates?shop_id={first}&price={}",
        price(g)
    );
    let (status, body) = send(target, &mut conn, Method::GET, &path, &auths[0], None).await?;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let listed = v["items"].as_array().map_or(0, Vec::len);
    if status != 200 || listed == 0 {
        bail!("sanity check {path}: {status} {v}");
    }
    eprintln!("sanity check: {path} lists {listed} templates");

    let mut pages = Vec::with_capacity(n);
    for s in first..first + cfg.shops {
        for g in shop_goods(s) {
            let limit = cfg
                .page_limit
                .map_or_else(String::new, |l| format!("&limit={l}"));
            pages.push(target.uri(&format!(
                "/api/v1/goods/{g}/templates?shop_id={s}&price={}{limit}",
                price(g)
            ))?);
        }
    }
    Ok(DiscoveryWork {
        pages,
        auths: auths.to_vec(),
    })
}

/// The server's `stampede_discovery_db_queries_total`, from `/metrics`.
pub async fn db_queries(target: &Target) -> anyhow::Result<u64> {
    let mut conn = target.connect().await?;
    let (status, body) = target
        .send_json(&mut conn, Method::GET, "/metrics", None, None)
        .await?;
    if status != 200 {
        bail!("/metrics: {status}");
    }
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .find_map(|l| l.strip_prefix("stampede_discovery_db_queries_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .context("/metrics has no stampede_discovery_db_queries_total")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shops_mix_shop_wide_and_goods_scoped_templates() {
        let goods = [5001, 5002, 5003, 5004];
        let ts: Vec<Value> = (0..20).map(|k| shop_template(k, 20, &goods)).collect();
        let scoped = ts.iter().filter(|t| t["scope"] == "goods").count();
        assert_eq!(scoped, 8);
        assert!(ts.iter().all(|t| t["kind"].is_string()));
        assert_eq!(price(7), price(7));
        assert!((500..=50_000).contains(&price(123)));
    }
}
