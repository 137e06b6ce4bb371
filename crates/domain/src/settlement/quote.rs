//! The checkout quote, and the pricing of a client-chosen set of coupons for a lock.

use super::cart::Cart;
use super::eligibility::{Candidate, Coverage, ReasonCode, Refusal, assess, money};
use super::stacking::{Best, best_of};
use crate::ErrorCode;
use crate::coupon::UserCoupon;
use crate::ids::{CouponId, ShopId, TemplateId};
use crate::money::Money;
use crate::template::{Kind, Source, Template};
use jiff::Timestamp;
use serde::Serialize;
use std::cmp::Reverse;

/// A coupon usable on the cart, with what it takes off on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Available {
    pub coupon_id: CouponId,
    pub template_id: TemplateId,
    pub name: String,
    pub kind: Kind,
    /// Standalone discount, minor units.
    #[cfg_attr(feature = "openapi", schema(value_type = i64, minimum = 1))]
    pub discount: Money,
}

/// A coupon not usable on the cart, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Unavailable {
    pub coupon_id: CouponId,
    pub template_id: TemplateId,
    pub name: String,
    pub reason_code: ReasonCode,
    pub reason: String,
    /// For `BELOW_THRESHOLD` and `ZERO_DISCOUNT`: how much more eligible goods would make
    /// the coupon usable, minor units.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>, minimum = 1))]
    pub missing: Option<Money>,
}

/// The answer of `POST /checkout/quote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Quote {
    #[cfg_attr(feature = "openapi", schema(value_type = i64, minimum = 0))]
    pub subtotal: Money,
    /// Largest discount first, then earliest `valid_until`, then smallest id.
    pub available: Vec<Available>,
    /// Closest to usable first (reason in reverse check order), then smallest `missing`,
    /// then smallest id.
    pub unavailable: Vec<Unavailable>,
    pub best: Best,
}

/// Quotes `cart` against `coupons` (each with its template) at `now`. Coupon ids are
/// expected unique; a repeated id is counted once.
pub fn quote(coupons: &[(UserCoupon, Template)], cart: &Cart, now: Timestamp) -> Quote {
    let p = plan(coupons, |(c, t)| (c, t), cart, now);
    quote_from_plan(p, |i| (&coupons[i].0, &coupons[i].1))
}

/// The [`Quote`] `p` stands for; `item(i)` is the coupon at position `i` and its template.
pub fn quote_from_plan<'a>(
    p: QuotePlan,
    item: impl Fn(usize) -> (&'a UserCoupon, &'a Template),
) -> Quote {
    Quote {
        subtotal: p.subtotal,
        available: p
            .available
            .iter()
            .map(|&(i, discount)| {
                let (c, t) = item(i);
                Available {
                    coupon_id: c.id,
                    template_id: t.id,
                    name: t.name.clone(),
                    kind: t.kind,
                    discount,
                }
            })
            .collect(),
        unavailable: p
            .unavailable
            .into_iter()
            .map(|(i, r)| {
                let (c, t) = item(i);
                Unavailable {
                    coupon_id: c.id,
                    template_id: t.id,
                    name: t.name.clone(),
                    reason_code: r.reason_code,
                    reason: r.reason,
                    missing: r.missing,
                }
            })
            .collect(),
        best: p.best,
    }
}

/// A [`Quote`] as positions in the caller's coupon list: everything computed, nothing of a
/// coupon copied. A caller holding each coupon's JSON pre-rendered ([`quote_fragment`])
/// writes the answer from it with [`render_quote`] instead of building and serialising a
/// [`Quote`] (the per-coupon ids and names are most of a quote's bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotePlan {
    pub subtotal: Money,
    /// (position, standalone discount), in [`Quote::available`]'s order.
    pub available: Vec<(usize, Money)>,
    /// (position, refusal), in [`Quote::unavailable`]'s order.
    pub unavailable: Vec<(usize, Refusal)>,
    pub best: Best,
}

