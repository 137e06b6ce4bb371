//! Shared test fixtures: a random key prefix cleaned up on drop, in-memory fakes of the
//! claim ports, templates and coupons.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use stampede_core::claim_ports::{
    ClaimLogStore, ClaimRecord, ClaimState, CouponQuery, CouponStore, OutboxEvent,
};
use stampede_core::ports::StoreError;
use stampede_domain::coupon::{Origin, UserCoupon, new_claimed_coupon};
use stampede_domain::ids::{CouponId, ShopId, TemplateId, UserId};
use stampede_domain::template::{Kind, Template, TemplateDraft};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

pub fn redis_url() -> String {
    std::env::var("STAMPEDE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The seed nodes of the Redis Cluster the cluster tests run on: `STAMPEDE_TEST_REDIS_CLUSTER`
/// (comma-separated URLs), which the test command sets after starting a private 3-master
/// cluster (`eval "$(scripts/redis-cluster.sh start)"`).
pub fn redis_cluster() -> Vec<String> {
    let seeds = std::env::var("STAMPEDE_TEST_REDIS_CLUSTER").unwrap_or_default();
    let urls: Vec<String> = seeds
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    assert!(
        !urls.is_empty(),
        "the cluster tests need a Redis Cluster: eval \"$(scripts/redis-cluster.sh start)\" \
         sets STAMPEDE_TEST_REDIS_CLUSTER (scripts/test.sh does)"
    );
    urls
}

/// A random key prefix; every key under it is deleted when this is dropped (even when the
/// test panics).
pub struct TestPrefix(pub String);

impl TestPrefix {
    pub fn new() -> Self {
        Self(format!("stampede-test-{:016x}", rand::random::<u64>()))
    }
}

impl Drop for TestPrefix {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(redis_url()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let mut cursor: u64 = 0;
        loop {
            let Ok((next, keys)): Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}:*", self.0))
                .arg("COUNT")
                .arg(1000)
                .query(&mut conn)
            else {
                return;
            };
            if !keys.is_empty() {
                let _: Result<i64, _> = redis::cmd("DEL").arg(&keys).query(&mut conn);
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }
}

pub async fn conn() -> redis::aio::ConnectionManager {
    stampede_hot_redis::connect(&redis_url())
        .await
        .expect("redis reachable")
}

pub fn tid(n: i64) -> TemplateId {
    TemplateId::new(n).expect("positive")
}

pub fn uid(n: i64) -> UserId {
    UserId::new(n).expect("positive")
}

pub fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

pub fn ms(n: i64) -> SignedDuration {
    SignedDuration::from_millis(n)
}

pub const START: &str = "2031-03-01T10:00:00Z";
pub const END: &str = "2031-03-02T10:00:00Z";

/// An active fixed-amount template claimable in `[START, END)`, 24 h relative validity.
pub fn template(id: i64, stock: i64, per_user_limit: i64) -> Template {
    TemplateDraft {
        name: Some("flash".into()),
        kind: Some(Kind::Fixed),
        amount_off: Some(500),
        stock_total: Some(stock),
        claim_start: Some(ts(START)),
        claim_end: Some(ts(END)),
        validity_hours: Some(24),
        per_user_limit: Some(per_user_limit),
        ..TemplateDraft::default()
    }
    .validate(
        tid(id),
        ShopId::new(77).expect("positive"),
        ts("2031-01-01T00:00:00Z"),
    )
    .expect("valid template")
}

/// During the claim window.
pub fn open_time() -> Timestamp {
    ts(START) + SignedDuration::from_mins(5)
}

static NEXT_COUPON: AtomicI64 = AtomicI64::new(1_000_000);

pub fn coupon(t: &Template, user: i64, now: Timestamp) -> UserCoupon {
    let id = CouponId::new(NEXT_COUPON.fetch_add(1, Ordering::Relaxed)).expect("positive");
    new_claimed_coupon(t, id, uid(user), 0, Origin::Claim, now)
}

/// `CouponStore` fake: serves a fixed claim state per template.
#[derive(Default)]
pub struct FakeCoupons {
    pub states: Mutex<HashMap<TemplateId, ClaimState>>,
    pub claim_state_calls: AtomicI64,
}

#[async_trait]
impl CouponStore for FakeCoupons {
    async fn commit_claims(&self, _claims: &[ClaimRecord]) -> Result<(), StoreError> {
        Ok(())
    }

    async fn claim_state(&self, template: TemplateId) -> Result<ClaimState, StoreError> {
        self.claim_state_calls.fetch_add(1, Ordering::Relaxed);
        Ok(self
            .states
            .lock()
            .unwrap()
            .get(&template)
            .cloned()
            .unwrap_or_default())
    }

    async fn get_coupon(
        &self,
        _user: UserId,
        _id: CouponId,
    ) -> Result<Option<UserCoupon>, StoreError> {
        Ok(None)
    }

    async fn list_coupons(&self, _q: &CouponQuery) -> Result<Vec<UserCoupon>, StoreError> {
        Ok(Vec::new())
    }

    async fn outbox_events(
        &self,
        _kind: &str,
        _limit: u32,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        Ok(Vec::new())
    }

    async fn outbox_backlog(
        &self,
    ) -> Result<stampede_core::claim_ports::OutboxBacklog, StoreError> {
        Ok(Default::default())
    }
}

#[derive(Default)]
pub struct LogState {
    /// (user, template, seq) → record: the unique key of user coupons.
    pub coupons: BTreeMap<(UserId, TemplateId, u32), ClaimRecord>,
    pub applied: HashMap<TemplateId, String>,
    /// Stock taken off each template by `apply_claims`.
    pub stock_taken: HashMap<TemplateId, i64>,
    pub insert_calls: usize,
    pub apply_calls: usize,
    pub apply_refused: usize,
}

/// `ClaimLogStore` fake with the contract's semantics: idempotent insert, CAS apply.
#[derive(Default)]
pub struct FakeLog(pub Mutex<LogState>);

impl FakeLog {
    pub fn coupons(&self) -> usize {
        self.0.lock().unwrap().coupons.len()
    }

    pub fn taken(&self, t: TemplateId) -> i64 {
        self.0
            .lock()
            .unwrap()
            .stock_taken
            .get(&t)
            .copied()
            .unwrap_or(0)
    }

    pub fn insert_calls(&self) -> usize {
        self.0.lock().unwrap().insert_calls
    }
}

#[async_trait]
impl ClaimLogStore for FakeLog {
    async fn insert_claimed(&self, claims: &[ClaimRecord]) -> Result<(), StoreError> {
        // Yield so that concurrent persisters interleave.
        tokio::task::yield_now().await;
        let mut s = self.0.lock().unwrap();
        s.insert_calls += 1;
        for r in claims {
            let c = &r.coupon;
            s.coupons
                .entry((c.user_id, c.template_id, c.seq))
                .or_insert_with(|| r.clone());
        }
        Ok(())
    }

    async fn applied_position(&self, template: TemplateId) -> Result<String, StoreError> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .applied
            .get(&template)
            .cloned()
            .unwrap_or_else(|| "0-0".into()))
    }

    async fn apply_claims(
        &self,
        template: TemplateId,
        from: &str,
        to: &str,
        count: i64,
    ) -> Result<bool, StoreError> {
        tokio::task::yield_now().await;
        let mut s = self.0.lock().unwrap();
        s.apply_calls += 1;
        let cur = s
            .applied
            .get(&template)
            .cloned()
            .unwrap_or_else(|| "0-0".into());
        if cur != from {
            s.apply_refused += 1;
            return Ok(false);
        }
        s.applied.insert(template, to.to_owned());
        *s.stock_taken.entry(template).or_insert(0) += count;
        Ok(true)
    }
}

pub async fn xlen(conn: &mut redis::aio::ConnectionManager, prefix: &str, t: TemplateId) -> i64 {
    redis::cmd("XLEN")
        .arg(format!("{prefix}:{{tpl:{t}}}:log"))
        .query_async(conn)
        .await
        .expect("XLEN")
}
