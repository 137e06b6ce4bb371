//! Settlement use cases: the checkout quote and the order lifecycle
//! (lock, redeem, release, refund). The math — eligibility, discounts, the best stacking — is
//! the domain's (`stampede_domain::settlement`); the state machine too
//! (`stampede_domain::order`). Here: who may act for which user, gathering the user's coupons
//! and their templates, and the store calls.

use crate::AppError;
use crate::catalog::Catalog;
use crate::claim_ports::{CouponStore, HotState, OutboxEvent};
use crate::clock::Clock;
use crate::coupon_cache::{CouponSet, UserCouponCache, UserCoupons};
use crate::ports::StoreError;
use crate::settlement_ports::{ChangeOutcome, LockOutcome, SettlementStore, coupon_event_id};
use jiff::SignedDuration;
use stampede_domain::ErrorCode;
use stampede_domain::auth::{Principal, Role};
use stampede_domain::coupon::{CouponStatus, UserCoupon};
use stampede_domain::ids::{CouponId, UserId};
use stampede_domain::money::Money;
use stampede_domain::order::{
    LineStatus, MAX_ORDER_COUPONS, OrderChange, OrderConflict, OrderStatus, Settlement,
    SettlementLine, valid_order_id,
};
use stampede_domain::settlement::{self as math, Cart, Quote};
use stampede_domain::template::Template;
use std::collections::HashMap;
use std::sync::Arc;

/// How long (× 50 ms) a lock waits for a just-claimed coupon to be persisted.
const PERSIST_WAIT_STEPS: u32 = 40;

/// Most coupons a quote considers (the user's unused ones, soonest to expire first).
pub const QUOTE_COUPONS: u32 = 500;

pub struct Settlements {
    store: Arc<dyn SettlementStore>,
    coupons: Arc<dyn CouponStore>,
    catalog: Arc<Catalog>,
    hot: Arc<dyn HotState>,
    clock: Arc<dyn Clock>,
    lock_ttl: SignedDuration,
    cache: Arc<UserCouponCache>,
}

fn conflict(code: ErrorCode, detail: impl Into<String>) -> AppError {
    AppError::Conflict {
        code,
        detail: detail.into(),
    }
}

/// The user a settlement call acts for: users for themselves (a `user_id` naming someone
/// else is 403), the `service` role for the `user_id` it names. `None` for a service call
/// without one (lifecycle calls then act for the order's user).
pub fn acting_user(who: &Principal, user_id: Option<UserId>) -> Result<Option<UserId>, AppError> {
    match who.role {
        Role::User => {
            let me = crate::claims::user_of(who)?;
            match user_id {
                Some(u) if u != me => Err(AppError::Forbidden(
                    "users settle their own coupons only".into(),
                )),
                _ => Ok(Some(me)),
            }
        }
        Role::Service => Ok(user_id),
        Role::Merchant | Role::Admin => Err(AppError::Forbidden(
            "settlement is for users and the order service".into(),
        )),
    }
}

impl Settlements {
    pub fn new(
        store: Arc<dyn SettlementStore>,
        coupons: Arc<dyn CouponStore>,
        catalog: Arc<Catalog>,
        hot: Arc<dyn HotState>,
        clock: Arc<dyn Clock>,
        lock_ttl: SignedDuration,
        cache: Arc<UserCouponCache>,
    ) -> Self {
        Self {
            store,
            coupons,
            catalog,
            hot,
            clock,
            lock_ttl,
            cache,
        }
    }

    /// Templates of `coupons`, from the catalog; coupons whose template is gone are left out.
    async fn with_templates(
        &self,
        coupons: Vec<UserCoupon>,
    ) -> Result<Vec<(UserCoupon, Arc<Template>)>, AppError> {
        let mut templates: HashMap<_, Arc<Template>> = HashMap::new();
        let mut out = Vec::with_capacity(coupons.len());
        for c in coupons {
            let t = match templates.get(&c.template_id) {
                Some(t) => t.clone(),
                None => match self.catalog.get(c.template_id).await? {
                    Some(t) => {
                        templates.insert(c.template_id, t.clone());
                        t
                    }
                    None => continue,
                },
            };
            out.push((c, t));
        }
        Ok(out)
    }

