//! The `lock-redeem` scenario: each operation locks one unused coupon of a user for a fresh
//! order (`POST /api/v1/orders/b-<run>-<n>/coupons/lock`) and then redeems it
//! (`POST /api/v1/orders/b-<run>-<n>/coupons/redeem`, body `{}`), both on one connection,
//! timed together as one pair.
//!
//! A redeemed coupon is spent, so the setup decides how many pairs a run can make:
//! `users × coupons_per_user` (default 1,000 × 100 = 100,000; warmup included). Pairs go
//! round-robin over the users (pair `n` is user `n mod users`), so concurrent pairs are for
//! different users. When every coupon is spent the run stops early and the report says so,
//! its rates taken over the shorter window.
//!
//! Setup:
//! 1. Templates of shop 1 (merchant token): fixed 1.00 off, `per_user_limit` 100 each, as
//!    many as `coupons_per_user` needs (`ceil(N / 100)`), `stock_total = users × limit`.
//! 2. Every user claims `coupons_per_user` coupons (`bulk_claim`), the ids kept.
//! 3. A claim is acknowledged once durable in the claim log, and reaches the coupon table a
//!    moment later (the persister); a lock needs it there. So each user's last claimed
//!    coupon is locked for a probe order and released, retried until the lock succeeds (at
//!    most [`PERSIST_WAIT`]); the probe leaves the coupon unused for the load.
//!
//! The cart is one line of shop 1 (50.00), so the lock's recomputed discount is the
//! template's 1.00, sent as `expected_discount`.

use crate::auth::Tokens;
use crate::bulk_claim;
use crate::client::{Body, Target};
use crate::problem::problem_code;
use crate::setup::{create_template, in_parallel, open_window, send};
use crate::workload::{Operation, Workload};
use anyhow::{Context, bail};
use hyper::Method;
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderValue;
use jiff::Timestamp;
use rand::rngs::SmallRng;
use serde_json::{Value, json};
use stampede_domain::ids::ShopId;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The most coupons of one template a user may hold (the domain's `per_user_limit` cap).
const PER_TEMPLATE: u32 = 100;
/// The most coupons per user: a lock considers a user's 500 soonest-to-expire unused coupons.
pub const MAX_COUPONS_PER_USER: u32 = 500;
/// The template's discount and the cart line's price, minor units.
const AMOUNT_OFF: i64 = 100;
const UNIT_PRICE: i64 = 5_000;
/// How long the setup waits for the claims to reach the coupon table.
pub const PERSIST_WAIT: Duration = Duration::from_secs(120);

/// The `lock-redeem` flags (their docs are the `--help` text).
#[derive(Debug, Clone, clap::Args)]
pub struct LockRedeemSetup {
    /// Simulated users. Pairs available: users x coupons-per-user.
    #[arg(long, default_value_t = 1_000)]
    pub users: u64,
    /// First user id (users are consecutive ids; apart from the other scenarios' by default).
    #[arg(long, default_value_t = 2_000_001)]
    pub first_user: u64,
    /// Coupons each user claims in the setup (1..=500): one pair each.
    #[arg(long, default_value_t = 100)]
    pub coupons_per_user: u32,
    /// Setup requests (claims, probes) in flight.
    #[arg(
        long = "setup-in-flight",
        value_name = "SETUP_IN_FLIGHT",
        default_value_t = 32
    )]
    pub in_flight: usize,
}

/// The pairs: every claimed coupon once.
#[derive(Debug)]
pub struct LockRedeemWork {
    /// Distinguishes this run's order ids: `b-<run>-<n>`.
    run: String,
    auths: Vec<HeaderValue>,
    /// `(user index, coupon id)`, in the order they are used.
    pairs: Vec<(u32, Box<str>)>,
    next: AtomicUsize,
    /// The cart lines as JSON (`[...]`).
    items: String,
}

impl LockRedeemWork {
    pub fn new(run: String, auths: Vec<HeaderValue>, pairs: Vec<(u32, Box<str>)>) -> Self {
        Self {
            run,
            auths,
            pairs,
            next: AtomicUsize::new(0),
            items: cart().to_string(),
        }
    }

    /// How many pairs the setup supports.
    pub fn capacity(&self) -> usize {
        self.pairs.len()
    }

    /// Pairs handed out so far (sent, or about to be).
    pub fn used(&self) -> usize {
        self.next.load(Ordering::Relaxed).min(self.pairs.len())
    }
}

