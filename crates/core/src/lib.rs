//! Stampede's application core: the use cases, the ports they need, and the forms values are
//! stored in. Nothing here knows SQL, HTTP or Redis.
//!
//! - Use cases: `backoffice` (templates, stock, termination, the end sweep), `auth` (accounts,
//!   logins, JWTs), `claims` (claiming and "my coupons", over `catalog`, the cached template
//!   read path), `distributions` (bulk pushes), `settlements` (quotes and the order lifecycle of
//!   coupons), `reminders`.
//! - Ports, narrow traits by capability, implemented by the adapters and handed in by the
//!   composition root as `Arc<dyn …>`: `ports` (`TemplateStore`, `AccountStore`),
//!   `claim_ports` (`CouponStore`, `ClaimLogStore`, `HotState`), `distribution_ports`,
//!   `settlement_ports`, `reminder_ports` (with `ReminderNotifier`), `clock`, `flow`
//!   (`RateLimiter`, `FlowRuleStore`).
//! - `records`: the stored forms (flat records every adapter writes, no SQL); `events`: the
//!   outbox events written with the changes they record; `ids`: the snowflake generator;
//!   `coupon_cache`: the per-node cache of users' unused coupons for quotes; `discovery`: the
//!   claimable templates of a shop, a product or a cart, from per-shop listings in memory.
//!
//! Error policy: adapters return `StoreError`; use cases return `AppError`, whose variants
//! map one-to-one onto the API's stable codes (`AppError::code`). Internal details stay in
//! the `source` chain for logs and never reach a response body.

pub mod auth;
pub mod backoffice;
pub mod catalog;
pub mod claim_ports;
pub mod claims;
pub mod clock;
pub mod coupon_cache;
pub mod discovery;
pub mod distribution_ports;
pub mod distributions;
pub mod error;
pub mod event_ports;
pub mod events;
pub mod flow;
pub mod ids;
pub mod login;
pub mod ports;
pub mod records;
pub mod reminder_ports;
pub mod reminders;
pub mod settlement_ports;
pub mod settlements;
pub mod telemetry;
pub mod trace;

pub use error::AppError;
