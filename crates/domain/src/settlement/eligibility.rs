//! One coupon against one cart: usable or not (and why), its eligible subtotal and discount.

use super::cart::Cart;
use crate::coupon::{CouponStatus, UserCoupon};
use crate::ids::{CouponId, TemplateId};
use crate::money::{MAX_MONEY, Money};
use crate::template::{Kind, Scope, Source, Template};
use jiff::Timestamp;
use serde::Serialize;

/// Why a coupon cannot be used on this cart. Declared in check order; the wire form is
/// SCREAMING_SNAKE_CASE (`BELOW_THRESHOLD`) and never renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ReasonCode {
    /// Held by an order's lock.
    Locked,
    Used,
    /// Withdrawn by the merchant.
    Revoked,
    /// Past `valid_until`.
    Expired,
    /// Before `valid_from`.
    NotYetValid,
    /// A shop coupon whose shop has nothing in the cart.
    OtherShop,
    /// Nothing in the cart (with a price) is covered by the coupon.
    NoEligibleGoods,
    /// The eligible subtotal is below the threshold; `missing` says by how much.
    BelowThreshold,
    /// The discount rounds down to zero.
    ZeroDiscount,
}

impl ReasonCode {
    pub const ALL: [ReasonCode; 9] = [
        Self::Locked,
        Self::Used,
        Self::Revoked,
        Self::Expired,
        Self::NotYetValid,
        Self::OtherShop,
        Self::NoEligibleGoods,
        Self::BelowThreshold,
        Self::ZeroDiscount,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Locked => "LOCKED",
            Self::Used => "USED",
            Self::Revoked => "REVOKED",
            Self::Expired => "EXPIRED",
            Self::NotYetValid => "NOT_YET_VALID",
            Self::OtherShop => "OTHER_SHOP",
            Self::NoEligibleGoods => "NO_ELIGIBLE_GOODS",
            Self::BelowThreshold => "BELOW_THRESHOLD",
            Self::ZeroDiscount => "ZERO_DISCOUNT",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Why a coupon is not usable: the stable code, a sentence for people, and for
/// `BELOW_THRESHOLD` / `ZERO_DISCOUNT` how much more eligible goods would make it usable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Refusal {
    pub reason_code: ReasonCode,
    pub reason: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>, minimum = 1))]
    pub missing: Option<Money>,
}

impl Refusal {
    fn new(reason_code: ReasonCode, reason: impl Into<String>) -> Self {
        Refusal {
            reason_code,
            reason: reason.into(),
            missing: None,
        }
    }
}

/// The outcome of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evaluation {
    /// `discount` is the standalone discount: 1 ≤ discount ≤ eligible.
    Usable {
        eligible: Money,
        discount: Money,
    },
    Unusable(Refusal),
}

/// Whether `coupon` (of template `t`) applies to `cart` at `now`, and what it takes off on
/// its own. `t` must be the coupon's template. Rules and check order: the module doc of
/// `settlement`.
pub fn evaluate(coupon: &UserCoupon, t: &Template, cart: &Cart, now: Timestamp) -> Evaluation {
    match assess(coupon, t, cart, now) {
        Ok(c) => Evaluation::Usable {
            eligible: money(c.eligible),
            discount: money(c.discount),
        },
        Err(r) => Evaluation::Unusable(r),
    }
}

/// `cents` as `units.cents` (`1250` → `12.50`), for reasons shown to people.
pub fn format_money(m: Money) -> String {
    show(m.cents())
}

fn show(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.unsigned_abs();
    format!("{sign}{}.{:02}", c / 100, c % 100)
}

/// An amount the settlement math produced. Every such amount lies in `0..=subtotal` of a
/// validated cart, so the clamp never changes a value; it only spares an unwrap.
pub(super) fn money(cents: i64) -> Money {
    Money::parse(cents.clamp(0, MAX_MONEY)).unwrap_or(Money::ZERO)
}

/// The discount formula of a template, apart from which goods it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rule {
    /// `fixed` (threshold 0) and `threshold`: `min(off, eligible)`.
    Amount { off: i64, threshold: i64 },
    /// `floor(eligible × percent / 100)`, then `cap`, then `eligible`.
    Percent {
        percent: i64,
        cap: Option<i64>,
        threshold: i64,
    },
}

/// Why a rule gives nothing on an eligible amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shortfall {
    NoEligible,
    Below { missing: i64 },
    Zero { missing: Option<i64> },
}

impl Rule {
    pub(super) fn of(t: &Template) -> Rule {
        let cents = |m: Option<Money>| m.map_or(0, Money::cents);
        match t.kind {
            Kind::Fixed => Rule::Amount {
                off: cents(t.amount_off),
                threshold: 0,
            },
            Kind::Threshold => Rule::Amount {
                off: cents(t.amount_off),
                threshold: cents(t.threshold),
            },
            Kind::Percent => Rule::Percent {
                percent: t.percent_off.map_or(0, i64::from),
                cap: t.max_off.map(Money::cents),
                threshold: cents(t.threshold),
            },
        }
    }

    /// The smallest eligible amount that can give a discount (at least one cent).
    pub(super) fn floor_amount(&self) -> i64 {
        match *self {
            Rule::Amount { threshold, .. } | Rule::Percent { threshold, .. } => threshold.max(1),
        }
    }

