//! `POST /merchant/templates/{id}/stock`: add stock to an active template, once per
//! `Idempotency-Key`.

use super::template_id;
use crate::error::{ApiError, ApiResult, PROBLEM_JSON, Problem};
use crate::extract::{
    BackOfficeRoles, Caller, Fields, JsonObject, canonical_hash, idempotency_key,
};
use crate::responses::{BackOfficeErrors, JsonBodyErrors, NotFound};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{Map, Value};
use stampede_core::backoffice::IdempotencyKey;
use stampede_domain::template::Template;
use utoipa::ToSchema;

#[derive(ToSchema)]
// The handler refuses fields it does not know: published as `additionalProperties: false`.
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct AddStockBody {
    /// ≥ 1; the new `stock_total` may not pass 20,000,000.
    #[schema(minimum = 1, maximum = 20_000_000)]
    add: i64,
}

/// Add stock to an active template.
///
/// With an `Idempotency-Key`, a retried request adds nothing more and returns the template as
/// it is now; the same key with another body (or another template) is 422
/// `IDEMPOTENCY_KEY_REUSED`.
#[utoipa::path(post, path = "/api/v1/merchant/templates/{id}/stock", tag = "back-office",
    params(("id" = String, Path, description = "template id"),
           ("Idempotency-Key" = Option<String>, Header, description = "1–255 visible ASCII characters", pattern = "^[!-~]{1,255}$")),
    request_body = AddStockBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = Template),
        BackOfficeErrors, NotFound, JsonBodyErrors,
        (status = 409, body = Problem, content_type = PROBLEM_JSON, description = "TEMPLATE_TERMINATED or CLAIM_ENDED"),
        (status = 422, body = Problem, content_type = PROBLEM_JSON, description = "VALIDATION_FAILED (add < 1 or past the cap) or IDEMPOTENCY_KEY_REUSED"),
    ))]
pub async fn add_stock(
    State(state): State<AppState>,
    caller: Caller<BackOfficeRoles>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Template>> {
    let id = template_id(&id)?;
    // The hash names the action and the template, so a key cannot be replayed elsewhere.
    let mut scoped = Map::new();
    scoped.insert(format!("add_stock:{id}"), Value::Object(body.clone()));
    let idempotency = match idempotency_key(&headers)? {
        Some(k) => Some(IdempotencyKey::parse(&k, canonical_hash(&scoped))?),
        None => None,
    };
    let mut f = Fields::new(body);
    let add = f.int("add");
    let mut errs = f.finish();
    if add.is_none() && !errs.has("add") {
        errs.add("add", "is required");
    }
    let add = errs
        .finish(add.unwrap_or_default())
        .map_err(ApiError::validation)?;
    Ok(Json(
        state
            .backoffice
            .add_stock(&caller.principal, id, add, idempotency)
            .await?,
    ))
}
