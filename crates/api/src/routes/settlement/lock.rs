//! `POST /orders/{order_id}/coupons/lock`: lock coupons for an order at the discount the
//! client was quoted.

use super::cart::{CartLine, cart_of, read_items};
use crate::error::{ApiResult, PROBLEM_JSON, Problem};
use crate::extract::{Caller, Fields, JsonObject, SettlementRoles};
use crate::responses::{JsonBodyErrors, SettlementErrors, ValidationFailed};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use stampede_domain::ValidationErrors;
use stampede_domain::ids::{CouponId, UserId};
use stampede_domain::money::Money;
use stampede_domain::order::Settlement;
use utoipa::ToSchema;

#[derive(ToSchema)]
// The handler refuses fields it does not know: published as `additionalProperties: false`.
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct LockBody {
    /// Required for the `service` role; a user may omit it (or name themselves).
    user_id: Option<stampede_domain::ids::UserId>,
    /// 1–20 distinct coupon ids.
    /// (`uniqueItems`, added in `openapi::add_keywords`.)
    #[schema(min_items = 1, max_items = 20)]
    coupon_ids: Vec<stampede_domain::ids::CouponId>,
    /// 1–100 lines.
    #[schema(min_items = 1, max_items = 100)]
    items: Vec<CartLine>,
    /// The discount the client was quoted (minor units); a different server-side discount is 409.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    expected_discount: Option<i64>,
}

/// Lock coupons for an order. The discount is recomputed here (409 `CONFLICT` when it differs
/// from `expected_discount`); the coupons move `unused → locked` with the settlement rows in
/// one transaction, until `lock_expires_at`. Repeating the same lock answers the same.
#[utoipa::path(post, path = "/api/v1/orders/{order_id}/coupons/lock", tag = "settlement",
    params(("order_id" = String, Path, description = "the order service's id: 1–64 of A-Z a-z 0-9 . _ : -", pattern = "^[A-Za-z0-9._:-]{1,64}$")),
    request_body = LockBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = Settlement),
        JsonBodyErrors, SettlementErrors, ValidationFailed,
        (status = 409, body = Problem, content_type = PROBLEM_JSON, description = "COUPON_NOT_USABLE (not the user's, not unused, locked by another order, not usable for this cart, two of one shop) or CONFLICT (discount changed; the order id holds other coupons or is another user's)"),
    ))]
pub async fn lock(
    State(state): State<AppState>,
    caller: Caller<SettlementRoles>,
    Path(order_id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Settlement>> {
    let mut f = Fields::new(body);
    let user_id = f.id("user_id", UserId::parse);
    let coupon_ids = f.id_list("coupon_ids", CouponId::parse);
    let expected = f.int("expected_discount");
    let mut errs = ValidationErrors::new();
    let drafts = read_items(&mut f, &mut errs);
    for e in f.finish().into_vec() {
        errs.add(&e.field, e.message);
    }
    let expected = match expected.map(Money::parse) {
        None => None,
        Some(Ok(m)) => Some(m),
        Some(Err(_)) => {
            errs.add("expected_discount", "must be 0–1000000000000 minor units");
            None
        }
    };
    if coupon_ids.is_none() && !errs.as_slice().iter().any(|e| e.field == "coupon_ids") {
        errs.add("coupon_ids", "is required");
    }
    let cart = cart_of(drafts, errs)?;
    let coupon_ids = coupon_ids.unwrap_or_default();
    Ok(Json(
        state
            .settlements
            .lock(
                &caller.principal,
                &order_id,
                user_id,
                &coupon_ids,
                &cart,
                expected,
            )
            .await?,
    ))
}
