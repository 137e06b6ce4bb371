//! The tasks of a shop: list them, read one's progress, cancel one.

use super::shared::distribution_id;
use super::view::DistributionView;
use crate::error::{ApiError, ApiResult, PROBLEM_JSON, Problem};
use crate::extract::{BackOfficeRoles, Caller};
use crate::responses::{BackOfficeErrors, NotFound};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Serialize;
use stampede_domain::ValidationErrors;
use std::collections::HashMap;
use utoipa::{IntoParams, ToSchema};

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageParams {
    /// 1-based, default 1.
    #[param(minimum = 1)]
    page: Option<u32>,
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    page_size: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct DistributionPage {
    pub items: Vec<DistributionView>,
    pub page: u32,
    pub page_size: u32,
    pub total: u64,
}

fn page_param(q: &HashMap<String, String>, k: &str, errs: &mut ValidationErrors) -> Option<u32> {
    let v = q.get(k)?;
    let parsed = v.parse::<u32>().ok();
    if parsed.is_none() {
        errs.add(k, "must be a non-negative integer");
    }
    parsed
}

/// List distribution tasks, newest first: merchants their shop's, admins every shop's.
#[utoipa::path(get, path = "/api/v1/merchant/distributions", operation_id = "list_distributions", tag = "distribution",
    params(PageParams),
    security(("bearer" = [])),
    responses(
        (status = 200, body = DistributionPage),
        BackOfficeErrors,
        (status = 422, body = Problem, content_type = PROBLEM_JSON, description = "VALIDATION_FAILED: a bad page"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller<BackOfficeRoles>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<DistributionPage>> {
    let mut errs = ValidationErrors::new();
    let page = page_param(&q, "page", &mut errs);
    let page_size = page_param(&q, "page_size", &mut errs);
    errs.finish(()).map_err(ApiError::validation)?;
    let (result, page, page_size) = state
        .distributions
        .list(&caller.principal, page, page_size)
        .await?;
    Ok(Json(DistributionPage {
        items: result
            .items
            .into_iter()
            .map(DistributionView::from)
            .collect(),
        page,
        page_size,
        total: result.total,
    }))
}

/// A task with its live progress counters (`succeeded + failed = processed_rows`).
#[utoipa::path(get, path = "/api/v1/merchant/distributions/{id}", operation_id = "get_distribution", tag = "distribution",
    params(("id" = String, Path, description = "distribution id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = DistributionView),
        BackOfficeErrors, NotFound,
    ))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller<BackOfficeRoles>,
    Path(id): Path<String>,
) -> ApiResult<Json<DistributionView>> {
    let id = distribution_id(&id)?;
    Ok(Json(
        state.distributions.get(&caller.principal, id).await?.into(),
    ))
}

/// Cancel: a pending task at once; a running one at its next batch boundary (what was issued
/// stays issued and is reported). Canceling a completed or failed task is 409 `CONFLICT`;
/// canceling again answers the task again.
#[utoipa::path(post, path = "/api/v1/merchant/distributions/{id}/cancel", operation_id = "cancel_distribution", tag = "distribution",
    params(("id" = String, Path, description = "distribution id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = DistributionView),
        BackOfficeErrors, NotFound,
        (status = 409, body = Problem, content_type = PROBLEM_JSON, description = "CONFLICT: already completed or failed"),
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller<BackOfficeRoles>,
    Path(id): Path<String>,
) -> ApiResult<Json<DistributionView>> {
    let id = distribution_id(&id)?;
    Ok(Json(
        state
            .distributions
            .cancel(&caller.principal, id)
            .await?
            .into(),
    ))
}
