//! Identifiers. All ids are positive 64-bit integers (snowflakes for the ones Stampede makes)
//! and travel as JSON strings, because JavaScript clients lose precision above 2^53.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The published pattern of ids: a positive 64-bit integer in decimal (1 to
/// 9223372036854775807, spelled out so a schema-valid id is one the parser takes).
pub const ID_PATTERN: &str = "^([1-9][0-9]{0,17}|[1-8][0-9]{18}|9[0-1][0-9]{17}|92[0-1][0-9]{16}|922[0-2][0-9]{15}|9223[0-2][0-9]{14}|92233[0-6][0-9]{13}|922337[0-1][0-9]{12}|92233720[0-2][0-9]{10}|922337203[0-5][0-9]{9}|9223372036[0-7][0-9]{8}|92233720368[0-4][0-9]{7}|922337203685[0-3][0-9]{6}|9223372036854[0-6][0-9]{5}|92233720368547[0-6][0-9]{4}|922337203685477[0-4][0-9]{3}|9223372036854775[0-7][0-9]{2}|922337203685477580[0-6]|9223372036854775807)$";
/// The published pattern of shop ids in answers: also `0`, the platform.
pub const SHOP_ID_PATTERN: &str = "^(0|([1-9][0-9]{0,17}|[1-8][0-9]{18}|9[0-1][0-9]{17}|92[0-1][0-9]{16}|922[0-2][0-9]{15}|9223[0-2][0-9]{14}|92233[0-6][0-9]{13}|922337[0-1][0-9]{12}|92233720[0-2][0-9]{10}|922337203[0-5][0-9]{9}|9223372036[0-7][0-9]{8}|92233720368[0-4][0-9]{7}|922337203685[0-3][0-9]{6}|9223372036854[0-6][0-9]{5}|92233720368547[0-6][0-9]{4}|922337203685477[0-4][0-9]{3}|9223372036854775[0-7][0-9]{2}|922337203685477580[0-6]|9223372036854775807))$";

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        id_type!($(#[$doc])* $name, ID_PATTERN);
    };
    ($(#[$doc:meta])* $name:ident, $pattern:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(i64);

        impl $name {
            /// An id from storage or a token; `None` unless positive.
            pub fn new(raw: i64) -> Option<Self> {
                (raw > 0).then_some(Self(raw))
            }

            pub fn get(self) -> i64 {
                self.0
            }

            /// Parses the wire form: a decimal string of a positive 64-bit integer.
            pub fn parse(s: &str) -> Option<Self> {
                if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                s.parse::<i64>().ok().and_then(Self::new)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).ok_or_else(|| serde::de::Error::custom("expected a positive integer id as a string"))
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some($pattern))
                    .examples([serde_json::json!("7243001234567890")])
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}
    };
}

id_type!(
    /// A coupon template (snowflake).
    TemplateId
);
id_type!(
    /// A shop. Platform templates belong to `ShopId::PLATFORM` (`"0"` in answers; requests
    /// name positive shops only).
    ShopId,
    SHOP_ID_PATTERN
);
id_type!(
    /// An account (snowflake) or an end user of the shop's own user system.
    UserId
);
id_type!(
    /// A shop's goods (item) id, as the shop's catalogue knows it.
    GoodsId
);
id_type!(
    /// A user's coupon (snowflake).
    CouponId
);
id_type!(
    /// A distribution task (snowflake).
    DistributionId
);

impl ShopId {
    /// The pseudo-shop that owns `source = platform` templates. Zero never names a real
    /// shop (`new` and `parse` accept only positive ids), so it cannot collide with one.
    pub const PLATFORM: ShopId = ShopId(0);

    pub fn is_platform(self) -> bool {
        self == Self::PLATFORM
    }

    /// A shop id read back from storage, where the platform's zero is legal.
    pub fn from_stored(raw: i64) -> Option<Self> {
        if raw == 0 {
            Some(Self::PLATFORM)
        } else {
            Self::new(raw)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_non_canonical_and_non_positive() {
        assert_eq!(TemplateId::parse("42").map(|i| i.get()), Some(42));
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            "1.0",
            "abc",
            "99999999999999999999",
            " 1",
        ] {
            assert!(TemplateId::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn serializes_as_string() {
        let id = TemplateId::new(9_007_199_254_740_993).map(|i| serde_json::to_string(&i).ok());
        assert_eq!(id.flatten().as_deref(), Some("\"9007199254740993\""));
    }
}
