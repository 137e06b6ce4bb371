//! User coupons and the claim rules: who may claim a template when, and what validity the
//! coupon gets. Pure functions of the template, the user's count and `now`.

use crate::ids::{CouponId, ShopId, TemplateId, UserId};
use crate::template::{Template, TemplateStatus, hours};
use jiff::Timestamp;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum CouponStatus {
    Unused,
    Locked,
    Used,
    Expired,
    Revoked,
}

impl CouponStatus {
    pub const ALL: &'static [&'static str] = &["unused", "locked", "used", "expired", "revoked"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "unused" => Some(Self::Unused),
            "locked" => Some(Self::Locked),
            "used" => Some(Self::Used),
            "expired" => Some(Self::Expired),
            "revoked" => Some(Self::Revoked),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unused => "unused",
            Self::Locked => "locked",
            Self::Used => "used",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Origin {
    Claim,
    Distribution,
}

impl Origin {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "claim" => Some(Self::Claim),
            "distribution" => Some(Self::Distribution),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Claim => "claim",
            Self::Distribution => "distribution",
        }
    }
}

/// A coupon a user holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserCoupon {
    pub id: CouponId,
    pub user_id: UserId,
    pub template_id: TemplateId,
    pub shop_id: ShopId,
    /// Which of the user's coupons of this template it is (1..=per_user_limit).
    pub seq: u32,
    pub origin: Origin,
    pub status: CouponStatus,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub valid_from: Timestamp,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub valid_until: Timestamp,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub claimed_at: Timestamp,
    pub locked_order_id: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub used_at: Option<Timestamp>,
}

impl UserCoupon {
    /// The status at `now`: an unused coupon past `valid_until` is expired.
    pub fn effective_status(&self, now: Timestamp) -> CouponStatus {
        match self.status {
            CouponStatus::Unused if now >= self.valid_until => CouponStatus::Expired,
            s => s,
        }
    }

    pub fn as_of(mut self, now: Timestamp) -> Self {
        self.status = self.effective_status(now);
        self
    }
}

/// Why a claim is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimRefusal {
    #[error("the claim window has not opened yet")]
    NotStarted,
    #[error("the claim window has closed")]
    Ended,
    #[error("the template was terminated")]
    Terminated,
    #[error("no coupons are left")]
    SoldOut,
    #[error("you already hold as many of these coupons as allowed")]
    LimitReached,
}

impl ClaimRefusal {
    pub fn code(self) -> crate::ErrorCode {
        use crate::ErrorCode;
        match self {
            ClaimRefusal::NotStarted => ErrorCode::ClaimNotStarted,
            ClaimRefusal::Ended => ErrorCode::ClaimEnded,
            ClaimRefusal::Terminated => ErrorCode::TemplateTerminated,
            ClaimRefusal::SoldOut => ErrorCode::SoldOut,
            ClaimRefusal::LimitReached => ErrorCode::LimitReached,
        }
    }

    /// Stable small integer used by hot stores (e.g. a Lua script's reply).
    pub fn as_code(self) -> i64 {
        match self {
            ClaimRefusal::NotStarted => 1,
            ClaimRefusal::Ended => 2,
            ClaimRefusal::Terminated => 3,
            ClaimRefusal::SoldOut => 4,
            ClaimRefusal::LimitReached => 5,
        }
    }

    pub fn from_code(c: i64) -> Option<Self> {
        match c {
            1 => Some(ClaimRefusal::NotStarted),
            2 => Some(ClaimRefusal::Ended),
            3 => Some(ClaimRefusal::Terminated),
            4 => Some(ClaimRefusal::SoldOut),
            5 => Some(ClaimRefusal::LimitReached),
            _ => None,
        }
    }
}

/// Status and window: may anyone claim `t` at `now`? The window is `[claim_start, claim_end)`.
pub fn check_window(
    status: TemplateStatus,
    claim_start: Timestamp,
    claim_end: Timestamp,
    now: Timestamp,
) -> Result<(), ClaimRefusal> {
    match status {
        TemplateStatus::Terminated => Err(ClaimRefusal::Terminated),
        TemplateStatus::Ended => Err(ClaimRefusal::Ended),
        TemplateStatus::Active if now < claim_start => Err(ClaimRefusal::NotStarted),
        TemplateStatus::Active if now >= claim_end => Err(ClaimRefusal::Ended),
        TemplateStatus::Active => Ok(()),
    }
}

/// Validity of a coupon of `t` claimed at `claimed_at`: the template's absolute window, or
/// `validity_hours` from the claim, never past the template's `valid_until` when both are set.
pub fn coupon_validity(t: &Template, claimed_at: Timestamp) -> (Timestamp, Timestamp) {
    match (t.validity_hours, t.valid_from, t.valid_until) {
        (Some(h), _, cap) => {
            let until = claimed_at.checked_add(hours(h)).unwrap_or(Timestamp::MAX);
            (claimed_at, cap.map_or(until, |c| until.min(c)))
        }
        (None, Some(from), Some(until)) => (from, until),
        // Unreachable for validated templates; a zero-length validity is the safe reading.
        (None, _, until) => (claimed_at, until.unwrap_or(claimed_at)),
    }
}

/// The coupon a successful claim creates.
pub fn new_claimed_coupon(
    t: &Template,
    id: CouponId,
    user_id: UserId,
    seq: u32,
    origin: Origin,
    claimed_at: Timestamp,
) -> UserCoupon {
    let claimed_at = crate::time::truncate_ms(claimed_at);
    let (valid_from, valid_until) = coupon_validity(t, claimed_at);
    UserCoupon {
        id,
        user_id,
        template_id: t.id,
        shop_id: t.shop_id,
        seq,
        origin,
        status: CouponStatus::Unused,
        valid_from,
        valid_until,
        claimed_at,
        locked_order_id: None,
        used_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn window_edges() {
        let (s, e) = (ts("2030-01-01T00:00:00Z"), ts("2030-01-02T00:00:00Z"));
        let ms = SignedDuration::from_millis(1);
        assert_eq!(
            check_window(TemplateStatus::Active, s, e, s - ms),
            Err(ClaimRefusal::NotStarted)
        );
        assert_eq!(check_window(TemplateStatus::Active, s, e, s), Ok(()));
        assert_eq!(check_window(TemplateStatus::Active, s, e, e - ms), Ok(()));
        assert_eq!(
            check_window(TemplateStatus::Active, s, e, e),
            Err(ClaimRefusal::Ended)
        );
        assert_eq!(
            check_window(TemplateStatus::Terminated, s, e, s),
            Err(ClaimRefusal::Terminated)
        );
    }

    #[test]
    fn refusal_codes_round_trip() {
        for r in [
            ClaimRefusal::NotStarted,
            ClaimRefusal::Ended,
            ClaimRefusal::Terminated,
            ClaimRefusal::SoldOut,
            ClaimRefusal::LimitReached,
        ] {
            assert_eq!(ClaimRefusal::from_code(r.as_code()), Some(r));
        }
    }
}
