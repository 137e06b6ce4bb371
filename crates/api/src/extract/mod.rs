//! Extractors of ours, so every malformed input gets the same problem+json shape.

mod caller;
mod fields;
mod idempotency;
mod json;

pub use caller::{AdminOnly, Allowed, AnyRole, BackOfficeRoles, Caller, SettlementRoles, UserOnly};
pub use fields::{Fields, integral_floats};
pub use idempotency::idempotency_key;
pub use json::{JsonObject, OptionalJsonObject, canonical_hash};
