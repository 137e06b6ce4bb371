//! The order side of settlement: which coupons
//! an order holds and how they move. A lock puts coupons `unused → locked` for one order; the
//! order then redeems them (`locked → used`), releases them (`locked → unused`, also when the
//! lock expires), or refunds used ones (`used → unused`, or `expired` once past
//! `valid_until`), all or some.
//!
//! Every change is decided here, on the state the store locked, and is idempotent: asking for
//! what already happened changes nothing and answers the same; asking for what contradicts the
//! state is a conflict. Stores call [`Settlement::apply`] inside their transaction.

use crate::coupon::CouponStatus;
use crate::ids::{CouponId, TemplateId, UserId};
use crate::money::Money;
use jiff::Timestamp;
use serde::Serialize;

/// Longest accepted order id (the checkout service's own id).
pub const MAX_ORDER_ID_LEN: usize = 64;
/// Most coupons one order may lock (one per shop plus one platform coupon in practice).
pub const MAX_ORDER_COUPONS: usize = 20;

/// An order id is 1–64 characters of `[A-Za-z0-9._:-]`.
pub fn valid_order_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ORDER_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum LineStatus {
    Locked,
    Redeemed,
    Released,
    Refunded,
}

impl LineStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Locked => "locked",
            Self::Redeemed => "redeemed",
            Self::Released => "released",
            Self::Refunded => "refunded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "locked" => Some(Self::Locked),
            "redeemed" => Some(Self::Redeemed),
            "released" => Some(Self::Released),
            "refunded" => Some(Self::Refunded),
            _ => None,
        }
    }
}

/// The order's state: its lines' common state, `refunded` once every line is refunded
/// (`redeemed` while only some are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum OrderStatus {
    Locked,
    Redeemed,
    Released,
    Refunded,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Locked => "locked",
            Self::Redeemed => "redeemed",
            Self::Released => "released",
            Self::Refunded => "refunded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "locked" => Some(Self::Locked),
            "redeemed" => Some(Self::Redeemed),
            "released" => Some(Self::Released),
            "refunded" => Some(Self::Refunded),
            _ => None,
        }
    }
}

/// One coupon of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SettlementLine {
    pub coupon_id: CouponId,
    pub template_id: TemplateId,
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub discount: Money,
    pub status: LineStatus,
    /// The coupon's `valid_until`: a refund after it returns the coupon as `expired`.
    #[serde(skip)]
    pub valid_until: Timestamp,
}

/// The coupons an order locked and where they are now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Settlement {
    pub order_id: String,
    pub user_id: UserId,
    pub status: OrderStatus,
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub subtotal: Money,
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub discount: Money,
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub payable: Money,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub lock_expires_at: Timestamp,
    pub coupons: Vec<SettlementLine>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: Timestamp,
}

/// What the order service asks for after the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderChange {
    Redeem,
    Release,
    /// The background job: release a lock whose `lock_expires_at` passed.
    Expire,
    /// Refund these coupons (`None`: every redeemed one).
    Refund(Option<Vec<CouponId>>),
}

impl OrderChange {
    /// The outbox event kind its coupon transitions record.
    pub fn event_kind(&self) -> &'static str {
        match self {
            Self::Redeem => "coupon.redeemed",
            Self::Release | Self::Expire => "coupon.released",
            Self::Refund(_) => "coupon.refunded",
        }
    }
}

/// Why a change is refused (a 409 at the edge, except `NotInOrder`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderConflict {
    #[error("the order's coupons are {0}; they cannot be redeemed")]
    CannotRedeem(&'static str),
    #[error("the order's lock expired at {0}; its coupons were released")]
    LockExpired(Timestamp),
    #[error("the order's coupons are {0}; only locked coupons can be released")]
    CannotRelease(&'static str),
    #[error("the order's coupons are {0}; only redeemed coupons can be refunded")]
    CannotRefund(&'static str),
    #[error("coupon {0} is not part of this order")]
    NotInOrder(CouponId),
}

/// A coupon whose status the change moves, with the status it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponMove {
    pub coupon_id: CouponId,
    pub to: CouponStatus,
    /// `locked_order_id` after the move (`None` clears it).
    pub locked_order: Option<String>,
    /// `used_at` after the move.
    pub used_at: Option<Timestamp>,
}

/// The outcome of [`Settlement::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Write `settlement` and the coupon moves (one event each) in one transaction.
    Changed {
        settlement: Settlement,
        moves: Vec<CouponMove>,
    },
    /// It had already happened: nothing to write; answer with the settlement as it is.
    Unchanged,
    /// Refused; for `LockExpired` the store still writes `release` (the expiry happens now).
    Refused {
        conflict: OrderConflict,
        release: Option<Box<Applied>>,
    },
}

