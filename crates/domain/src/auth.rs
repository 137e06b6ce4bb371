//! Who is acting: the four roles of the contract and the principal a verified token yields.

use crate::ids::ShopId;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    User,
    Merchant,
    Admin,
    Service,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "user" => Some(Role::User),
            "merchant" => Some(Role::Merchant),
            "admin" => Some(Role::Admin),
            "service" => Some(Role::Service),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Merchant => "merchant",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }
}

/// The caller of a request, from a verified token. A merchant always has a shop; no other
/// role has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub role: Role,
    pub shop_id: Option<ShopId>,
    /// The login session the token belongs to (absent for CLI-minted tokens).
    pub session_id: Option<String>,
}

impl Principal {
    /// The actor string written into audit entries, e.g. `merchant:42`.
    pub fn actor(&self) -> String {
        format!("{}:{}", self.role.as_str(), self.subject)
    }

    /// Whether this principal may read or change data of `shop`: admins any, merchants their own.
    pub fn can_manage_shop(&self, shop: ShopId) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Merchant => self.shop_id == Some(shop),
            Role::User | Role::Service => false,
        }
    }
}
