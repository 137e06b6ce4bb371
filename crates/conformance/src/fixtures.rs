//! What scenarios build from: one fixed clock, templates, claims, ids. Everything is
//! deterministic so a failure repeats.

use jiff::{SignedDuration, Timestamp};
use stampede_core::claim_ports::{ClaimRecord, OutboxEvent};
use stampede_core::ports::{CreateOutcome, IdempotencyRecord};
use stampede_domain::audit::AuditEntry;
use stampede_domain::coupon::{Origin, new_claimed_coupon};
use stampede_domain::ids::{CouponId, DistributionId, GoodsId, ShopId, TemplateId, UserId};
use stampede_domain::template::{Kind, Scope, Template, TemplateDraft};

use crate::SystemOfRecord;

/// The actor written into audit entries by the scenarios.
pub const ACTOR: &str = "merchant:1";

/// The scenarios' "now": fixed, in the future of any real clock (claim windows built from it
/// are still to come), and with milliseconds, so a store that drops them is caught.
pub fn now() -> Timestamp {
    Timestamp::from_millisecond(1_900_000_000_123).unwrap()
}

/// `now()` in epoch milliseconds.
pub fn now_ms() -> i64 {
    now().as_millisecond()
}

pub fn mins(m: i64) -> SignedDuration {
    SignedDuration::from_mins(m)
}

pub fn hours(h: i64) -> SignedDuration {
    SignedDuration::from_hours(h)
}

/// `now()` moved by `m` minutes.
pub fn at(m: i64) -> Timestamp {
    now() + mins(m)
}

pub fn tid(raw: i64) -> TemplateId {
    TemplateId::new(raw).unwrap()
}

/// A shop; `0` is the platform.
pub fn shop(raw: i64) -> ShopId {
    ShopId::from_stored(raw).unwrap()
}

pub fn uid(raw: i64) -> UserId {
    UserId::new(raw).unwrap()
}

pub fn cid(raw: i64) -> CouponId {
    CouponId::new(raw).unwrap()
}

pub fn did(raw: i64) -> DistributionId {
    DistributionId::new(raw).unwrap()
}

/// A fixed-amount template draft: 5.00 off, stock 100, claimable from `now()` for ten days,
/// each coupon valid 24 hours from its claim.
pub fn draft(name: &str) -> TemplateDraft {
    TemplateDraft {
        name: Some(name.to_owned()),
        kind: Some(Kind::Fixed),
        amount_off: Some(500),
        stock_total: Some(100),
        claim_start: Some(now()),
        claim_end: Some(now() + hours(240)),
        validity_hours: Some(24),
        ..TemplateDraft::default()
    }
}

pub fn build(d: TemplateDraft, id: i64, shop_id: i64) -> Template {
    d.validate(tid(id), shop(shop_id), now())
        .expect("a valid template")
}

/// `draft(name)` as template `id` of `shop_id`.
pub fn template(id: i64, shop_id: i64, name: &str) -> Template {
    build(draft(name), id, shop_id)
}

/// `template` whose claim window closes `end_mins` after `now()`.
pub fn closing(id: i64, shop_id: i64, name: &str, end_mins: i64) -> Template {
    build(
        TemplateDraft {
            claim_end: Some(at(end_mins)),
            ..draft(name)
        },
        id,
        shop_id,
    )
}

/// A template using every optional column: percent kind, goods scope, absolute validity,
/// instructions, text beyond ASCII, a goods id past 2^53.
pub fn rich_template(id: i64, shop_id: i64) -> Template {
    let d = TemplateDraft {
        name: Some("Été 🎉 -15%".to_owned()),
        instructions: Some("Valable sur les articles listés.\n每人限3张".to_owned()),
        scope: Some(Scope::Goods),
        goods_ids: Some(vec![
            GoodsId::new(3).unwrap(),
            GoodsId::new(9_007_199_254_740_993).unwrap(),
        ]),
        kind: Some(Kind::Percent),
        amount_off: None,
        percent_off: Some(15),
        max_off: Some(1_000),
        threshold: Some(2_000),
        validity_hours: None,
        valid_from: Some(now()),
        valid_until: Some(now() + hours(480)),
        per_user_limit: Some(3),
        ..draft("")
    };
    build(d, id, shop_id)
}

/// An idempotency record binding `key` in `t`'s shop to `t`; `hash_seed` makes the request
/// hash.
pub fn idem(t: &Template, key: &str, hash_seed: u64) -> IdempotencyRecord {
    IdempotencyRecord {
        shop_id: t.shop_id,
        key: key.to_owned(),
        request_hash: format!("{hash_seed:064x}"),
        template_id: t.id,
        created_at: t.created_at,
    }
}

pub async fn create_with(
    store: &dyn SystemOfRecord,
    t: &Template,
    key: Option<&IdempotencyRecord>,
) -> CreateOutcome {
    store
        .create_template(t, &AuditEntry::created(t, ACTOR), key)
        .await
        .expect("create_template")
}

pub async fn create(store: &dyn SystemOfRecord, t: &Template) {
    let outcome = create_with(store, t, None).await;
    assert!(matches!(outcome, CreateOutcome::Created), "{outcome:?}");
}

/// A stored fixed-amount template with `stock` coupons, up to 100 per user.
pub async fn stocked(store: &dyn SystemOfRecord, id: i64, shop_id: i64, stock: i64) -> Template {
    let t = build(
        TemplateDraft {
            stock_total: Some(stock),
            per_user_limit: Some(100),
            ..draft(&format!("stocked {id}"))
        },
        id,
        shop_id,
    );
    create(store, &t).await;
    t
}

/// The stored stock of `t`.
pub async fn stock_of(store: &dyn SystemOfRecord, t: &Template) -> i64 {
    store.get_template(t.id).await.unwrap().unwrap().stock
}

/// Claim `id` of `t` by `user` (their `seq`-th), made `mins` minutes after `now()`.
pub fn claim(t: &Template, id: i64, user: i64, seq: u32, mins: i64) -> ClaimRecord {
    ClaimRecord {
        coupon: new_claimed_coupon(t, cid(id), uid(user), seq, Origin::Claim, at(mins)),
        claim_key: None,
        traceparent: None,
    }
}

/// `c` made by a request carrying `key`.
pub fn keyed(mut c: ClaimRecord, key: &str) -> ClaimRecord {
    c.claim_key = Some(key.to_owned());
    c
}

/// Every `coupon.claimed` event in the outbox.
pub async fn claimed_events(store: &dyn SystemOfRecord) -> Vec<OutboxEvent> {
    store
        .outbox_events("coupon.claimed", 1_000_000)
        .await
        .unwrap()
}

/// Runs `n` copies of `f` at once on the runtime and returns their answers in spawn order.
pub async fn race<T, F, Fut>(n: usize, f: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(f(i))).collect();
    futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("a racing task panicked"))
        .collect()
}
