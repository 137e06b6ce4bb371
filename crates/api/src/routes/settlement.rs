//! Settlement endpoints (SPEC §6 "Settlement"): the checkout quote and the order lifecycle.
//! Users act for themselves; the `service` role (the order service) names `user_id` in the
//! body (lifecycle calls without one act for the order's user).

use crate::error::{ApiError, ApiResult, PROBLEM_JSON, Problem};
use crate::extract::{Caller, Fields, JsonObject, OptionalJsonObject, SettlementRoles};
use crate::responses::{MalformedBody, NotFound, SettlementErrors, ValidationFailed};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use serde_json::{Map, Value};
use stampede_domain::ValidationErrors;
use stampede_domain::ids::{CouponId, GoodsId, ShopId, UserId};
use stampede_domain::money::Money;
use stampede_domain::order::{OrderChange, Settlement};
use stampede_domain::settlement::{Cart, CartItemDraft, Quote};
use std::collections::HashMap;
use utoipa::ToSchema;

/// One cart line of a quote or lock body.
#[derive(ToSchema)]
#[allow(dead_code)] // documents the contract; handlers read fields with `Fields`
pub struct CartLine {
    goods_id: String,
    shop_id: String,
    /// Minor units.
    #[schema(minimum = 0)]
    unit_price: i64,
    #[schema(minimum = 1, maximum = 10_000)]
    quantity: i64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct QuoteBody {
    /// Required for the `service` role; a user may omit it (or name themselves).
    user_id: Option<String>,
    /// 1–100 lines.
    items: Vec<CartLine>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LockBody {
    user_id: Option<String>,
    /// 1–20 distinct coupon ids.
    coupon_ids: Vec<String>,
    items: Vec<CartLine>,
    /// The discount the client was quoted; a different server-side discount is 409.
    expected_discount: Option<i64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ActorBody {
    user_id: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RefundBody {
    user_id: Option<String>,
    /// Refund only these (default: every redeemed coupon of the order).
    coupon_ids: Option<Vec<String>>,
}

/// Reads `items` into cart lines, reporting type errors as `items[i].field`.
fn read_items(f: &mut Fields, errs: &mut ValidationErrors) -> Option<Vec<CartItemDraft>> {
    let raw = f.value("items")?;
    let Value::Array(lines) = raw else {
        errs.add("items", "must be an array of cart lines");
        return None;
    };
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.into_iter().enumerate() {
        let Value::Object(map) = line else {
            errs.add(&format!("items[{i}]"), "must be an object");
            out.push(CartItemDraft::default());
            continue;
        };
        let mut lf = Fields::new(map);
        let draft = CartItemDraft {
            goods_id: lf.id("goods_id", GoodsId::parse),
            shop_id: lf.id("shop_id", ShopId::parse),
            unit_price: lf.int("unit_price"),
            quantity: lf.int("quantity"),
        };
        for e in lf.finish().into_vec() {
            errs.add(&format!("items[{i}].{}", e.field), e.message);
        }
        out.push(draft);
    }
    Some(out)
}

/// The cart, with every error of the body and of the cart at once.
fn cart_of(drafts: Option<Vec<CartItemDraft>>, mut errs: ValidationErrors) -> ApiResult<Cart> {
    let drafts = match drafts {
        Some(d) => d,
        None => {
            if !errs.as_slice().iter().any(|e| e.field == "items") {
                errs.add("items", "is required");
            }
            return Err(ApiError::validation(errs));
        }
    };
    match Cart::validate(&drafts) {
        Ok(cart) if errs.is_empty() => Ok(cart),
        Ok(_) => Err(ApiError::validation(errs)),
        Err(more) => {
            for e in more.into_vec() {
                // A line the edge already reported is reported once.
                if !errs.as_slice().iter().any(|x| x.field == e.field) {
                    errs.add(&e.field, e.message);
                }
            }
            Err(ApiError::validation(errs))
        }
    }
}

/// Quote a cart: every unused coupon of the user, usable (with its discount) or not (with a
/// `reason_code`), and the best combination under the stacking rules (one shop coupon per
/// shop plus one platform coupon on what is left).
#[utoipa::path(post, path = "/api/v1/checkout/quote", tag = "settlement",
    request_body = QuoteBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = Quote),
        SettlementErrors, MalformedBody, ValidationFailed,
    ))]
pub async fn quote(
    State(state): State<AppState>,
    caller: Caller<SettlementRoles>,
    JsonObject(body): JsonObject,
) -> ApiResult<axum::response::Response> {
    let mut f = Fields::new(body);
    let user_id = f.id("user_id", UserId::parse);
    let mut errs = ValidationErrors::new();
    let drafts = read_items(&mut f, &mut errs);
    for e in f.finish().into_vec() {
        errs.add(&e.field, e.message);
    }
    let cart = cart_of(drafts, errs)?;
    let q = state
        .settlements
        .quote(&caller.principal, user_id, &cart)
        .await?;
    Ok(sized_json(
        &q,
        256 + 160 * (q.available.len() + q.unavailable.len()),
    ))
}

/// A JSON answer serialised into a buffer sized up front: a quote for 50 coupons is ~5 KB,
/// and growing axum's default 128-byte buffer there costs several copies per request.
fn sized_json<T: serde::Serialize>(v: &T, capacity: usize) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut buf = Vec::with_capacity(capacity);
    match serde_json::to_writer(&mut buf, v) {
        Ok(()) => (
            [(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            )],
            buf,
        )
            .into_response(),
        Err(e) => ApiError::from(stampede_core::AppError::Internal(Box::new(e))).into_response(),
    }
}

/// Lock coupons for an order. The discount is recomputed here (409 `CONFLICT` when it differs
/// from `expected_discount`); the coupons move `unused → locked` with the settlement rows in
/// one transaction, until `lock_expires_at`. Repeating the same lock answers the same.
#[utoipa::path(post, path = "/api/v1/orders/{order_id}/coupons/lock", tag = "settlement",
    params(("order_id" = String, Path, description = "the order service's id: 1–64 of A-Z a-z 0-9 . _ : -")),
    request_body = LockBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = Settlement),
        SettlementErrors, ValidationFailed,
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
            errs.add("expected_discount", "must be 0 or more minor units");
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
    params(("order_id" = String, Path)),
    request_body(content = Option<ActorBody>),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Settlement),
        SettlementErrors, NotFound,
        (status = 409, body = Problem, content_type = PROBLEM_JSON, description = "CONFLICT: released, or the lock expired"),
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
    params(("order_id" = String, Path)),
    request_body(content = Option<ActorBody>),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Settlement),
        SettlementErrors, NotFound,
        (status = 409, body = Problem, content_type = PROBLEM_JSON, description = "CONFLICT: already redeemed"),
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
    params(("order_id" = String, Path)),
    request_body(content = Option<RefundBody>),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Settlement),
        SettlementErrors, NotFound,
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
#[utoipa::path(get, path = "/api/v1/orders/{order_id}/coupons", tag = "settlement",
    params(("order_id" = String, Path), ("user_id" = Option<String>, Query)),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Settlement),
        SettlementErrors, NotFound,
    ))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller<SettlementRoles>,
    Path(order_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Settlement>> {
    let user = match q.get("user_id").filter(|s| !s.is_empty()) {
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
