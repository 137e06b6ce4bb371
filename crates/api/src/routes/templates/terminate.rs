//! `POST /merchant/templates/{id}/terminate`: end a template now.

use super::template_id;
use crate::error::{ApiError, ApiResult, PROBLEM_JSON, Problem};
use crate::extract::{BackOfficeRoles, Caller, Fields, OptionalJsonObject};
use crate::responses::{BackOfficeErrors, JsonBodyErrors, NotFound};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use stampede_domain::template::Template;

/// End a template now: claims stop at once. Terminating twice is a 200 with the same
/// template; an already ended template is 409 `CLAIM_ENDED`.
#[utoipa::path(post, path = "/api/v1/merchant/templates/{id}/terminate", tag = "back-office",
    params(("id" = String, Path, description = "template id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Template),
        JsonBodyErrors, BackOfficeErrors, NotFound,
        (status = 409, body = Problem, content_type = PROBLEM_JSON, description = "CLAIM_ENDED"),
        (status = 422, body = Problem, content_type = PROBLEM_JSON, description = "VALIDATION_FAILED: the body, if any, must be an empty object"),
    ))]
pub async fn terminate(
    State(state): State<AppState>,
    caller: Caller<BackOfficeRoles>,
    Path(id): Path<String>,
    OptionalJsonObject(body): OptionalJsonObject,
) -> ApiResult<Json<Template>> {
    let id = template_id(&id)?;
    Fields::new(body)
        .finish()
        .finish(())
        .map_err(ApiError::validation)?;
    Ok(Json(
        state.backoffice.terminate(&caller.principal, id).await?,
    ))
}
