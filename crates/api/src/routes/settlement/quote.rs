//! `POST /checkout/quote`: what the user's coupons would do for a cart.

use super::cart::{CartLine, cart_of, read_items};
use crate::error::ApiResult;
use crate::extract::{Caller, Fields, JsonObject, SettlementRoles};
use crate::responses::{JsonBodyErrors, SettlementErrors, ValidationFailed};
use crate::state::AppState;
use axum::extract::State;
use axum::response::IntoResponse;
use stampede_domain::ValidationErrors;
use stampede_domain::ids::UserId;
use stampede_domain::settlement::Quote;
use utoipa::ToSchema;

#[derive(ToSchema)]
// The handler refuses fields it does not know: published as `additionalProperties: false`.
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct QuoteBody {
    /// Required for the `service` role; a user may omit it (or name themselves).
    user_id: Option<stampede_domain::ids::UserId>,
    /// 1–100 lines.
    #[schema(min_items = 1, max_items = 100)]
    items: Vec<CartLine>,
}

/// Quote a cart: every unused coupon of the user, usable (with its discount) or not (with a
/// `reason_code`), and the best combination under the stacking rules (one shop coupon per
/// shop plus one platform coupon on what is left).
#[utoipa::path(post, path = "/api/v1/checkout/quote", tag = "settlement",
    request_body = QuoteBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = Quote),
        SettlementErrors, JsonBodyErrors, ValidationFailed,
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
    // Written from each cached coupon's pre-rendered JSON: the same bytes as serialising a
    // `Quote`, without copying 50 names and formatting 100 ids per request.
    let body = state
        .settlements
        .quote_json(&caller.principal, user_id, &cart)
        .await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}
