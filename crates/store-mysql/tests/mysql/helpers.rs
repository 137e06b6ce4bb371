//! Fresh databases per test, and template and claim builders.

use futures::FutureExt;
use jiff::{SignedDuration, Timestamp};
use stampede_core::claim_ports::{ClaimRecord, CouponStore, OutboxEvent};
use stampede_core::ports::{CreateOutcome, IdempotencyRecord, TemplateStore};
use stampede_domain::audit::AuditEntry;
use stampede_domain::coupon::{Origin, new_claimed_coupon};
use stampede_domain::ids::{CouponId, GoodsId, ShopId, TemplateId, UserId};
use stampede_domain::template::{Kind, Scope, Template, TemplateDraft};
use stampede_store_mysql::{MysqlConfig, MysqlStore};
use std::future::Future;
use std::panic::AssertUnwindSafe;

pub const ACTOR: &str = "admin:1";

/// A fixed "now" far enough ahead that every claim window built from it is in the future.
pub fn now() -> Timestamp {
    Timestamp::from_second(1_900_000_000).unwrap()
}

pub fn hours(h: i64) -> SignedDuration {
    SignedDuration::from_hours(h)
}

pub fn server_url() -> String {
    std::env::var("STAMPEDE_TEST_MYSQL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
}

/// A layout of `databases` × `tables` over fresh, uniquely named databases.
pub fn fresh_config(databases: u32, tables: u32) -> MysqlConfig {
    let suffix = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
    let server = server_url();
    MysqlConfig {
        databases: (0..databases)
            .map(|i| format!("{server}/stampede_t_{suffix}_{i}"))
            .collect(),
        tables_per_database: tables,
        max_connections_per_database: 8,
    }
}

pub struct Ctx {
    pub store: MysqlStore,
    pub cfg: MysqlConfig,
}

/// Runs `scenario` on a store over fresh databases, and drops them even if it panics.
pub async fn with_store<F, Fut>(databases: u32, tables: u32, scenario: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let cfg = fresh_config(databases, tables);
    let store = MysqlStore::open(&cfg).await.expect("open the store");
    let outcome = AssertUnwindSafe(scenario(Ctx {
        store: store.clone(),
        cfg,
    }))
    .catch_unwind()
    .await;
    store
        .drop_databases()
        .await
        .expect("drop the test databases");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Generates `$scenario::one_by_one` and `$scenario::two_by_four` tests running `$scenario`.
macro_rules! both_layouts {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn one_by_one() {
                crate::helpers::with_store(1, 1, super::$scenario).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn two_by_four() {
                crate::helpers::with_store(2, 4, super::$scenario).await;
            }
        }
    )+};
}

/// Generates `$scenario::one_by_one` and `$scenario::two_by_two` tests running `$scenario`.
macro_rules! small_layouts {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn one_by_one() {
                crate::helpers::with_store(1, 1, super::$scenario).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn two_by_two() {
                crate::helpers::with_store(2, 2, super::$scenario).await;
            }
        }
    )+};
}

pub fn tid(raw: i64) -> TemplateId {
    TemplateId::new(raw).unwrap()
}

pub fn shop(raw: i64) -> ShopId {
    ShopId::from_stored(raw).unwrap()
}

/// A fixed-amount template, stock 100, claimable from `now()` for ten days.
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

pub fn template(id: i64, shop_id: i64, name: &str) -> Template {
    build(draft(name), id, shop_id)
}

/// A template using every optional column: percent, goods scope, absolute validity.
pub fn rich_template(id: i64, shop_id: i64) -> Template {
    let d = TemplateDraft {
        name: Some("Été 🎉 -15%".to_owned()),
        instructions: Some("Valable sur les articles listés. 每人限3张".to_owned()),
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
    store: &MysqlStore,
    t: &Template,
    key: Option<&IdempotencyRecord>,
) -> CreateOutcome {
    store
        .create_template(t, &AuditEntry::created(t, ACTOR), key)
        .await
        .expect("create_template")
}

pub async fn create(store: &MysqlStore, t: &Template) {
    let outcome = create_with(store, t, None).await;
    assert!(matches!(outcome, CreateOutcome::Created), "{outcome:?}");
}

pub fn uid(raw: i64) -> UserId {
    UserId::new(raw).unwrap()
}

/// A stored fixed-amount template with `stock` coupons, up to 100 per user, each valid 24
/// hours from its claim.
pub async fn stocked(store: &MysqlStore, id: i64, shop_id: i64, stock: i64) -> Template {
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

/// A claim of `t` by `user` (its `seq`-th), made `mins` minutes after `now()`.
pub fn claim(t: &Template, id: i64, user: i64, seq: u32, mins: i64) -> ClaimRecord {
    ClaimRecord {
        coupon: new_claimed_coupon(
            t,
            CouponId::new(id).unwrap(),
            uid(user),
            seq,
            Origin::Claim,
            now() + SignedDuration::from_mins(mins),
        ),
        claim_key: None,
    }
}

pub fn keyed(mut c: ClaimRecord, key: &str) -> ClaimRecord {
    c.claim_key = Some(key.to_owned());
    c
}

pub async fn stock_of(store: &MysqlStore, t: &Template) -> i64 {
    store.get_template(t.id).await.unwrap().unwrap().stock
}

pub async fn claimed_events(store: &MysqlStore) -> Vec<OutboxEvent> {
    store
        .outbox_events("coupon.claimed", 1_000_000)
        .await
        .unwrap()
}
