//! Engine use cases for shoppers: read a template's public view, claim a coupon, list and read
//! "my coupons". The hot state decides claims atomically; this layer resolves the template
//! through the catalog, makes the coupon (id, validity) and maps refusals to API codes.
//!
//! Ambiguous outcomes: when the hot state says a claim was sent but its answer was lost
//! (`StoreError::OutcomeUnknown`), the claim is looked up by its idempotency key before
//! answering. Found: the original answer (201 with the coupon). Not found or the lookup
//! failed: 503 `OUTCOME_UNKNOWN` (retry with the same key). A "not found" is not taken as
//! proof that nothing happened: the lost request may still be on its way to the hot store
//! (a reset connection whose bytes a proxy still delivers), so only a claim that was never
//! sent is answered a plain `UNAVAILABLE`.

use crate::catalog::Catalog;
use crate::claim_ports::{ClaimOutcome, CouponQuery, CouponStore, HotState};
use crate::clock::Clock;
use crate::error::AppError;
use crate::ids::IdGenerator;
use crate::ports::StoreError;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use serde::Serialize;
use stampede_domain::auth::{Principal, Role};
use stampede_domain::coupon::{
    ClaimRefusal, CouponStatus, Origin, UserCoupon, check_window, new_claimed_coupon,
};
use stampede_domain::ids::{CouponId, TemplateId, UserId};
use stampede_domain::template::{Kind, Scope, Source, Template, TemplateStatus};
use stampede_domain::time::to_ms;
use std::sync::Arc;
use std::time::Duration;

pub const MAX_COUPON_PAGE: u32 = 100;
pub const DEFAULT_COUPON_PAGE: u32 = 20;
pub const MAX_CLAIM_KEY_LEN: usize = 255;

/// What shoppers see of a template.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublicTemplate {
    pub id: TemplateId,
    pub shop_id: stampede_domain::ids::ShopId,
    pub name: String,
    pub instructions: String,
    pub source: Source,
    pub scope: Scope,
    pub goods_ids: Vec<stampede_domain::ids::GoodsId>,
    pub kind: Kind,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>))]
    pub amount_off: Option<stampede_domain::money::Money>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>))]
    pub threshold: Option<stampede_domain::money::Money>,
    pub percent_off: Option<u8>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>))]
    pub max_off: Option<stampede_domain::money::Money>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub claim_start: Timestamp,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub claim_end: Timestamp,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub valid_from: Option<Timestamp>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub valid_until: Option<Timestamp>,
    pub validity_hours: Option<u32>,
    pub per_user_limit: u32,
    /// Coupons left to claim right now.
    pub remaining_stock: i64,
    pub status: TemplateStatus,
}

impl PublicTemplate {
    /// The view of `t` at `now` with `remaining` coupons left.
    pub fn of(t: &Template, remaining: i64, now: Timestamp) -> Self {
        PublicTemplate {
            id: t.id,
            shop_id: t.shop_id,
            name: t.name.clone(),
            instructions: t.instructions.clone(),
            source: t.source,
            scope: t.scope,
            goods_ids: t.goods_ids.clone(),
            kind: t.kind,
            amount_off: t.amount_off,
            threshold: t.threshold,
            percent_off: t.percent_off,
            max_off: t.max_off,
            claim_start: t.claim_start,
            claim_end: t.claim_end,
            valid_from: t.valid_from,
            valid_until: t.valid_until,
            validity_hours: t.validity_hours,
            per_user_limit: t.per_user_limit,
            remaining_stock: remaining.max(0),
            status: t.effective_status(now),
        }
    }
}

/// One page of "my coupons".
#[derive(Debug, Clone)]
pub struct CouponList {
    pub items: Vec<UserCoupon>,
    pub next_cursor: Option<String>,
    /// The database could not be read: only what this node holds (pending claims and
    /// cached unused coupons) is listed.
    pub partial: bool,
}

/// A read failed because the system of record could not be reached.
fn cannot_read(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable { .. } | StoreError::Backend(_))
}

pub struct Claims {
    catalog: Arc<Catalog>,
    hot: Arc<dyn HotState>,
    coupons: Arc<dyn CouponStore>,
    ids: Arc<IdGenerator>,
    clock: Arc<dyn Clock>,
    /// Quotes cache users' coupons; a claim changes them.
    quote_cache: Arc<crate::coupon_cache::UserCouponCache>,
    /// Claims without an `Idempotency-Key` are refused (400), so a retry after an unknown
    /// outcome can never claim twice.
    key_required: bool,
}

/// The numeric user id of a `user` token (claims and coupons belong to shop users by id).
pub fn user_of(who: &Principal) -> Result<UserId, AppError> {
    if who.role != Role::User {
        return Err(AppError::Forbidden(
            "only user tokens claim and hold coupons".into(),
        ));
    }
    UserId::parse(&who.subject).ok_or_else(|| {
        AppError::Forbidden("a user token's subject must be a positive integer user id".into())
    })
}