impl Workload for LockRedeemWork {
    fn next(&self, target: &Target, _rng: &mut SmallRng) -> Option<Operation> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let (user, coupon) = self.pairs.get(n)?;
        let auth = self.auths.get(*user as usize)?;
        let order = format!("b-{}-{n}", self.run);
        let lock = target
            .uri(&format!("/api/v1/orders/{order}/coupons/lock"))
            .ok()?;
        let redeem = target
            .uri(&format!("/api/v1/orders/{order}/coupons/redeem"))
            .ok()?;
        let body = format!(
            r#"{{"coupon_ids":["{coupon}"],"items":{},"expected_discount":{AMOUNT_OFF}}}"#,
            self.items
        );
        Some(Operation::Chain(vec![
            ("lock", target.post_json(lock, auth, Bytes::from(body))),
            (
                "redeem",
                target.post_json(redeem, auth, Bytes::from_static(b"{}")),
            ),
        ]))
    }

    fn requests_per_op(&self) -> u32 {
        2
    }
}

/// The cart: one line of shop 1.
fn cart() -> Value {
    json!([{
        "goods_id": "1001",
        "shop_id": "1",
        "unit_price": UNIT_PRICE,
        "quantity": 1,
    }])
}

/// Per-user limits of the templates that give each user `n` coupons.
pub fn template_limits(n: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut left = n;
    while left > 0 {
        let l = left.min(PER_TEMPLATE);
        out.push(l);
        left -= l;
    }
    out
}

/// The claims, template by template, round by round, user by user: `(user, template)`.
pub fn claim_plan(users: u32, limits: &[u32]) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for (t, &limit) in limits.iter().enumerate() {
        for _ in 0..limit {
            out.extend((0..users).map(|u| (u, t as u32)));
        }
    }
    out
}

/// Pairs round-robin over users: pair `n` is user `n mod users`.
pub fn pair_order(per_user: Vec<Vec<String>>) -> Vec<(u32, Box<str>)> {
    let rounds = per_user.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = Vec::with_capacity(per_user.iter().map(Vec::len).sum());
    let mut iters: Vec<_> = per_user.into_iter().map(Vec::into_iter).collect();
    for _ in 0..rounds {
        for (u, it) in iters.iter_mut().enumerate() {
            if let Some(c) = it.next() {
                out.push((u as u32, c.into_boxed_str()));
            }
        }
    }
    out
}

/// A tag that keeps this run's order ids apart from earlier runs'.
fn run_tag() -> String {
    format!("{:x}", Timestamp::now().as_millisecond())
}

/// Creates the templates, claims the coupons, waits until they can be locked.
pub async fn setup(
    target: &Target,
    secret: &[u8],
    cfg: &LockRedeemSetup,
) -> anyhow::Result<LockRedeemWork> {
    if cfg.users == 0 {
        bail!("--users must be at least 1");
    }
    if !(1..=MAX_COUPONS_PER_USER).contains(&cfg.coupons_per_user) {
        bail!("--coupons-per-user must be 1 to {MAX_COUPONS_PER_USER}");
    }
    let users = u32::try_from(cfg.users).context("--users is too large")?;
    let tokens = Tokens::new(secret);
    let shop = ShopId::new(1).context("shop id")?;
    let merchant = tokens.merchant("bench-merchant-1", shop)?;

    // 1. Templates.
    let (start, end) = open_window(24);
    let limits = template_limits(cfg.coupons_per_user);
    let mut conn = target.connect().await?;
    let mut template_ids = Vec::with_capacity(limits.len());
    for (i, &limit) in limits.iter().enumerate() {
        let body = json!({
            "name": format!("bench lock-redeem #{i}"),
            "kind": "fixed",
            "amount_off": AMOUNT_OFF,
            "stock_total": u64::from(users) * u64::from(limit),
            "claim_start": start,
            "claim_end": end,
            "validity_hours": 24,
            "per_user_limit": limit,
        });
        let id = create_template(target, &mut conn, &merchant, &body)
            .await
            .with_context(|| format!("creating template #{i}"))?;
        template_ids.push(id);
    }
    eprintln!(
        "created {} template(s) of shop 1 (fixed {AMOUNT_OFF} off)",
        template_ids.len()
    );

    // 2. Claims.
    let auths: Arc<[HeaderValue]> = tokens.users(cfg.first_user, cfg.users)?.into();
    let plan: Arc<[(u32, u32)]> = claim_plan(users, &limits).into();
    let claimed = bulk_claim::claim_all(
        target,
        auths.clone(),
        &template_ids,
        plan.clone(),
        cfg.in_flight,
    )
    .await?;
    let mut per_user: Vec<Vec<String>> = vec![Vec::new(); users as usize];
    for (&(u, _), id) in plan.iter().zip(claimed.coupons) {
        per_user[u as usize].push(id);
    }

    // 3. Wait until every user's last claim can be locked (then release it).
    let run = run_tag();
    let started = Instant::now();
    let last: Arc<[String]> = per_user
        .iter()
        .map(|c| c.last().cloned().unwrap_or_default())
        .collect();
    let probes = {
        let (t, auths, run) = (target.clone(), auths.clone(), run.clone());
        let items = cart();
        in_parallel(
            target,
            users as usize,
            cfg.in_flight,
            "persistence probes",
            move |u, conn| {
                let (t, auth, run, items) =
                    (t.clone(), auths[u].clone(), run.clone(), items.clone());
                let coupon = last[u].clone();
                async move {
                    probe(
                        &t,
                        conn,
                        &auth,
                        &format!("b-{run}-probe-{u}"),
                        &coupon,
                        &items,
                    )
                    .await
                }
            },
        )
        .await?
    };
    let retried = probes.iter().filter(|&&n| n > 1).count();
    eprintln!(
        "all claims lockable after {:.2} s ({retried} of {users} users waited for the persister)",
        started.elapsed().as_secs_f64()
    );

    let work = LockRedeemWork::new(run, auths.to_vec(), pair_order(per_user));
    eprintln!(
        "the setup supports {} lock+redeem pairs (warmup included); the run stops early when \
         they are all spent",
        work.capacity()
    );
    Ok(work)
}

