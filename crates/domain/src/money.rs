//! Money in minor units (cents). Integers only: no float ever touches an amount.

use serde::Serialize;

/// Largest amount accepted anywhere: 10^12 cents (ten billion in major units). Far above any
/// real coupon or cart, and far below `i64::MAX`, so sums of many amounts cannot overflow.
pub const MAX_MONEY: i64 = 1_000_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Money(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("must not be negative")]
    Negative,
    #[error("must be at most {MAX_MONEY} minor units")]
    TooLarge,
}

impl Money {
    pub const ZERO: Money = Money(0);

    pub fn parse(cents: i64) -> Result<Money, MoneyError> {
        if cents < 0 {
            Err(MoneyError::Negative)
        } else if cents > MAX_MONEY {
            Err(MoneyError::TooLarge)
        } else {
            Ok(Money(cents))
        }
    }

    pub fn cents(self) -> i64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parse_accepts_exactly_the_range(c in any::<i64>()) {
            let r = Money::parse(c);
            prop_assert_eq!(r.is_ok(), (0..=MAX_MONEY).contains(&c));
            if let Ok(m) = r { prop_assert_eq!(m.cents(), c); }
        }
    }
}
