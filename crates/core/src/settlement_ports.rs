//! Ports of settlement: orders and their coupons. A user's coupons and
//! settlement rows live on the user's shard, so each lifecycle step is one local transaction:
//! the order row, its lines, the coupons' statuses and one outbox event per coupon moved.

use crate::claim_ports::OutboxEvent;
use crate::ports::StoreError;
use async_trait::async_trait;
use jiff::Timestamp;
use stampede_domain::coupon::{CouponStatus, UserCoupon};
use stampede_domain::ids::{CouponId, UserId};
use stampede_domain::order::{CouponMove, OrderChange, OrderConflict, Settlement};

#[derive(Debug)]
pub enum LockOutcome {
    /// The coupons are locked for the order, as `Settlement` says.
    Locked(Settlement),
    /// The order id already holds a settlement (of this user): nothing changed.
    Exists(Settlement),
    /// The order id belongs to another user: nothing changed.
    OtherUser,
    /// A coupon was not `unused` (or not the user's) when locked: nothing changed.
    NotUsable {
        coupon_id: CouponId,
        /// Its status, or `None` when the user has no such coupon.
        status: Option<CouponStatus>,
        locked_by: Option<String>,
    },
}

#[derive(Debug)]
pub enum ChangeOutcome {
    Changed(Settlement),
    /// Had already happened: nothing written.
    Unchanged(Settlement),
    /// Refused; `after` is the settlement as stored after the refusal (a lock found expired
    /// is released in the same transaction).
    Refused {
        conflict: OrderConflict,
        after: Settlement,
    },
    NotFound,
}

#[async_trait]
pub trait SettlementStore: Send + Sync + 'static {
    /// In one transaction on the user's shard: the order id must be new (else `Exists` /
    /// `OtherUser`); each coupon of `s.coupons` must be the user's and `unused` (else
    /// `NotUsable`); then the coupons become `locked` by the order, the order and its lines
    /// are written, and `events` go to the outbox.
    async fn lock_coupons(
        &self,
        s: &Settlement,
        events: &[OutboxEvent],
    ) -> Result<LockOutcome, StoreError>;

    /// The settlement of `order_id` (routed by `user` when known, else looked up).
    async fn get_settlement(
        &self,
        order_id: &str,
        user: Option<UserId>,
    ) -> Result<Option<Settlement>, StoreError>;

    /// Locks the order's rows, lets `Settlement::apply` decide `change` at `now`, and writes
    /// the result (settlement, coupon moves, one `change.event_kind()` event per moved coupon)
    /// in one transaction.
    async fn change_settlement(
        &self,
        order_id: &str,
        user: UserId,
        change: &OrderChange,
        now: Timestamp,
    ) -> Result<ChangeOutcome, StoreError>;

    /// Orders still `locked` whose `lock_expires_at` is at or before `now`, at most `limit`.
    async fn expired_locks(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<(String, UserId)>, StoreError>;

    /// The user's coupons stored as `unused` (valid or not), soonest `valid_until` first, at
    /// most `limit`: what a quote considers.
    async fn unused_coupons(&self, user: UserId, limit: u32)
    -> Result<Vec<UserCoupon>, StoreError>;
}

/// Id of the outbox event recording that `coupon` moved in `order` (`kind` = coupon.locked,
/// coupon.redeemed, …): one per transition, stable across retries.
pub fn coupon_event_id(kind: &str, coupon: CouponId, order_id: &str) -> String {
    format!("{kind}:{coupon}:{order_id}")
}

/// The outbox event recording coupon move `m` of order `s` (`kind`: coupon.redeemed, …) at
/// `now`; `None` when the coupon is not one of the order's (a caller's bug).
pub fn coupon_move_event(
    kind: &str,
    s: &Settlement,
    m: &CouponMove,
    now: Timestamp,
) -> Option<OutboxEvent> {
    let line = s.coupons.iter().find(|l| l.coupon_id == m.coupon_id)?;
    // Ids travel as strings (their `Serialize`), `at` as RFC 3339.
    let payload = serde_json::json!({
        "coupon_id": m.coupon_id,
        "user_id": s.user_id,
        "order_id": s.order_id,
        "template_id": line.template_id,
        "status": m.to.as_str(),
        "at": now,
    });
    Some(OutboxEvent {
        id: coupon_event_id(kind, m.coupon_id, &s.order_id),
        kind: kind.to_owned(),
        aggregate_id: m.coupon_id.get(),
        payload: payload.to_string(),
        created_at_ms: now.as_millisecond(),
        traceparent: crate::events::current_traceparent(),
    })
}