/// Locks `coupon` for `order` until it works (the claim reached the coupon table), then
/// releases it. The attempts it took.
async fn probe(
    t: &Target,
    mut conn: SendRequest<Body>,
    auth: &HeaderValue,
    order: &str,
    coupon: &str,
    items: &Value,
) -> anyhow::Result<(SendRequest<Body>, u32)> {
    let lock = format!("/api/v1/orders/{order}/coupons/lock");
    let body = json!({ "coupon_ids": [coupon], "items": items });
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (status, answer) = send(t, &mut conn, Method::POST, &lock, auth, Some(&body)).await?;
        match status {
            200 => break,
            409 | 503
                if started.elapsed() < PERSIST_WAIT
                    && (status == 503
                        || problem_code(&answer) == Some(&b"COUPON_NOT_USABLE"[..])) =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => bail!(
                "probe lock of coupon {coupon}: {status} {}",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    let release = format!("/api/v1/orders/{order}/coupons/release");
    let (status, answer) =
        send(t, &mut conn, Method::POST, &release, auth, Some(&json!({}))).await?;
    if status != 200 {
        bail!(
            "probe release of {order}: {status} {}",
            String::from_utf8_lossy(&answer)
        );
    }
    Ok((conn, attempts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_hold_at_most_100_per_user() {
        assert_eq!(template_limits(100), [100]);
        assert_eq!(template_limits(250), [100, 100, 50]);
        assert_eq!(template_limits(7), [7]);
        assert_eq!(claim_plan(3, &[2, 1]).len(), 9);
        assert_eq!(claim_plan(2, &[2])[..3], [(0, 0), (1, 0), (0, 0)]);
    }

    #[test]
    fn pairs_go_round_robin_and_run_out() -> anyhow::Result<()> {
        let per_user = vec![
            vec!["a1".to_owned(), "a2".to_owned()],
            vec!["b1".to_owned()],
            vec!["c1".to_owned(), "c2".to_owned()],
        ];
        let pairs = pair_order(per_user);
        let users: Vec<u32> = pairs.iter().map(|p| p.0).collect();
        assert_eq!(users, [0, 1, 2, 0, 2]);
        let auths = vec![HeaderValue::from_static("Bearer x"); 3];
        let work = LockRedeemWork::new("r".into(), auths, pairs);
        assert_eq!(work.capacity(), 5);
        let target = Target {
            addr: "127.0.0.1:1".parse()?,
            host: HeaderValue::from_static("127.0.0.1:1"),
            prefix: String::new(),
        };
        let mut rng = rand::SeedableRng::seed_from_u64(1);
        for n in 0..5 {
            let Some(Operation::Chain(steps)) = work.next(&target, &mut rng) else {
                anyhow::bail!("pair {n} missing");
            };
            let paths: Vec<String> = steps.iter().map(|(_, r)| r.uri().to_string()).collect();
            assert_eq!(
                paths,
                [
                    format!("/api/v1/orders/b-r-{n}/coupons/lock"),
                    format!("/api/v1/orders/b-r-{n}/coupons/redeem")
                ]
            );
        }
        assert!(work.next(&target, &mut rng).is_none());
        assert_eq!(work.used(), 5);
        Ok(())
    }
}