    /// The discount on `eligible`, ignoring the threshold. Never above `eligible`, and
    /// non-decreasing in `eligible` by at most one cent per cent (the stacking bound relies
    /// on both).
    pub(super) fn discount_on(&self, eligible: i64) -> i64 {
        let eligible = eligible.max(0);
        let d = match *self {
            Rule::Amount { off, .. } => off,
            Rule::Percent { percent, cap, .. } => {
                let raw = i128::from(eligible) * i128::from(percent) / 100;
                let raw = i64::try_from(raw).unwrap_or(i64::MAX);
                cap.map_or(raw, |c| raw.min(c))
            }
        };
        d.clamp(0, eligible)
    }

    /// The discount on `eligible` with every rule applied, or why there is none.
    pub(super) fn apply(&self, eligible: i64) -> Result<i64, Shortfall> {
        if eligible <= 0 {
            return Err(Shortfall::NoEligible);
        }
        let threshold = match *self {
            Rule::Amount { threshold, .. } | Rule::Percent { threshold, .. } => threshold,
        };
        if eligible < threshold {
            return Err(Shortfall::Below {
                missing: threshold - eligible,
            });
        }
        match self.discount_on(eligible) {
            0 => Err(Shortfall::Zero {
                missing: self.first_cent().map(|e| e - eligible),
            }),
            d => Ok(d),
        }
    }

    /// The smallest eligible amount whose discount is at least one cent, if any.
    fn first_cent(&self) -> Option<i64> {
        match *self {
            Rule::Amount { off, .. } => (off > 0).then_some(1),
            Rule::Percent { percent, cap, .. } => {
                if percent <= 0 || cap.is_some_and(|c| c <= 0) {
                    None
                } else {
                    // ceil(100 / percent): the first amount whose percentage reaches a cent.
                    Some((100 + percent - 1) / percent)
                }
            }
        }
    }
}

impl Shortfall {
    /// The refusal to show; `context` prefixes the sentence (e.g. "after shop discounts, ").
    pub(super) fn refusal(self, eligible: i64, context: &str) -> Refusal {
        match self {
            Shortfall::NoEligible => Refusal::new(
                ReasonCode::NoEligibleGoods,
                format!("{context}no goods in this order are covered by the coupon"),
            ),
            Shortfall::Below { missing } => Refusal {
                reason_code: ReasonCode::BelowThreshold,
                reason: format!(
                    "{context}add {} more of eligible goods to reach the threshold",
                    show(missing)
                ),
                missing: Some(money(missing)),
            },
            Shortfall::Zero { missing } => Refusal {
                reason_code: ReasonCode::ZeroDiscount,
                reason: match missing {
                    Some(m) => format!(
                        "{context}the discount on {} of eligible goods rounds down to 0.00; add {} more",
                        show(eligible),
                        show(m)
                    ),
                    None => format!("{context}the coupon takes nothing off"),
                },
                missing: missing.map(money),
            },
        }
    }
}

/// Which goods of the cart a coupon covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Coverage {
    /// A shop coupon: its shop's index in the cart.
    Shop(usize),
    /// A platform coupon: its eligible subtotal within each shop of the cart, by index.
    Platform(Vec<i64>),
}

/// A coupon usable on the cart on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Candidate {
    pub id: CouponId,
    pub template_id: TemplateId,
    pub coverage: Coverage,
    pub rule: Rule,
    pub eligible: i64,
    /// Standalone discount, ≥ 1.
    pub discount: i64,
}

/// [`evaluate`] keeping what the stacking needs.
pub(super) fn assess(
    coupon: &UserCoupon,
    t: &Template,
    cart: &Cart,
    now: Timestamp,
) -> Result<Candidate, Refusal> {
    match coupon.effective_status(now) {
        CouponStatus::Unused => {}
        CouponStatus::Locked => {
            return Err(Refusal::new(
                ReasonCode::Locked,
                "the coupon is locked by an order",
            ));
        }
        CouponStatus::Used => {
            return Err(Refusal::new(
                ReasonCode::Used,
                "the coupon has already been used",
            ));
        }
        CouponStatus::Revoked => {
            return Err(Refusal::new(
                ReasonCode::Revoked,
                "the coupon was revoked by the merchant",
            ));
        }
        CouponStatus::Expired => {
            return Err(Refusal::new(
                ReasonCode::Expired,
                format!("the coupon expired at {}", coupon.valid_until),
            ));
        }
    }
    if now < coupon.valid_from {
        return Err(Refusal::new(
            ReasonCode::NotYetValid,
            format!("the coupon becomes valid at {}", coupon.valid_from),
        ));
    }
    let goods_ok =
        |item: &super::CartItem| t.scope == Scope::Shop || t.goods_ids.contains(&item.goods_id);
    let (coverage, eligible) = match t.source {
        Source::Shop => {
            let Some(shop) = cart.shop_index(t.shop_id) else {
                return Err(Refusal::new(
                    ReasonCode::OtherShop,
                    "the coupon is for a shop with nothing in this order",
                ));
            };
            let eligible = cart
                .lines()
                .filter(|(s, item)| *s == shop && goods_ok(item))
                .map(|(_, item)| item.line_cents())
                .sum();
            (Coverage::Shop(shop), eligible)
        }
        Source::Platform => {
            let mut per_shop = vec![0i64; cart.shops().len()];
            for (s, item) in cart.lines() {
                if goods_ok(item) {
                    per_shop[s] += item.line_cents();
                }
            }
            let eligible = per_shop.iter().sum();
            (Coverage::Platform(per_shop), eligible)
        }
    };
    let rule = Rule::of(t);
    let discount = rule.apply(eligible).map_err(|s| s.refusal(eligible, ""))?;
    Ok(Candidate {
        id: coupon.id,
        template_id: t.id,
        coverage,
        rule,
        eligible,
        discount,
    })
}