fn order_status(lines: &[SettlementLine]) -> OrderStatus {
    let all = |s: LineStatus| lines.iter().all(|l| l.status == s);
    if all(LineStatus::Locked) {
        OrderStatus::Locked
    } else if all(LineStatus::Released) {
        OrderStatus::Released
    } else if all(LineStatus::Refunded) {
        OrderStatus::Refunded
    } else {
        // Redeemed, or partly refunded.
        OrderStatus::Redeemed
    }
}

impl Settlement {
    /// The settlement as a store holds it: times to the millisecond, lines by coupon id. Both
    /// adapters answer in this form, so an answer equals a later read.
    pub fn stored_form(&self) -> Settlement {
        use crate::time::truncate_ms;
        let mut s = self.clone();
        s.lock_expires_at = truncate_ms(s.lock_expires_at);
        s.created_at = truncate_ms(s.created_at);
        s.updated_at = truncate_ms(s.updated_at);
        for l in &mut s.coupons {
            l.valid_until = truncate_ms(l.valid_until);
        }
        s.coupons.sort_unstable_by_key(|l| l.coupon_id);
        s
    }

    /// Decides `change` at `now` on this (locked) state.
    pub fn apply(&self, change: &OrderChange, now: Timestamp) -> Applied {
        match change {
            OrderChange::Redeem => match self.status {
                OrderStatus::Locked if now >= self.lock_expires_at => Applied::Refused {
                    conflict: OrderConflict::LockExpired(self.lock_expires_at),
                    release: Some(Box::new(self.release_all(now))),
                },
                OrderStatus::Locked => self.move_all(LineStatus::Redeemed, now, |_| {
                    (CouponStatus::Used, None, Some(now))
                }),
                OrderStatus::Redeemed | OrderStatus::Refunded => Applied::Unchanged,
                OrderStatus::Released => Applied::Refused {
                    conflict: OrderConflict::CannotRedeem("released"),
                    release: None,
                },
            },
            OrderChange::Release => match self.status {
                OrderStatus::Locked => self.release_all(now),
                OrderStatus::Released => Applied::Unchanged,
                OrderStatus::Redeemed | OrderStatus::Refunded => Applied::Refused {
                    conflict: OrderConflict::CannotRelease(self.status.as_str()),
                    release: None,
                },
            },
            OrderChange::Expire => match self.status {
                OrderStatus::Locked if now >= self.lock_expires_at => self.release_all(now),
                _ => Applied::Unchanged,
            },
            OrderChange::Refund(ids) => self.refund(ids.as_deref(), now),
        }
    }

    fn release_all(&self, now: Timestamp) -> Applied {
        self.move_all(LineStatus::Released, now, |_| {
            (CouponStatus::Unused, None, None)
        })
    }

    /// Moves every line to `to`; `coupon` gives each coupon's new (status, order, used_at).
    fn move_all(
        &self,
        to: LineStatus,
        now: Timestamp,
        coupon: impl Fn(&SettlementLine) -> (CouponStatus, Option<String>, Option<Timestamp>),
    ) -> Applied {
        let mut next = self.clone();
        let mut moves = Vec::new();
        for l in &mut next.coupons {
            let (status, locked_order, used_at) = coupon(l);
            moves.push(CouponMove {
                coupon_id: l.coupon_id,
                to: status,
                locked_order,
                used_at,
            });
            l.status = to;
        }
        next.status = order_status(&next.coupons);
        next.updated_at = now;
        Applied::Changed {
            settlement: next,
            moves,
        }
    }

    fn refund(&self, ids: Option<&[CouponId]>, now: Timestamp) -> Applied {
        match self.status {
            OrderStatus::Redeemed | OrderStatus::Refunded => {}
            OrderStatus::Locked | OrderStatus::Released => {
                return Applied::Refused {
                    conflict: OrderConflict::CannotRefund(self.status.as_str()),
                    release: None,
                };
            }
        }
        if let Some(ids) = ids
            && let Some(missing) = ids
                .iter()
                .find(|id| !self.coupons.iter().any(|l| l.coupon_id == **id))
        {
            return Applied::Refused {
                conflict: OrderConflict::NotInOrder(*missing),
                release: None,
            };
        }
        let wanted = |l: &SettlementLine| ids.is_none_or(|ids| ids.contains(&l.coupon_id));
        let mut next = self.clone();
        let mut moves = Vec::new();
        for l in &mut next.coupons {
            if wanted(l) && l.status == LineStatus::Redeemed {
                let to = if now >= l.valid_until {
                    CouponStatus::Expired
                } else {
                    CouponStatus::Unused
                };
                moves.push(CouponMove {
                    coupon_id: l.coupon_id,
                    to,
                    locked_order: None,
                    used_at: None,
                });
                l.status = LineStatus::Refunded;
            }
        }
        if moves.is_empty() {
            // Everything asked for is refunded already.
            return Applied::Unchanged;
        }
        next.status = order_status(&next.coupons);
        next.updated_at = now;
        Applied::Changed {
            settlement: next,
            moves,
        }
    }
}

#[cfg(test)]
mod tests;
