//! Settlement math of the checkout quote and of the lock: which of
//! a user's coupons apply to a cart, what each takes off, and the best stackable combination.
//! Pure functions of the coupons, their templates, the cart and `now`.
//!
//! Layout: `cart` (validated cart lines and per-shop subtotals), `eligibility` (one coupon
//! against a cart: reason codes and the discount formulas), `stacking` (the exact best
//! combination), `quote` (the quote answer and the pricing of a client-chosen set).
//!
//! # One coupon against a cart ([`evaluate`])
//! Checks run in this order and the first failure is the [`ReasonCode`]:
//! 1. the stored status: `LOCKED` (held by an order, this one included: re-locking the same
//!    order is the caller's idempotency business), `USED`, `REVOKED`, `EXPIRED` (also an unused
//!    coupon with `now >= valid_until`);
//! 2. `NOT_YET_VALID` when `now < valid_from`;
//! 3. `OTHER_SHOP`: a shop coupon whose shop has nothing in the cart;
//! 4. `NO_ELIGIBLE_GOODS`: the eligible subtotal is 0. Eligible goods: shop coupon, scope shop
//!    → that shop's lines; shop coupon, scope goods → that shop's lines whose `goods_id` is
//!    listed; platform, scope shop → every line; platform, scope goods → listed lines of any
//!    shop;
//! 5. `BELOW_THRESHOLD` (threshold coupons, percent coupons with `threshold > 0`) when the
//!    eligible subtotal is below the threshold; `missing` is the shortfall;
//! 6. `ZERO_DISCOUNT`: the discount rounds down to 0 (1% of 0.50). A coupon that takes nothing
//!    off is not offered; `missing` is what would make it take off one cent (unless a cap
//!    of 0 makes that impossible).
//!
//! The template's own status does not matter: terminating a template stops claims, not the
//! coupons already held.
//!
//! # Discounts and rounding
//! `fixed` and `threshold` take `min(amount_off, eligible)`. `percent` takes
//! `floor(eligible × percent_off / 100)` in integer arithmetic, then the `max_off` cap, then
//! never more than `eligible`. Rounding is always down to the cent, before the cap: the
//! customer never gets a fraction of a cent more than the percentage. So every discount is at
//! most its eligible subtotal, and the payable amount never goes below zero.
//!
//! # Stacking
//! At most one shop coupon per shop plus one platform coupon per order. Shop coupons come
//! first: each takes its discount `D_s` from its own eligible goods. The platform coupon then
//! sees, in each shop `s`, its eligible subtotal there `P_s` (the whole shop subtotal for scope
//! shop) less that shop's discount: its eligible amount is `Σ_s max(0, P_s − D_s)` (a shop
//! discount is taken first from the goods the platform coupon covers). Its threshold is
//! checked against that reduced amount and its discount computed on it with the same rules. A
//! platform coupon that takes nothing off after the shop discounts is not part of a valid
//! combination. Total = `Σ D_s` + platform discount; payable = subtotal − total.
//!
//! # The best combination ([`best`])
//! The exact optimum over every valid combination, "no coupon" included — not greedy: a
//! smaller shop discount can keep a platform threshold reachable. Ties go to fewer coupons,
//! then to the lexicographically smallest ascending list of coupon ids, so the answer is one
//! exact, order-independent value. See `stacking` for the search (branch and bound) and
//! its node budget: contrived carts (ten-odd shops, each with several close shop coupons,
//! under a binding platform threshold) can make the exact search exponential, so past the
//! budget `best` answers the best valid combination found so far with `exact = false`.
//!
//! # Quote lists ([`quote`])
//! `available` holds each usable coupon with its standalone discount, largest first, then
//! earliest `valid_until`, then smallest id. `unavailable` is ordered closest to usable
//! first: by reason in the reverse of the check order above (`ZERO_DISCOUNT`,
//! `BELOW_THRESHOLD`, …, `LOCKED`), then smallest `missing`, then smallest id.

mod cart;
mod eligibility;
mod quote;
mod stacking;

pub use cart::{Cart, CartItem, CartItemDraft, MAX_CART_ITEMS, MAX_QUANTITY, ShopSubtotal};
pub use eligibility::{Evaluation, ReasonCode, Refusal, evaluate, format_money};
pub use quote::{
    Available, CouponDiscount, Priced, Quote, QuotePlan, SelectionError, Unavailable, plan,
    price_selection, quote, quote_fragment, quote_from_plan, render_quote,
};
pub use stacking::{Best, best};

#[cfg(test)]
mod tests;
