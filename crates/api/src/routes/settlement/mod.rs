//! Settlement endpoints: the checkout quote and the order lifecycle of coupons. Users act for
//! themselves; the `service` role (the order service) names `user_id` in the body (lifecycle
//! calls without one act for the order's user).
//!
//! One file per route action: `quote`, `lock`, and `order` for what follows a lock (redeem,
//! release, refund) and reading the order's settlement. `cart` reads the cart lines that
//! quote and lock share.

pub(crate) mod cart;
mod lock;
mod order;
mod quote;

pub use cart::CartLine;
pub use lock::{__path_lock, LockBody, lock};
pub use order::{
    __path_get, __path_redeem, __path_refund, __path_release, ActorBody, RefundBody, get, redeem,
    refund, release,
};
pub use quote::{__path_quote, QuoteBody, quote};