/// [`quote`] over any list whose items `pair` turns into a coupon and its template.
pub fn plan<'a, T>(
    items: &'a [T],
    pair: impl Fn(&'a T) -> (&'a UserCoupon, &'a Template),
    cart: &Cart,
    now: Timestamp,
) -> QuotePlan {
    let mut order: Vec<(usize, &UserCoupon, &Template)> = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let (c, t) = pair(item);
            (i, c, t)
        })
        .collect();
    order.sort_by_key(|(_, c, _)| c.id);
    order.dedup_by_key(|(_, c, _)| c.id);

    let mut candidates = Vec::with_capacity(order.len());
    let mut available = Vec::new();
    let mut unavailable = Vec::new();
    for (i, c, t) in order {
        match assess(c, t, cart, now) {
            Ok(cand) => {
                available.push((c.valid_until, c.id, i, money(cand.discount)));
                candidates.push(cand);
            }
            Err(r) => unavailable.push((c.id, i, r)),
        }
    }
    available.sort_by_key(|&(until, id, _, discount)| (Reverse(discount), until, id));
    unavailable.sort_by_key(|(id, _, r)| {
        (
            Reverse(r.reason_code),
            r.missing.map_or(i64::MAX, Money::cents),
            *id,
        )
    });
    QuotePlan {
        subtotal: cart.subtotal(),
        available: available.into_iter().map(|(_, _, i, d)| (i, d)).collect(),
        unavailable: unavailable.into_iter().map(|(_, i, r)| (i, r)).collect(),
        best: best_of(&candidates, cart),
    }
}

/// The members a coupon's entry in a quote always starts with, as JSON without the braces:
/// `"coupon_id":"…","template_id":"…","name":"…"`. Fixed for the coupon's life (names do
/// not change), so it can be rendered once and cached.
pub fn quote_fragment(c: &UserCoupon, t: &Template) -> String {
    #[derive(Serialize)]
    struct Head<'a> {
        coupon_id: CouponId,
        template_id: TemplateId,
        name: &'a str,
    }
    let head = Head {
        coupon_id: c.id,
        template_id: t.id,
        name: &t.name,
    };
    // Serialising ids and a string cannot fail; the object's braces are dropped.
    let s = serde_json::to_string(&head).unwrap_or_default();
    s.strip_prefix('{')
        .and_then(|inner| inner.strip_suffix('}'))
        .unwrap_or_default()
        .to_owned()
}

/// Writes `p` as the JSON of the [`Quote`] it stands for, byte for byte what serialising
/// that `Quote` gives; `item(i)` is the fragment ([`quote_fragment`]) and kind of the
/// coupon at position `i`.
pub fn render_quote<'a>(
    p: &QuotePlan,
    item: impl Fn(usize) -> (&'a str, Kind),
) -> Result<Vec<u8>, serde_json::Error> {
    use std::io::Write as _;
    let mut out = Vec::with_capacity(128 + 120 * (p.available.len() + p.unavailable.len()));
    write!(out, "{{\"subtotal\":{},\"available\":[", p.subtotal.cents()).map_err(io)?;
    for (n, &(i, discount)) in p.available.iter().enumerate() {
        let (head, kind) = item(i);
        if n > 0 {
            out.push(b',');
        }
        out.push(b'{');
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(b",\"kind\":");
        serde_json::to_writer(&mut out, &kind)?;
        write!(out, ",\"discount\":{}}}", discount.cents()).map_err(io)?;
    }
    out.extend_from_slice(b"],\"unavailable\":[");
    for (n, (i, r)) in p.unavailable.iter().enumerate() {
        let (head, _) = item(*i);
        if n > 0 {
            out.push(b',');
        }
        out.push(b'{');
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(b",\"reason_code\":");
        serde_json::to_writer(&mut out, &r.reason_code)?;
        out.extend_from_slice(b",\"reason\":");
        serde_json::to_writer(&mut out, &r.reason)?;
        out.extend_from_slice(b",\"missing\":");
        serde_json::to_writer(&mut out, &r.missing)?;
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"best\":");
    serde_json::to_writer(&mut out, &p.best)?;
    out.push(b'}');
    Ok(out)
}

fn io(e: std::io::Error) -> serde_json::Error {
    serde_json::Error::io(e)
}

/// One coupon's share of a priced selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CouponDiscount {
    pub coupon_id: CouponId,
    #[cfg_attr(feature = "openapi", schema(value_type = i64, minimum = 1))]
    pub discount: Money,
}

/// A client-chosen set of coupons, priced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Priced {
    #[cfg_attr(feature = "openapi", schema(value_type = i64, minimum = 0))]
    pub discount: Money,
    #[cfg_attr(feature = "openapi", schema(value_type = i64, minimum = 0))]
    pub payable: Money,
    /// Each shop coupon with its shop discount, the platform coupon with its discount on
    /// what the shop discounts left; ascending by coupon id. Sums to `discount`.
    pub per_coupon: Vec<CouponDiscount>,
}