    /// The user's acknowledged, perhaps not yet stored claims; `None` when the hot store is
    /// unavailable (settlement does not need it).
    async fn pending(&self, user: UserId) -> Result<Option<Vec<UserCoupon>>, AppError> {
        match self.hot.pending_coupons(user).await {
            Ok(p) => Ok(Some(p)),
            Err(StoreError::Unavailable { dependency, .. }) => {
                tracing::debug!(%dependency, "pending coupons unknown: hot store unavailable");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The user's unused coupons with their templates: stored ones plus acknowledged claims
    /// not yet stored, from the per-node cache when it has them. Pending claims are read
    /// before stored coupons: a claim stored in between is then in both (counted once), never
    /// in neither.
    async fn coupons_of(&self, user: UserId) -> Result<CouponSet, AppError> {
        if let Some(hit) = self.cache.get(user).await {
            return Ok(hit);
        }
        let token = self.cache.fill_token(user);
        let pending = self.pending(user).await?;
        let mut coupons = self.store.unused_coupons(user, QUOTE_COUPONS).await?;
        let hot_up = pending.is_some();
        if let Some(pending) = pending {
            let known: std::collections::HashSet<CouponId> = coupons.iter().map(|c| c.id).collect();
            coupons.extend(
                pending
                    .into_iter()
                    .filter(|c| c.status == CouponStatus::Unused && !known.contains(&c.id)),
            );
        }
        let set: CouponSet = Arc::new(UserCoupons::new(self.with_templates(coupons).await?));
        // With the hot store down, acknowledged claims may be missing: answer, do not keep.
        if hot_up {
            self.cache
                .insert_if_unchanged(user, token, set.clone())
                .await;
        }
        Ok(set)
    }

    /// Distributed mode acknowledges a claim once it is in the claim log; the coupon reaches
    /// MySQL (where locks happen) a few milliseconds later. A lock naming such a coupon waits
    /// for it briefly instead of calling it unknown.
    async fn await_persisted(&self, user: UserId, ids: &[CouponId]) -> Result<(), AppError> {
        for _ in 0..PERSIST_WAIT_STEPS {
            // Hot store down: nothing to wait for that we could see; the store decides.
            let Some(pending) = self.pending(user).await? else {
                return Ok(());
            };
            let waiting: Vec<CouponId> = pending
                .iter()
                .map(|c| c.id)
                .filter(|id| ids.contains(id))
                .collect();
            if waiting.is_empty() {
                return Ok(());
            }
            let mut stored = true;
            for id in &waiting {
                if self.coupons.get_coupon(user, *id).await?.is_none() {
                    stored = false;
                }
            }
            if stored {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Err(conflict(
            ErrorCode::CouponNotUsable,
            "a coupon was just claimed and is still being saved; retry in a moment",
        ))
    }

    pub async fn quote(
        &self,
        who: &Principal,
        user_id: Option<UserId>,
        cart: &Cart,
    ) -> Result<Quote, AppError> {
        let (set, p) = self.plan(who, user_id, cart).await?;
        Ok(math::quote_from_plan(p, |i| {
            let c = &set.items[i];
            (&c.coupon, &*c.template)
        }))
    }

    /// [`Self::quote`] as its JSON body, written from each coupon's pre-rendered fragment:
    /// byte for byte the serialised [`Quote`], at a fraction of the cost.
    pub async fn quote_json(
        &self,
        who: &Principal,
        user_id: Option<UserId>,
        cart: &Cart,
    ) -> Result<Vec<u8>, AppError> {
        let (set, p) = self.plan(who, user_id, cart).await?;
        math::render_quote(&p, |i| (set.fragment(i), set.items[i].template.kind))
            .map_err(|e| AppError::Internal(Box::new(e)))
    }

    async fn plan(
        &self,
        who: &Principal,
        user_id: Option<UserId>,
        cart: &Cart,
    ) -> Result<(CouponSet, math::QuotePlan), AppError> {
        let user = acting_user(who, user_id)?
            .ok_or_else(|| AppError::validation("user_id", "is required for the service role"))?;
        let set = self.coupons_of(user).await?;
        let p = math::plan(
            &set.items,
            |c| (&c.coupon, &*c.template),
            cart,
            self.clock.now(),
        );
        if !p.best.exact {
            // A pathological cart ran the search out of budget: the answer is the best found.
            tracing::warn!(user = %user, coupons = set.len(), shops = cart.shops().len(), "best combination search hit its budget");
        }
        Ok((set, p))
    }

    /// Locks `coupon_ids` for `order_id`, the discount recomputed here. Repeating the same
    /// lock answers the same settlement; the order id with other coupons is 409 `CONFLICT`.
    pub async fn lock(
        &self,
        who: &Principal,
        order_id: &str,
        user_id: Option<UserId>,
        coupon_ids: &[CouponId],
        cart: &Cart,
        expected_discount: Option<Money>,
    ) -> Result<Settlement, AppError> {
        let user = acting_user(who, user_id)?
            .ok_or_else(|| AppError::validation("user_id", "is required for the service role"))?;
        check_order_id(order_id)?;
        let mut ids = coupon_ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() || ids.len() != coupon_ids.len() || ids.len() > MAX_ORDER_COUPONS {
            return Err(AppError::validation(
                "coupon_ids",
                format!("must be 1 to {MAX_ORDER_COUPONS} distinct coupon ids"),
            ));
        }
        if let Some(existing) = self.store.get_settlement(order_id, Some(user)).await? {
            return same_lock(existing, &ids);
        }
        // Stored times have millisecond precision: answer what a repeat will read back.
        let now = stampede_domain::time::truncate_ms(self.clock.now());
        self.await_persisted(user, &ids).await?;
        // Point reads of the chosen coupons only: a lock must not cost a read of every coupon
        // the user holds.
        let mut found = Vec::with_capacity(ids.len());
        for id in &ids {
            let c = self.coupons.get_coupon(user, *id).await?;
            match c {
                Some(c) if c.status == CouponStatus::Unused => found.push(c),
                other => {
                    // A concurrent identical lock may have just taken it for this order.
                    if let Some(existing) = self.store.get_settlement(order_id, Some(user)).await? {
                        return same_lock(existing, &ids);
                    }
                    let why = match other {
                        Some(c) if c.status == CouponStatus::Locked => format!(
                            "coupon {id} is locked by another order ({})",
                            c.locked_order_id.as_deref().unwrap_or("?")
                        ),
                        Some(c) => format!("coupon {id} is {}", c.effective_status(now).as_str()),
                        None => format!("coupon {id} is not a coupon of this user"),
                    };
                    return Err(conflict(ErrorCode::CouponNotUsable, why));
                }
            }
        }
        let chosen: Vec<(UserCoupon, Template)> = self
            .with_templates(found)
            .await?
            .into_iter()
            .map(|(c, t)| (c, (*t).clone()))
            .collect();
        if chosen.len() != ids.len() {
            return Err(conflict(
                ErrorCode::CouponNotUsable,
                "a coupon's template no longer exists",
            ));
        }
        let priced = math::price_selection(&chosen, cart, now).map_err(|e| match e.code() {
            ErrorCode::ValidationFailed => AppError::validation("coupon_ids", e.to_string()),
            code => conflict(code, e.to_string()),
        })?;
        if let Some(expected) = expected_discount
            && expected != priced.discount
        {
            return Err(conflict(
                ErrorCode::Conflict,
                format!(
                    "the discount is {} now, not the expected {}; quote again",
                    priced.discount.cents(),
                    expected.cents()
                ),
            ));
        }
        let subtotal = cart.subtotal();
        let lines: Vec<SettlementLine> = chosen
            .iter()
            .map(|(c, t)| SettlementLine {
                coupon_id: c.id,
                template_id: t.id,
                discount: priced
                    .per_coupon
                    .iter()
                    .find(|d| d.coupon_id == c.id)
                    .map_or(Money::ZERO, |d| d.discount),
                status: LineStatus::Locked,
                valid_until: c.valid_until,
            })
            .collect();
        let s = Settlement {
            order_id: order_id.to_owned(),
            user_id: user,
            status: OrderStatus::Locked,
            subtotal,
            discount: priced.discount,
            payable: priced.payable,
            lock_expires_at: now + self.lock_ttl,
            coupons: lines,
            created_at: now,
            updated_at: now,
        };
        let events: Vec<OutboxEvent> = s
            .coupons
            .iter()
            .map(|l| OutboxEvent {
                id: coupon_event_id("coupon.locked", l.coupon_id, order_id),
                kind: "coupon.locked".into(),
                aggregate_id: l.coupon_id.get(),
                payload: serde_json::json!({
                    "coupon_id": l.coupon_id.to_string(),
                    "user_id": user.to_string(),
                    "order_id": order_id,
                    "template_id": l.template_id.to_string(),
                    "status": "locked",
                    "discount": l.discount.cents(),
                    "at": now.to_string(),
                })
                .to_string(),
                created_at_ms: now.as_millisecond(),
                traceparent: crate::events::current_traceparent(),
            })
            .collect();
        match self.store.lock_coupons(&s, &events).await? {
            LockOutcome::Locked(s) => {
                self.cache.invalidate(user).await;
                tracing::info!(order = order_id, user = %user, coupons = s.coupons.len(), "coupons locked");
                Ok(s)
            }
            LockOutcome::Exists(existing) => same_lock(existing, &ids),
            LockOutcome::OtherUser => Err(conflict(
                ErrorCode::Conflict,
                "this order id belongs to another user",
            )),
            LockOutcome::NotUsable {
                coupon_id,
                status,
                locked_by,
            } => Err(conflict(
                ErrorCode::CouponNotUsable,
                match (status, locked_by) {
                    (Some(CouponStatus::Locked), Some(o)) => {
                        format!("coupon {coupon_id} is locked by another order ({o})")
                    }
                    (Some(s), _) => format!("coupon {coupon_id} is {}", s.as_str()),
                    (None, _) => format!("coupon {coupon_id} is not a coupon of this user"),
                },
            )),
        }
    }

    /// The order's settlement; a user sees only their own (404 otherwise).
    pub async fn get(
        &self,
        who: &Principal,
        order_id: &str,
        user_id: Option<UserId>,
    ) -> Result<Settlement, AppError> {
        let user = acting_user(who, user_id)?;
        check_order_id(order_id)?;
        self.store
            .get_settlement(order_id, user)
            .await?
            .ok_or_else(|| AppError::not_found("order"))
    }

    /// Redeem, release or refund.
    pub async fn change(
        &self,
        who: &Principal,
        order_id: &str,
        user_id: Option<UserId>,
        change: OrderChange,
    ) -> Result<Settlement, AppError> {
        let user = match acting_user(who, user_id)? {
            Some(u) => u,
            None => {
                check_order_id(order_id)?;
                self.store
                    .get_settlement(order_id, None)
                    .await?
                    .ok_or_else(|| AppError::not_found("order"))?
                    .user_id
            }
        };
        check_order_id(order_id)?;
        let now = stampede_domain::time::truncate_ms(self.clock.now());
        match self
            .store
            .change_settlement(order_id, user, &change, now)
            .await?
        {
            ChangeOutcome::Changed(s) => {
                self.cache.invalidate(user).await;
                tracing::info!(
                    order = order_id,
                    status = s.status.as_str(),
                    "settlement changed"
                );
                Ok(s)
            }
            ChangeOutcome::Unchanged(s) => Ok(s),
            ChangeOutcome::NotFound => Err(AppError::not_found("order")),
            ChangeOutcome::Refused {
                conflict: c @ OrderConflict::LockExpired(_),
                ..
            } => {
                // The redeem found its lock expired and released the coupons meanwhile.
                self.cache.invalidate(user).await;
                Err(conflict(ErrorCode::Conflict, c.to_string()))
            }
            ChangeOutcome::Refused {
                conflict: OrderConflict::NotInOrder(id),
                ..
            } => Err(AppError::validation(
                "coupon_ids",
                format!("coupon {id} is not part of this order"),
            )),
            ChangeOutcome::Refused { conflict: c, .. } => {
                Err(conflict(ErrorCode::Conflict, c.to_string()))
            }
        }
    }

    /// Releases locks whose time ran out (the background job); returns how many.
    pub async fn release_expired(&self, limit: u32) -> Result<usize, AppError> {
        let now = stampede_domain::time::truncate_ms(self.clock.now());
        let due = self.store.expired_locks(now, limit).await?;
        let mut n = 0;
        for (order, user) in &due {
            if let ChangeOutcome::Changed(_) = self
                .store
                .change_settlement(order, *user, &OrderChange::Expire, now)
                .await?
            {
                self.cache.invalidate(*user).await;
                n += 1;
                tracing::info!(order = order.as_str(), "expired lock released");
            }
        }
        tracing::debug!(released = n, due = due.len(), "lock expiry sweep");
        Ok(due.len())
    }
}

fn check_order_id(order_id: &str) -> Result<(), AppError> {
    if valid_order_id(order_id) {
        Ok(())
    } else {
        Err(AppError::validation(
            "order_id",
            "must be 1 to 64 characters of A-Z a-z 0-9 . _ : -",
        ))
    }
}

/// A lock repeated for an order that exists: the same coupons answer the settlement as it
/// is; other coupons are a conflict.
fn same_lock(existing: Settlement, ids: &[CouponId]) -> Result<Settlement, AppError> {
    let mut held: Vec<CouponId> = existing.coupons.iter().map(|l| l.coupon_id).collect();
    held.sort_unstable();
    if held == ids {
        Ok(existing)
    } else {
        Err(conflict(
            ErrorCode::Conflict,
            "this order id already holds other coupons",
        ))
    }
}
