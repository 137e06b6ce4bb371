//! Coupon discovery: which templates a shopper is shown on a shop page, a product page or a
//! cart, and in what order. Pure functions of the candidate templates (with the stock the
//! hot state sees and the user's count), the place, a reference price and `now`.
//!
//! Rules:
//! - A template is *listed* while it is `active`, its claim window has not closed
//!   (`now < claim_end`) and it opens within the horizon (`claim_start <= now + horizon`).
//!   Sold-out templates are left out unless asked for.
//! - Shop page: the shop's templates (shop-wide and goods-scoped), plus platform templates
//!   when asked. Product page: the shop's shop-wide templates, its goods-scoped ones listing
//!   the product, and platform templates (platform-wide, or goods-scoped listing the product).
//! - Order: the discount the template would give on `price` of eligible goods (its
//!   threshold applied: below it, 0), largest first; then the soonest `claim_end`; then id.
//!   The cursor of a page is the sort key of its last item, so a page never repeats or skips
//!   an item that stays listed, whatever is added or removed meanwhile.
//! - Stock level: `sold_out` at 0; `few` when at most 10 % of the total, or at most 10, is
//!   left; `plenty` otherwise.

use crate::coupon::{CouponStatus, Origin, UserCoupon, coupon_validity};
use crate::ids::{CouponId, GoodsId, ShopId, UserId};
use crate::money::Money;
use crate::settlement::{Cart, Evaluation, evaluate};
use crate::template::{Scope, Template, TemplateStatus};
use crate::time::to_ms;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use std::cmp::Reverse;

/// The reference price when the caller gives none: 100.00.
pub const DEFAULT_REFERENCE_PRICE: i64 = 10_000;
pub const DEFAULT_PAGE_SIZE: u32 = 20;
pub const MAX_PAGE_SIZE: u32 = 100;

/// How much stock is left, in words a product page can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum StockLevel {
    Plenty,
    Few,
    SoldOut,
}

impl StockLevel {
    /// The wire form (what `Serialize` writes, without quotes).
    pub fn as_str(self) -> &'static str {
        match self {
            StockLevel::Plenty => "plenty",
            StockLevel::Few => "few",
            StockLevel::SoldOut => "sold_out",
        }
    }
}

pub fn stock_level(remaining: i64, total: i64) -> StockLevel {
    if remaining <= 0 {
        StockLevel::SoldOut
    } else if remaining <= 10 || remaining.saturating_mul(10) <= total {
        StockLevel::Few
    } else {
        StockLevel::Plenty
    }
}

/// Where the listing is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Shop {
        shop: ShopId,
        include_platform: bool,
    },
    Goods {
        shop: ShopId,
        goods: GoodsId,
    },
}

/// Whether `t` is shown at `place` (its status, window and stock aside).
pub fn applies(t: &Template, place: Place) -> bool {
    match place {
        Place::Shop {
            shop,
            include_platform,
        } => t.shop_id == shop || (include_platform && t.shop_id.is_platform()),
        Place::Goods { shop, goods } => {
            (t.shop_id == shop || t.shop_id.is_platform())
                && (t.scope == Scope::Shop || t.goods_ids.contains(&goods))
        }
    }
}

/// Whether `t` is active, not closed and opening within `horizon` of `now`.
pub fn listed(t: &Template, now: Timestamp, horizon: SignedDuration) -> bool {
    listed_by(t, now, opens_by(now, horizon))
}

/// The latest `claim_start` listed at `now`.
pub fn opens_by(now: Timestamp, horizon: SignedDuration) -> Timestamp {
    now.checked_add(horizon).unwrap_or(Timestamp::MAX)
}

/// [`listed`] with its bound computed once for a whole listing ([`opens_by`]).
pub fn listed_by(t: &Template, now: Timestamp, opens_by: Timestamp) -> bool {
    t.status == TemplateStatus::Active && now < t.claim_end && t.claim_start <= opens_by
}

/// The discount `t` gives on `price` of eligible goods: its threshold applies, and nothing
/// is taken below it.
pub fn reference_discount(t: &Template, price: Money) -> Money {
    let p = price.cents();
    let threshold = t.threshold.map_or(0, Money::cents);
    if p <= 0 || p < threshold {
        return Money::ZERO;
    }
    let off = match (t.amount_off, t.percent_off) {
        (Some(a), _) => a.cents(),
        (None, Some(pct)) => {
            let raw = i64::try_from(i128::from(p) * i128::from(pct) / 100).unwrap_or(i64::MAX);
            t.max_off.map_or(raw, |c| raw.min(c.cents()))
        }
        (None, None) => 0,
    };
    Money::parse(off.clamp(0, p)).unwrap_or(Money::ZERO)
}

