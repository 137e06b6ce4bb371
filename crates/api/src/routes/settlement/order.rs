//! An order's coupons after the lock: redeem, release, refund, and reading the settlement.

use crate::error::{ApiError, ApiResult, PROBLEM_JSON, Problem};
use crate::extract::{Caller, Fields, OptionalJsonObject, SettlementRoles};
use crate::responses::{JsonBodyErrors, NotFound, SettlementErrors, ValidationFailed};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use serde_json::{Map, Value};
use stampede_domain::ValidationErrors;
use stampede_domain::ids::{CouponId, UserId};
use stampede_domain::order::{OrderChange, Settlement};
use std::collections::HashMap;
use utoipa::ToSchema;

#[derive(ToSchema)]
// The handler refuses fields it does not know: published as `additionalProperties: false`.
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ActorBody {
    /// Required for the `service` role; a user may omit it (or name themselves).
    user_id: Option<UserId>,
}

#[derive(ToSchema)]
// The handler refuses fields it does not know: published as `additionalProperties: false`.
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RefundBody {
    /// Required for the `service` role; a user may omit it (or name themselves).
    user_id: Option<UserId>,
    /// Refund only these (default: every redeemed coupon of the order).
    coupon_ids: Option<Vec<CouponId>>,
}

fn actor(body: Map<String, Value>) -> ApiResult<Option<UserId>> {
    let mut f = Fields::new(body);
    let user = f.id("user_id", UserId::parse);
    f.finish().finish(user).map_err(ApiError::validation)
}

async fn change(
    state: &AppState,
    caller: &Caller<SettlementRoles>,
    order_id: &str,
    user: Option<UserId>,
    c: OrderChange,
) -> ApiResult<Json<Settlement>> {
    Ok(Json(
        state
            .settlements
            .change(&caller.principal, order_id, user, c)
            .await?,
    ))
}

/// Redeem the order's locked coupons (`locked → used`). After `lock_expires_at` the lock is
/// gone: 409 `CONFLICT`, and the coupons are released.
#[utoipa::path(post, path = "/api/v1/orders/{order_id}/coupons/redeem", tag = "settlement",
    params(("order_id" = String, Path, description = "the order service's id: 1–64 of A-Z a-z 0-9 . _ : -", pattern = "^[A-Za-z0-9._:-]{1,64}$")),
    request_body(content = Option<ActorBody>),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Settlement),
        JsonBodyErrors, SettlementErrors, NotFound,
        (status = 409, body = Problem, content_type = PROBLEM_JSON, description = "CONFLICT: released, or the lock expired"),
        ValidationFailed,
    ))]
pub async fn redeem(
    State(state): State<AppState>,
    caller: Caller<SettlementRoles>,
    Path(order_id): Path<String>,
    OptionalJsonObject(body): OptionalJsonObject,
) -> ApiResult<Json<Settlement>> {
    let user = actor(body)?;
    change(&state, &caller, &order_id, user, OrderChange::Redeem).await
}

/// Release the order's locked coupons (`locked → unused`).
#[utoipa::path(post, path = "/api/v1/orders/{order_id}/coupons/release", tag = "settlement",
    params(("order_id" = String, Path, description = "the order service's id: 1–64 of A-Z a-z 0-9 . _ : -", pattern = "^[A-Za-z0-9._:-]{1,64}$")),
    request_body(content = Option<ActorBody>),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Settlement),
        JsonBodyErrors, SettlementErrors, NotFound,
        (status = 409, body = Problem, content_type = PROBLEM_JSON, description = "CONFLICT: already redeemed"),
        ValidationFailed,
    ))]
pub async fn release(
    State(state): State<AppState>,
    caller: Caller<SettlementRoles>,
    Path(order_id): Path<String>,
    OptionalJsonObject(body): OptionalJsonObject,
) -> ApiResult<Json<Settlement>> {
    let user = actor(body)?;
    change(&state, &caller, &order_id, user, OrderChange::Release).await
}

/// Refund redeemed coupons (`used → unused`, or `expired` once past `valid_until`): all, or
/// those in `coupon_ids` (partial refund).
#[utoipa::path(post, path = "/api/v1/orders/{order_id}/coupons/refund", tag = "settlement",
    params(("order_id" = String, Path, description = "the order service's id: 1–64 of A-Z a-z 0-9 . _ : -", pattern = "^[A-Za-z0-9._:-]{1,64}$")),
    request_body(content = Option<RefundBody>),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Settlement),
        JsonBodyErrors, SettlementErrors, NotFound,
        (status = 409, body = Problem, content_type = PROBLEM_JSON, description = "CONFLICT: not redeemed"),
        (status = 422, body = Problem, content_type = PROBLEM_JSON, description = "VALIDATION_FAILED: a coupon not in the order"),
    ))]
pub async fn refund(
    State(state): State<AppState>,
    caller: Caller<SettlementRoles>,
    Path(order_id): Path<String>,
    OptionalJsonObject(body): OptionalJsonObject,
) -> ApiResult<Json<Settlement>> {
    let mut f = Fields::new(body);
    let user = f.id("user_id", UserId::parse);
    let ids = f.id_list("coupon_ids", CouponId::parse);
    f.finish().finish(()).map_err(ApiError::validation)?;
    change(&state, &caller, &order_id, user, OrderChange::Refund(ids)).await
}

/// The order's settlement. The service role may name `?user_id=`.
#[utoipa::path(get, path = "/api/v1/orders/{order_id}/coupons", operation_id = "get_order_coupons", tag = "settlement",
    params(("order_id" = String, Path, description = "the order service's id: 1–64 of A-Z a-z 0-9 . _ : -", pattern = "^[A-Za-z0-9._:-]{1,64}$"), ("user_id" = Option<String>, Query, pattern = "^([1-9][0-9]{0,17}|[1-8][0-9]{18}|9[0-1][0-9]{17}|92[0-1][0-9]{16}|922[0-2][0-9]{15}|9223[0-2][0-9]{14}|92233[0-6][0-9]{13}|922337[0-1][0-9]{12}|92233720[0-2][0-9]{10}|922337203[0-5][0-9]{9}|9223372036[0-7][0-9]{8}|92233720368[0-4][0-9]{7}|922337203685[0-3][0-9]{6}|9223372036854[0-6][0-9]{5}|92233720368547[0-6][0-9]{4}|922337203685477[0-4][0-9]{3}|9223372036854775[0-7][0-9]{2}|922337203685477580[0-6]|9223372036854775807)$")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Settlement),
        SettlementErrors, NotFound, ValidationFailed,
    ))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller<SettlementRoles>,
    Path(order_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Settlement>> {
    let user = match q.get("user_id") {
        None => None,
        Some(s) => Some(UserId::parse(s).ok_or_else(|| {
            ApiError::validation(ValidationErrors::single("user_id", "must be a user id"))
        })?),
    };
    Ok(Json(
        state
            .settlements
            .get(&caller.principal, &order_id, user)
            .await?,
    ))
}
