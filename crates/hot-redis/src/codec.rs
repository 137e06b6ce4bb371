//! Compact text form of a coupon as kept in Redis (`:keys` and `:pending` hashes):
//! `id,user,template,shop,seq,valid_from_ms,valid_until_ms,claimed_at_ms,origin,status`.
//! `claim.lua` writes the same layout. `locked_order_id` and `used_at` are not kept: these
//! copies describe the coupon as its claim made it; its later life is in the system of record.

use stampede_core::ports::StoreError;
use stampede_domain::coupon::{CouponStatus, Origin, UserCoupon};
use stampede_domain::ids::{CouponId, ShopId, TemplateId, UserId};
use stampede_domain::time::{from_ms, to_ms};

pub fn encode(c: &UserCoupon) -> String {
    format!(
        "{},{},{},{},{},{},{},{},{},{}",
        c.id,
        c.user_id,
        c.template_id,
        c.shop_id,
        c.seq,
        to_ms(c.valid_from),
        to_ms(c.valid_until),
        to_ms(c.claimed_at),
        c.origin.as_str(),
        c.status.as_str()
    )
}

fn corrupt(what: &str, raw: &str) -> StoreError {
    StoreError::Corrupt(format!("hot coupon {what}: {raw:?}"))
}

pub fn decode(raw: &str) -> Result<UserCoupon, StoreError> {
    let f: Vec<&str> = raw.split(',').collect();
    let [
        id,
        user,
        tpl,
        shop,
        seq,
        from,
        until,
        claimed,
        origin,
        status,
    ] = f.as_slice()
    else {
        return Err(corrupt("has the wrong number of fields", raw));
    };
    let int = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| corrupt("has a bad number", raw))
    };
    Ok(UserCoupon {
        id: CouponId::new(int(id)?).ok_or_else(|| corrupt("has a bad id", raw))?,
        user_id: UserId::new(int(user)?).ok_or_else(|| corrupt("has a bad user id", raw))?,
        template_id: TemplateId::new(int(tpl)?)
            .ok_or_else(|| corrupt("has a bad template id", raw))?,
        shop_id: ShopId::from_stored(int(shop)?)
            .ok_or_else(|| corrupt("has a bad shop id", raw))?,
        seq: seq.parse().map_err(|_| corrupt("has a bad seq", raw))?,
        origin: Origin::parse(origin).ok_or_else(|| corrupt("has a bad origin", raw))?,
        status: CouponStatus::parse(status).ok_or_else(|| corrupt("has a bad status", raw))?,
        valid_from: from_ms(int(from)?),
        valid_until: from_ms(int(until)?),
        claimed_at: from_ms(int(claimed)?),
        locked_order_id: None,
        used_at: None,
    })
}

/// `c` as these copies keep it: times in whole milliseconds, no order link.
pub fn normalize(mut c: UserCoupon) -> UserCoupon {
    c.valid_from = from_ms(to_ms(c.valid_from));
    c.valid_until = from_ms(to_ms(c.valid_until));
    c.claimed_at = from_ms(to_ms(c.claimed_at));
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn coupon() -> Option<UserCoupon> {
        Some(UserCoupon {
            id: CouponId::new(7_243_001_234_567_890_123)?,
            user_id: UserId::new(99)?,
            template_id: TemplateId::new(5)?,
            shop_id: ShopId::PLATFORM,
            seq: 3,
            origin: Origin::Claim,
            status: CouponStatus::Unused,
            valid_from: Timestamp::from_millisecond(1_700_000_000_123).ok()?,
            valid_until: Timestamp::from_millisecond(1_800_000_000_456).ok()?,
            claimed_at: Timestamp::from_millisecond(1_700_000_000_123).ok()?,
            locked_order_id: None,
            used_at: None,
        })
    }

    #[test]
    fn round_trips() {
        let Some(c) = coupon() else {
            panic!("valid fixture")
        };
        let raw = encode(&c);
        assert_eq!(
            raw,
            "7243001234567890123,99,5,0,3,1700000000123,1800000000456,1700000000123,claim,unused"
        );
        assert!(matches!(decode(&raw), Ok(d) if d == c));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "1,2,3",
            "a,2,3,4,5,6,7,8,claim,unused",
            "1,2,3,4,5,6,7,8,gift,unused",
            "0,2,3,4,5,6,7,8,claim,unused",
        ] {
            assert!(matches!(decode(bad), Err(StoreError::Corrupt(_))), "{bad}");
        }
    }
}
