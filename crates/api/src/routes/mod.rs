//! One module per resource; each handler declares its caller roles in its signature.

pub mod auth;
pub mod discovery;
pub mod distributions;
pub mod flow_rules;
pub mod ops;
pub mod reminders;
pub mod settlement;
pub mod shopper;
pub mod templates;
