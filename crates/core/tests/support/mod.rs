//! Doubles of the ports the shopper use cases need: a template and coupon store that can be
//! taken "down" (every call answers `StoreError::Unavailable { Database }`), and a hot state
//! that can lose the answer of a claim it made.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use stampede_core::catalog::{Catalog, CatalogConfig};
use stampede_core::claim_ports::{
    ClaimOutcome, ClaimRecord, ClaimState, CouponQuery, CouponStore, HotState, OutboxEvent,
    Reservation, RowReservation, Standing,
};
use stampede_core::claims::Claims;
use stampede_core::clock::ManualClock;
use stampede_core::coupon_cache::UserCouponCache;
use stampede_core::ids::IdGenerator;
use stampede_core::ports::{
    ChangeOutcome, CreateOutcome, Dependency, IdempotencyRecord, Page, StoreError, TemplateQuery,
    TemplateStore,
};
use stampede_domain::audit::AuditEntry;
use stampede_domain::auth::{Principal, Role};
use stampede_domain::coupon::{ClaimRefusal, UserCoupon};
use stampede_domain::ids::{CouponId, DistributionId, ShopId, TemplateId, UserId};
use stampede_domain::template::{Kind, Template, TemplateChange, TemplateDraft};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub fn down() -> StoreError {
    StoreError::Unavailable {
        dependency: Dependency::Database,
        source: "connection refused".into(),
    }
}

pub fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

pub const START: &str = "2031-03-01T10:00:00Z";

pub fn template(id: i64, stock: i64) -> Template {
    TemplateDraft {
        name: Some("flash".into()),
        kind: Some(Kind::Fixed),
        amount_off: Some(500),
        stock_total: Some(stock),
        claim_start: Some(ts(START)),
        claim_end: Some(ts("2031-03-02T10:00:00Z")),
        validity_hours: Some(24),
        per_user_limit: Some(5),
        ..TemplateDraft::default()
    }
    .validate(
        TemplateId::new(id).unwrap(),
        ShopId::new(77).unwrap(),
        ts("2031-01-01T00:00:00Z"),
    )
    .expect("valid template")
}

pub fn user(n: i64) -> Principal {
    Principal {
        subject: n.to_string(),
        role: Role::User,
        shop_id: None,
        session_id: None,
    }
}

/// A system of record that can go down.
#[derive(Default)]
pub struct Store {
    pub down: AtomicBool,
    pub templates: Mutex<HashMap<TemplateId, Template>>,
    pub coupons: Mutex<Vec<UserCoupon>>,
}

