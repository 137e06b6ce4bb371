//! The admin API of flow control: read the rule set in force, replace it whole.

use crate::error::{ApiError, ApiResult, PROBLEM_JSON, Problem};
use crate::extract::{AdminOnly, Caller, JsonObject};
use crate::flow::ActiveRules;
use crate::responses::{AdminErrors, JsonBodyErrors, ValidationFailed};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use stampede_domain::ValidationErrors;
use stampede_domain::flow::FlowRules;

/// The flow-control rules in force on this node (admins only): the configured defaults
/// (`source: config`, version 0) until an admin saved a set.
#[utoipa::path(get, path = "/api/v1/admin/flow-rules", tag = "operations",
    security(("bearer" = [])),
    responses(
        (status = 200, body = ActiveRules),
        AdminErrors,
    ))]
pub async fn get_flow_rules(
    State(state): State<AppState>,
    _caller: Caller<AdminOnly>,
) -> Json<ActiveRules> {
    Json((*state.flow.active()).clone())
}

/// Replace the flow-control rules (admins only). The set is validated whole: any bad rule
/// refuses it (422, every field error, nothing applied). Saved, applied on this node at
/// once and on every node within a second; kept across restarts.
#[utoipa::path(put, path = "/api/v1/admin/flow-rules", tag = "operations",
    request_body = FlowRules,
    security(("bearer" = [])),
    responses(
        (status = 200, body = ActiveRules),
        AdminErrors, JsonBodyErrors, ValidationFailed,
        (status = 503, body = Problem, content_type = PROBLEM_JSON, description = "UNAVAILABLE: the rules could not be saved; nothing was applied"),
    ))]
pub async fn put_flow_rules(
    State(state): State<AppState>,
    _caller: Caller<AdminOnly>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<ActiveRules>> {
    let mut body = serde_json::Value::Object(body);
    crate::extract::integral_floats(&mut body);
    let rules: FlowRules = serde_json::from_value(body)
        .map_err(|e| ApiError::validation(ValidationErrors::single("body", e.to_string())))?;
    let active = state.flow.replace(rules, jiff::Timestamp::now()).await?;
    Ok(Json((*active).clone()))
}