/// Why a chosen set of coupons cannot be priced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    #[error("coupon {0} is listed more than once")]
    Duplicate(CouponId),
    #[error("coupons {first} and {second} are both for shop {shop_id}: use at most one per shop")]
    SameShop {
        shop_id: ShopId,
        first: CouponId,
        second: CouponId,
    },
    #[error("coupons {first} and {second} are both platform coupons: use at most one per order")]
    TwoPlatform { first: CouponId, second: CouponId },
    /// On its own, or (for the platform coupon) after the shop coupons' discounts.
    #[error("coupon {coupon_id} cannot be used: {}", refusal.reason)]
    NotUsable {
        coupon_id: CouponId,
        refusal: Refusal,
    },
}

impl SelectionError {
    /// A malformed choice is the client's mistake (422); an unusable coupon depends on the
    /// coupon's state and the cart (409).
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Duplicate(_) | Self::SameShop { .. } | Self::TwoPlatform { .. } => {
                ErrorCode::ValidationFailed
            }
            Self::NotUsable { .. } => ErrorCode::CouponNotUsable,
        }
    }
}

/// Prices exactly the chosen `coupons` (each with its template) on `cart` at `now`, as a lock
/// does. Checked in this order, the first problem (by ascending coupon id) is the error: a
/// repeated coupon, two coupons of one shop or two platform coupons, a coupon not usable on
/// its own, a platform coupon that takes nothing off after the shop discounts. An empty
/// selection prices to zero.
pub fn price_selection(
    coupons: &[(UserCoupon, Template)],
    cart: &Cart,
    now: Timestamp,
) -> Result<Priced, SelectionError> {
    let mut chosen: Vec<&(UserCoupon, Template)> = coupons.iter().collect();
    chosen.sort_by_key(|(c, _)| c.id);
    if let Some(w) = chosen.windows(2).find(|w| w[0].0.id == w[1].0.id) {
        return Err(SelectionError::Duplicate(w[0].0.id));
    }

    let mut platform: Option<CouponId> = None;
    let mut shops: Vec<(ShopId, CouponId)> = Vec::new();
    for (c, t) in &chosen {
        match t.source {
            Source::Platform => {
                if let Some(first) = platform {
                    return Err(SelectionError::TwoPlatform {
                        first,
                        second: c.id,
                    });
                }
                platform = Some(c.id);
            }
            Source::Shop => {
                if let Some(&(shop_id, first)) = shops.iter().find(|(s, _)| *s == t.shop_id) {
                    return Err(SelectionError::SameShop {
                        shop_id,
                        first,
                        second: c.id,
                    });
                }
                shops.push((t.shop_id, c.id));
            }
        }
    }

    let mut candidates: Vec<Candidate> = Vec::with_capacity(chosen.len());
    for (c, t) in &chosen {
        let cand = assess(c, t, cart, now).map_err(|refusal| SelectionError::NotUsable {
            coupon_id: c.id,
            refusal,
        })?;
        candidates.push(cand);
    }

    let mut shop_discount = vec![0i64; cart.shops().len()];
    let mut per_coupon = Vec::with_capacity(candidates.len());
    for cand in &candidates {
        if let Coverage::Shop(s) = cand.coverage {
            shop_discount[s] = cand.discount;
            per_coupon.push((cand.id, cand.discount));
        }
    }
    for cand in &candidates {
        if let Coverage::Platform(covered) = &cand.coverage {
            let left: i64 = covered
                .iter()
                .zip(&shop_discount)
                .map(|(p, d)| (p - d).max(0))
                .sum();
            let discount = cand
                .rule
                .apply(left)
                .map_err(|s| SelectionError::NotUsable {
                    coupon_id: cand.id,
                    refusal: s.refusal(left, "after the shop coupons' discounts, "),
                })?;
            per_coupon.push((cand.id, discount));
        }
    }
    per_coupon.sort_unstable();
    let total: i64 = per_coupon.iter().map(|(_, d)| d).sum();
    Ok(Priced {
        discount: money(total),
        payable: money(cart.subtotal().cents() - total),
        per_coupon: per_coupon
            .into_iter()
            .map(|(coupon_id, d)| CouponDiscount {
                coupon_id,
                discount: money(d),
            })
            .collect(),
    })
}