impl Store {
    fn up(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(down())
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl TemplateStore for Store {
    async fn create_template(
        &self,
        _t: &Template,
        _a: &AuditEntry,
        _i: Option<&IdempotencyRecord>,
    ) -> Result<CreateOutcome, StoreError> {
        self.up()?;
        unimplemented!("not used by these tests")
    }
    async fn find_idempotency_key(
        &self,
        _shop: ShopId,
        _key: &str,
    ) -> Result<Option<(IdempotencyRecord, Option<Template>)>, StoreError> {
        self.up()?;
        Ok(None)
    }
    async fn get_template(&self, id: TemplateId) -> Result<Option<Template>, StoreError> {
        self.up()?;
        Ok(self.templates.lock().unwrap().get(&id).cloned())
    }
    async fn get_templates(&self, ids: &[TemplateId]) -> Result<Vec<Template>, StoreError> {
        self.up()?;
        let m = self.templates.lock().unwrap();
        Ok(ids.iter().filter_map(|i| m.get(i).cloned()).collect())
    }
    async fn list_templates(&self, _q: &TemplateQuery) -> Result<Page<Template>, StoreError> {
        self.up()?;
        unimplemented!("not used by these tests")
    }
    async fn change_template_keyed(
        &self,
        _id: TemplateId,
        _c: TemplateChange,
        _actor: &str,
        _now: Timestamp,
        _i: Option<&IdempotencyRecord>,
    ) -> Result<ChangeOutcome, StoreError> {
        self.up()?;
        unimplemented!("not used by these tests")
    }
    async fn audit_log(&self, _id: TemplateId) -> Result<Vec<AuditEntry>, StoreError> {
        self.up()?;
        Ok(Vec::new())
    }
    async fn templates_due_to_end(
        &self,
        _now: Timestamp,
        _limit: u32,
    ) -> Result<Vec<TemplateId>, StoreError> {
        self.up()?;
        Ok(Vec::new())
    }
    async fn purge_idempotency_keys(&self, _cutoff: Timestamp) -> Result<u64, StoreError> {
        self.up()?;
        Ok(0)
    }
    async fn template_ids(
        &self,
        after: Option<TemplateId>,
        limit: u32,
    ) -> Result<Vec<TemplateId>, StoreError> {
        self.up()?;
        let mut ids: Vec<TemplateId> = self
            .templates
            .lock()
            .unwrap()
            .keys()
            .copied()
            .filter(|i| after.is_none_or(|a| *i > a))
            .collect();
        ids.sort();
        ids.truncate(limit as usize);
        Ok(ids)
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.up()
    }
}

#[async_trait]
impl CouponStore for Store {
    async fn commit_claims(&self, claims: &[ClaimRecord]) -> Result<(), StoreError> {
        self.up()?;
        let mut c = self.coupons.lock().unwrap();
        c.extend(claims.iter().map(|r| r.coupon.clone()));
        Ok(())
    }
    async fn claim_state(&self, _t: TemplateId) -> Result<ClaimState, StoreError> {
        self.up()?;
        Ok(ClaimState::default())
    }
    async fn get_coupon(
        &self,
        user: UserId,
        id: CouponId,
    ) -> Result<Option<UserCoupon>, StoreError> {
        self.up()?;
        Ok(self
            .coupons
            .lock()
            .unwrap()
            .iter()
            .find(|c| c.user_id == user && c.id == id)
            .cloned())
    }
    async fn list_coupons(&self, q: &CouponQuery) -> Result<Vec<UserCoupon>, StoreError> {
        self.up()?;
        Ok(self
            .coupons
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.user_id == q.user_id)
            .cloned()
            .collect())
    }
    async fn outbox_events(&self, _k: &str, _l: u32) -> Result<Vec<OutboxEvent>, StoreError> {
        self.up()?;
        Ok(Vec::new())
    }

    async fn outbox_backlog(
        &self,
    ) -> Result<stampede_core::claim_ports::OutboxBacklog, StoreError> {
        self.up()?;
        Ok(Default::default())
    }
}

/// What the fake hot state does with the next claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Never sent: `Unavailable { Redis }`, nothing happened.
    NotSent,
    /// Made, then its answer lost.
    LostAfterMaking,
    /// Lost before it was made (it never happens).
    LostBeforeMaking,
    /// Made, answer lost, and the lookup fails too.
    LostAndLookupFails,
}

/// A hot state that makes claims in memory and can lose their answers.
pub struct LossyHot {
    pub fault: Mutex<Fault>,
    /// `(user, key)` → coupon made.
    pub keys: Mutex<HashMap<(UserId, String), UserCoupon>>,
    /// Every coupon made (pending: not persisted by these doubles).
    pub made: Mutex<Vec<UserCoupon>>,
    lookup_down: AtomicBool,
    /// When set, reading pending coupons first stores them all there and forgets them, as an
    /// applier finishing just before the read would.
    pub apply_before_pending_read: Mutex<Option<Arc<Store>>>,
}

impl Default for LossyHot {
    fn default() -> Self {
        Self {
            fault: Mutex::new(Fault::None),
            keys: Mutex::default(),
            made: Mutex::default(),
            lookup_down: AtomicBool::new(false),
            apply_before_pending_read: Mutex::default(),
        }
    }
}

impl LossyHot {
    pub fn next(&self, f: Fault) {
        *self.fault.lock().unwrap() = f;
    }

    fn lost() -> StoreError {
        StoreError::OutcomeUnknown {
            dependency: Dependency::Redis,
            source: "connection reset by peer".into(),
        }
    }
}