/// The discount `t` would give on `cart` if claimed at `now`, by the settlement's own rules
/// (eligible goods, threshold, rounding); `None` when it would not lower this cart's price.
pub fn cart_discount(t: &Template, user: UserId, cart: &Cart, now: Timestamp) -> Option<Money> {
    let (valid_from, valid_until) = coupon_validity(t, now);
    let coupon = UserCoupon {
        id: CouponId::new(1)?,
        user_id: user,
        template_id: t.id,
        shop_id: t.shop_id,
        seq: 1,
        origin: Origin::Claim,
        status: CouponStatus::Unused,
        // A coupon claimed now is quoted as usable now, even when its validity starts later:
        // the question is what the coupon is worth on this cart.
        valid_from: valid_from.min(now),
        valid_until: valid_until.max(now.checked_add(SignedDuration::from_secs(1)).ok()?),
        claimed_at: now,
        locked_order_id: None,
        used_at: None,
    };
    match evaluate(&coupon, t, cart, now) {
        Evaluation::Usable { discount, .. } => Some(discount),
        Evaluation::Unusable(_) => None,
    }
}

/// One template in a listing, with what the hot state says of it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub template: &'a Template,
    /// Stock left as the hot path sees it.
    pub remaining: i64,
    /// Coupons of it the user holds (counted against `per_user_limit`); `None` when the
    /// caller is not a user.
    pub held: Option<u32>,
}

impl Candidate<'_> {
    /// For a user: whether they may claim it now (window open, stock left, under the limit).
    pub fn can_claim(&self, now: Timestamp) -> Option<bool> {
        let held = self.held?;
        let t = self.template;
        Some(
            t.status == TemplateStatus::Active
                && t.claim_start <= now
                && now < t.claim_end
                && self.remaining > 0
                && held < t.per_user_limit,
        )
    }
}

/// Where a page starts: after the item with this sort key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SortKey {
    discount: Reverse<i64>,
    claim_end_ms: i64,
    id: i64,
}

impl SortKey {
    pub fn of(t: &Template, discount: Money) -> Self {
        SortKey {
            discount: Reverse(discount.cents()),
            claim_end_ms: to_ms(t.claim_end),
            id: t.id.get(),
        }
    }

    /// The cursor's text (clients see it encoded, see `core::discovery`).
    pub fn to_text(self) -> String {
        format!("{}.{}.{}", self.discount.0, self.claim_end_ms, self.id)
    }

    pub fn from_text(s: &str) -> Option<Self> {
        let mut it = s.split('.');
        let (d, e, id) = (it.next()?, it.next()?, it.next()?);
        if it.next().is_some() {
            return None;
        }
        Some(SortKey {
            discount: Reverse(d.parse().ok()?),
            claim_end_ms: e.parse().ok()?,
            id: id.parse().ok()?,
        })
    }
}

/// A listed template with its discount and sort key.
#[derive(Debug, Clone, Copy)]
pub struct Ranked<'a> {
    pub candidate: Candidate<'a>,
    pub discount: Money,
    pub key: SortKey,
}

/// What to list and how.
#[derive(Debug, Clone, Copy)]
pub struct Listing {
    pub now: Timestamp,
    pub horizon: SignedDuration,
    pub include_sold_out: bool,
    pub limit: u32,
    pub after: Option<SortKey>,
}

/// One page: the ranked items and the key to pass for the next page, if there is one.
#[derive(Debug, Clone)]
pub struct Page<'a> {
    pub items: Vec<Ranked<'a>>,
    pub next: Option<SortKey>,
}

/// Ranks `candidates` (already chosen for the place) by `discount`, keeping those listed at
/// `now`, and cuts the page after `l.after`. `discount` returns `None` for a template to leave
/// out (a cart it would not lower).
pub fn rank<'a>(
    candidates: impl IntoIterator<Item = Candidate<'a>>,
    l: &Listing,
    discount: impl Fn(&Template) -> Option<Money>,
) -> Page<'a> {
    let opens_by = opens_by(l.now, l.horizon);
    let mut ranked: Vec<Ranked<'a>> = candidates
        .into_iter()
        .filter(|c| listed_by(c.template, l.now, opens_by))
        .filter(|c| l.include_sold_out || c.remaining > 0)
        .filter_map(|c| {
            let d = discount(c.template)?;
            Some(Ranked {
                candidate: c,
                discount: d,
                key: SortKey::of(c.template, d),
            })
        })
        .filter(|r| l.after.is_none_or(|a| r.key > a))
        .collect();
    ranked.sort_unstable_by_key(|r| r.key);
    let limit = l.limit.max(1) as usize;
    let next = (ranked.len() > limit).then(|| ranked[limit - 1].key);
    ranked.truncate(limit);
    Page {
        items: ranked,
        next,
    }
}

#[cfg(test)]
mod tests;
