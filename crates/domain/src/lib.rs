//! Stampede's domain core: the types every other crate speaks, and the rules that decide what
//! a valid template is and how it may change. No I/O, no storage traits, no clocks: callers
//! pass `now` in, so every rule is a pure function that unit and property tests can drive.
//!
//! Layout: `ids` (snowflake ids and their wire format), `money` (minor-unit amounts),
//! `validation` (field errors gathered all at once), `template` (the coupon template, its
//! creation rules and its changes), `auth` (roles and the acting principal), `audit`,
//! `settlement` (checkout quote math and the best coupon combination), `order` (an order's
//! coupons and their lifecycle), `distribution` (bulk-push tasks and their row outcomes),
//! `reminder` (reminder rules and their bit-packed storage form), `flow` (flow-control rules
//! and their validation), `error` (the stable error
//! codes of the API contract).

pub mod audit;
pub mod auth;
pub mod coupon;
pub mod discovery;
pub mod distribution;
pub mod error;
pub mod flow;
pub mod ids;
pub mod money;
pub mod order;
pub mod reminder;
pub mod settlement;
pub mod snowflake;
pub mod template;
pub mod time;
pub mod validation;

pub use error::ErrorCode;
pub use ids::{ShopId, TemplateId};
pub use money::Money;
pub use validation::{FieldError, ValidationErrors};