/// Cursor of the coupon list: opaque to clients, `valid_until_ms:id` inside.
pub fn encode_cursor(c: &UserCoupon) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", to_ms(c.valid_until), c.id.get()))
}

pub fn decode_cursor(s: &str) -> Option<(i64, i64)> {
    let raw = URL_SAFE_NO_PAD.decode(s).ok()?;
    let text = std::str::from_utf8(&raw).ok()?;
    let (a, b) = text.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn sort_key(c: &UserCoupon) -> (i64, i64) {
    (to_ms(c.valid_until), c.id.get())
}

fn matches(c: &UserCoupon, status: Option<CouponStatus>, now: Timestamp) -> bool {
    status.is_none_or(|s| c.effective_status(now) == s)
}

impl Claims {
    pub fn new(
        catalog: Arc<Catalog>,
        hot: Arc<dyn HotState>,
        coupons: Arc<dyn CouponStore>,
        ids: Arc<IdGenerator>,
        clock: Arc<dyn Clock>,
        quote_cache: Arc<crate::coupon_cache::UserCouponCache>,
    ) -> Self {
        Self {
            catalog,
            hot,
            coupons,
            ids,
            clock,
            quote_cache,
            key_required: false,
        }
    }

    /// Requires an `Idempotency-Key` on every claim (`engine.claim_key_required`).
    pub fn with_key_required(mut self, required: bool) -> Self {
        self.key_required = required;
        self
    }

    /// Whether every claim must carry an `Idempotency-Key`.
    pub fn key_required(&self) -> bool {
        self.key_required
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The public view, and how old it is when the database could not be read and a stale
    /// copy answered (`None`: fresh).
    pub async fn public_template(
        &self,
        id: TemplateId,
    ) -> Result<(PublicTemplate, Option<Duration>), AppError> {
        let (t, age) = self
            .catalog
            .get_with_age(id)
            .await?
            .ok_or_else(|| AppError::not_found("template"))?;
        let now = self.clock.now();
        let remaining = self.hot.stock(&t).await?.unwrap_or(t.stock);
        Ok((PublicTemplate::of(&t, remaining, now), age))
    }

    /// Claims one coupon; `Ok((coupon, replayed))`.
    pub async fn claim(
        &self,
        who: &Principal,
        id: TemplateId,
        key: Option<&str>,
    ) -> Result<(UserCoupon, bool), AppError> {
        let user = user_of(who)?;
        if key.is_none() && self.key_required {
            return Err(AppError::IdempotencyKeyRequired);
        }
        if let Some(k) = key
            && (k.is_empty()
                || k.len() > MAX_CLAIM_KEY_LEN
                || !k.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(AppError::validation(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            ));
        }
        let t = self
            .catalog
            .get(id)
            .await?
            .ok_or_else(|| AppError::not_found("template"))?;
        let now = self.clock.now();
        // Cheap early answer for the common refusals; the hot state decides for real (the
        // cached status may lag a termination on another node, never the other way round).
        // A keyed claim (every claim when keys are required) only takes the "not started"
        // answer here: no claim can have been made before the start, while a retry after the
        // window closed must still get its coupon.
        if let Err(r) = check_window(t.effective_status(now), t.claim_start, t.claim_end, now)
            && (key.is_none() || r == ClaimRefusal::NotStarted)
        {
            return Err(AppError::Conflict {
                code: r.code(),
                detail: r.to_string(),
            });
        }
        let coupon_id = CouponId::new(self.ids.next()?)
            .ok_or_else(|| AppError::Internal("id generator produced a non-positive id".into()))?;
        let coupon = new_claimed_coupon(&t, coupon_id, user, 0, Origin::Claim, now);
        let outcome = match self.hot.claim(&t, coupon, key, now).await {
            Err(StoreError::OutcomeUnknown { dependency, source }) => {
                self.resolve_lost(&t, user, key, dependency, source).await?
            }
            other => other?,
        };
        match outcome {
            ClaimOutcome::Claimed(c) => {
                self.quote_cache.invalidate(user).await;
                Ok((c.as_of(now), false))
            }
            ClaimOutcome::Replayed(c) => Ok((c.as_of(now), true)),
            ClaimOutcome::Refused(r) => Err(AppError::Conflict {
                code: r.code(),
                detail: r.to_string(),
            }),
        }
    }

    /// A claim's answer was lost after it was sent: look it up by its key. Found → the claim
    /// happened (answered as the original 201); otherwise `OUTCOME_UNKNOWN`.
    async fn resolve_lost(
        &self,
        t: &Template,
        user: UserId,
        key: Option<&str>,
        dependency: crate::ports::Dependency,
        source: Box<dyn std::error::Error + Send + Sync>,
    ) -> Result<ClaimOutcome, AppError> {
        let lookup = match key {
            Some(k) => Some(self.hot.find_claim(t, user, k).await),
            None => None,
        };
        match lookup {
            Some(Ok(Some(c))) => {
                tracing::info!(template = %t.id, user = %user, coupon = %c.id, error = %source,
                    "a claim's answer was lost; its key shows it happened");
                Ok(ClaimOutcome::Claimed(c))
            }
            other => {
                let why = match other {
                    None => "no idempotency key to look it up by".to_owned(),
                    Some(Ok(_)) => "not found by its key (it may still land)".to_owned(),
                    Some(Err(e)) => format!("the lookup failed: {e}"),
                };
                metrics::counter!("stampede_claim_outcome_unknown_total").increment(1);
                tracing::warn!(template = %t.id, user = %user, %dependency, error = %source, %why,
                    "a claim's outcome is unknown; the client must retry with the same key");
                Err(AppError::OutcomeUnknown(source))
            }
        }
    }

    /// One page of the caller's coupons, ordered by `valid_until` then id, with the cursor
    /// of the next page. Acknowledged claims not yet persisted (distributed mode) are merged
    /// in, so a coupon shows up right after its 201.
    ///
    /// When the database cannot be read, the page is what this node has: pending claims and
    /// the user's unused coupons cached for quotes, and `partial` is true (instead of a 503).
    pub async fn my_coupons(
        &self,
        who: &Principal,
        status: Option<CouponStatus>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<CouponList, AppError> {
        let user = user_of(who)?;
        let limit = limit.unwrap_or(DEFAULT_COUPON_PAGE);
        if !(1..=MAX_COUPON_PAGE).contains(&limit) {
            return Err(AppError::validation(
                "limit",
                format!("must be between 1 and {MAX_COUPON_PAGE}"),
            ));
        }
        let after = match cursor {
            None | Some("") => None,
            Some(c) => Some(decode_cursor(c).ok_or_else(|| {
                AppError::validation("cursor", "is not a cursor this API returned")
            })?),
        };
        let now = self.clock.now();
        let q = CouponQuery {
            user_id: user,
            status,
            limit: limit + 1,
            after,
            now,
        };
        // Pending first: a claim leaves the pending set only once it is stored, so one that
        // moves between the two reads is in the stored page. (Stored first would miss it:
        // not yet stored when the page was read, gone from pending by the second read.)
        let pending = self.hot.pending_coupons(user).await?;
        let (mut items, partial) = match self.coupons.list_coupons(&q).await {
            Ok(items) => (items, false),
            Err(e) if cannot_read(&e) => {
                tracing::warn!(user = %user, error = %e, "my coupons: the database cannot be read; serving what this node has");
                let cached = self.cached_coupons(user).await;
                let items = cached
                    .into_iter()
                    .filter(|c| matches(c, status, now) && after.is_none_or(|a| sort_key(c) > a))
                    .collect();
                (items, true)
            }
            Err(e) => return Err(e.into()),
        };
        for p in pending {
            if matches(&p, status, now)
                && after.is_none_or(|a| sort_key(&p) > a)
                && !items.iter().any(|c| c.id == p.id)
            {
                items.push(p);
            }
        }
        items.sort_by_key(sort_key);
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next = if more {
            items.last().map(encode_cursor)
        } else {
            None
        };
        Ok(CouponList {
            items: items.into_iter().map(|c| c.as_of(now)).collect(),
            next_cursor: next,
            partial,
        })
    }

    /// The user's coupons this node holds without the database: those cached for quotes.
    async fn cached_coupons(&self, user: UserId) -> Vec<UserCoupon> {
        self.quote_cache
            .get(user)
            .await
            .map(|set| set.items.iter().map(|c| c.coupon.clone()).collect())
            .unwrap_or_default()
    }

    /// One of the caller's coupons. When the database cannot be read, a coupon this node
    /// holds (pending or cached) is still served; any other answer waits for the database.
    pub async fn my_coupon(&self, who: &Principal, id: CouponId) -> Result<UserCoupon, AppError> {
        let user = user_of(who)?;
        let now = self.clock.now();
        let stored = match self.coupons.get_coupon(user, id).await {
            Ok(found) => found,
            Err(e) if cannot_read(&e) => {
                let here = self
                    .cached_coupons(user)
                    .await
                    .into_iter()
                    .find(|c| c.id == id);
                match here {
                    Some(c) => Some(c),
                    None => {
                        let pending = self.hot.pending_coupons(user).await.unwrap_or_default();
                        let Some(c) = pending.into_iter().find(|c| c.id == id) else {
                            return Err(e.into());
                        };
                        Some(c)
                    }
                }
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(c) = stored {
            return Ok(c.as_of(now));
        }
        let pending = self.hot.pending_coupons(user).await?;
        pending
            .into_iter()
            .find(|c| c.id == id)
            .map(|c| c.as_of(now))
            .ok_or_else(|| AppError::not_found("coupon"))
    }
}
