//! Stampede's application core: the use cases (back-office, auth) and the ports they need.
//!
//! Ports are narrow traits by capability (`TemplateStore`, `AccountStore`, `Clock`); the
//! storage adapters (`stampede-store-sqlite`, `stampede-store-mysql`) implement them and the
//! composition root hands them in as `Arc<dyn …>`. Nothing here knows SQL, HTTP or Redis.
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
pub mod distribution_ports;
pub mod distributions;
pub mod error;
pub mod events;
pub mod ids;
pub mod ports;
pub mod records;
pub mod reminder_ports;
pub mod reminders;
pub mod settlement_ports;
pub mod settlements;

pub use error::AppError;
