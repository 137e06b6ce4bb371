//! Reading one template: the template itself and its audit log.

use super::template_id;
use crate::error::ApiResult;
use crate::extract::{BackOfficeRoles, Caller};
use crate::responses::{BackOfficeErrors, NotFound};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use stampede_domain::audit::AuditEntry;
use stampede_domain::template::Template;
use utoipa::ToSchema;

/// One template. Another shop's template is 404, like a missing one.
#[utoipa::path(get, path = "/api/v1/merchant/templates/{id}", operation_id = "get_merchant_template", tag = "back-office",
    params(("id" = String, Path, description = "template id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Template),
        BackOfficeErrors, NotFound,
    ))]
pub async fn get_template(
    State(state): State<AppState>,
    caller: Caller<BackOfficeRoles>,
    Path(id): Path<String>,
) -> ApiResult<Json<Template>> {
    let id = template_id(&id)?;
    Ok(Json(state.backoffice.get(&caller.principal, id).await?))
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    /// Oldest first.
    pub items: Vec<AuditEntry>,
}

/// The template's audit log: one entry per change, with the template before and after.
#[utoipa::path(get, path = "/api/v1/merchant/templates/{id}/audit", tag = "back-office",
    params(("id" = String, Path, description = "template id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = AuditPage),
        BackOfficeErrors, NotFound,
    ))]
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller<BackOfficeRoles>,
    Path(id): Path<String>,
) -> ApiResult<Json<AuditPage>> {
    let id = template_id(&id)?;
    Ok(Json(AuditPage {
        items: state.backoffice.audit(&caller.principal, id).await?,
    }))
}