#[async_trait]
impl HotState for LossyHot {
    async fn claim(
        &self,
        _t: &Template,
        mut coupon: UserCoupon,
        key: Option<&str>,
        _now: Timestamp,
    ) -> Result<ClaimOutcome, StoreError> {
        let fault = std::mem::replace(&mut *self.fault.lock().unwrap(), Fault::None);
        match fault {
            Fault::NotSent => {
                return Err(StoreError::Unavailable {
                    dependency: Dependency::Redis,
                    source: "connection refused".into(),
                });
            }
            Fault::LostBeforeMaking => return Err(Self::lost()),
            _ => {}
        }
        if let Some(k) = key
            && let Some(c) = self
                .keys
                .lock()
                .unwrap()
                .get(&(coupon.user_id, k.to_owned()))
        {
            return Ok(ClaimOutcome::Replayed(c.clone()));
        }
        coupon.seq = 1;
        if let Some(k) = key {
            self.keys
                .lock()
                .unwrap()
                .insert((coupon.user_id, k.to_owned()), coupon.clone());
        }
        self.made.lock().unwrap().push(coupon.clone());
        match fault {
            Fault::LostAfterMaking => Err(Self::lost()),
            Fault::LostAndLookupFails => {
                self.lookup_down.store(true, Ordering::SeqCst);
                Err(Self::lost())
            }
            _ => Ok(ClaimOutcome::Claimed(coupon)),
        }
    }

    async fn find_claim(
        &self,
        _t: &Template,
        user: UserId,
        key: &str,
    ) -> Result<Option<UserCoupon>, StoreError> {
        if self.lookup_down.swap(false, Ordering::SeqCst) {
            return Err(Self::lost());
        }
        Ok(self
            .keys
            .lock()
            .unwrap()
            .get(&(user, key.to_owned()))
            .cloned())
    }

    async fn stock(&self, t: &Template) -> Result<Option<i64>, StoreError> {
        Ok(Some(t.stock - self.made.lock().unwrap().len() as i64))
    }

    async fn standing(
        &self,
        ts: &[&Template],
        user: Option<UserId>,
    ) -> Result<Vec<Standing>, StoreError> {
        let made = self.made.lock().unwrap();
        Ok(ts
            .iter()
            .map(|t| Standing {
                stock: Some(t.stock - made.iter().filter(|c| c.template_id == t.id).count() as i64),
                held: user.map(|u| {
                    made.iter()
                        .filter(|c| c.template_id == t.id && c.user_id == u)
                        .count() as u32
                }),
            })
            .collect())
    }

    async fn template_changed(&self, _t: &Template) -> Result<(), StoreError> {
        Ok(())
    }

    async fn pending_coupons(&self, user: UserId) -> Result<Vec<UserCoupon>, StoreError> {
        if let Some(store) = self.apply_before_pending_read.lock().unwrap().as_ref() {
            let applied: Vec<UserCoupon> = self.made.lock().unwrap().drain(..).collect();
            store.coupons.lock().unwrap().extend(applied);
        }
        Ok(self
            .made
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.user_id == user)
            .cloned()
            .collect())
    }

    async fn reserve_batch(
        &self,
        _t: &Template,
        _r: &Reservation<'_>,
        _now: Timestamp,
    ) -> Result<Option<Vec<RowReservation>>, StoreError> {
        Ok(Some(Vec::new()))
    }

    async fn abandon_batch(
        &self,
        _t: &Template,
        _r: &Reservation<'_>,
        _a: &[RowReservation],
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn return_stock(
        &self,
        _t: &Template,
        _task: DistributionId,
        _first_row: u64,
        _n: u64,
    ) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Claims over the doubles, with one open template (id 1, stock 10) known to the catalog.
pub struct World {
    pub store: Arc<Store>,
    pub hot: Arc<LossyHot>,
    pub clock: Arc<ManualClock>,
    pub claims: Claims,
    pub template: Template,
}

pub async fn world(key_required: bool) -> World {
    let store = Arc::new(Store::default());
    let t = template(1, 10);
    store.templates.lock().unwrap().insert(t.id, t.clone());
    let hot = Arc::new(LossyHot::default());
    let clock = Arc::new(ManualClock::default());
    clock.set(ts(START) + SignedDuration::from_mins(5));
    let catalog = Arc::new(Catalog::new(
        store.clone(),
        &CatalogConfig {
            ttl: Duration::from_secs(60),
            ..CatalogConfig::default()
        },
    ));
    catalog.rebuild_bloom().await.unwrap();
    let ids = Arc::new(IdGenerator::new(1, clock.clone(), Duration::from_millis(10)).unwrap());
    let claims = Claims::new(
        catalog,
        hot.clone(),
        store.clone(),
        ids,
        clock.clone(),
        Arc::new(UserCouponCache::new(100, Duration::from_secs(1))),
    )
    .with_key_required(key_required);
    World {
        store,
        hot,
        clock,
        claims,
        template: t,
    }
}

pub fn refused(r: ClaimRefusal) -> ClaimOutcome {
    ClaimOutcome::Refused(r)
}
