//! `POST /merchant/distributions`: the upload. Three steps, each refusing with its own
//! statuses, so a hostile or unreadable file is a 4xx and never a task: `receive` (400, 413,
//! 415, 422 and the template's 404/409), `inspect` (415, 422), `respond` (202, or 200 for a
//! replay; 422 for a reused key).

use super::inspect::inspect;
use super::receive::receive;
use super::respond::respond;
use super::view::DistributionView;
use crate::error::{ApiResult, PROBLEM_JSON, Problem};
use crate::extract::{BackOfficeRoles, Caller, idempotency_key};
use crate::responses::{BackOfficeErrors, UploadErrors};
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::Response;
use utoipa::ToSchema;

/// The multipart form of an upload (documentation only; the handler streams it).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    template_id: String,
    /// 1–100 characters.
    name: String,
    /// `.xlsx` or `.csv`, decided by content; first column user ids, header row optional.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// RFC 3339; absent = now. At most 30 days ahead.
    #[schema(value_type = Option<String>, format = DateTime)]
    send_at: Option<String>,
    /// POSTed the summary when the task finishes (HMAC-SHA256 signed).
    notify_url: Option<String>,
}

/// Upload a distribution: a multipart form with `template_id`, `name`, `file` (.xlsx or .csv;
/// first column user ids; a header row is detected and skipped; other columns ignored), and
/// optional `send_at` and `notify_url`. 202 with the `pending` task; the runner starts it at
/// `send_at` (within a second). A hostile or unreadable file is refused here: 415 when it is
/// not a CSV or XLSX, 413 over the size limit, 422 for a zip bomb, a giant cell, an
/// oversized shared-string table, no rows, or no user ids in the first column.
#[utoipa::path(post, path = "/api/v1/merchant/distributions", tag = "distribution",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    params(("Idempotency-Key" = Option<String>, Header, description = "1–255 visible ASCII characters; binds the fields and the file's bytes", pattern = "^[!-~]{1,255}$")),
    security(("bearer" = [])),
    responses(
        (status = 202, body = DistributionView, description = "accepted: the task is pending"),
        (status = 200, body = DistributionView, description = "replay of an earlier upload with the same Idempotency-Key"),
        BackOfficeErrors, UploadErrors,
        (status = 404, body = Problem, content_type = PROBLEM_JSON, description = "NOT_FOUND: the template (or it belongs to another shop)"),
        (status = 409, body = Problem, content_type = PROBLEM_JSON, description = "TEMPLATE_TERMINATED or CLAIM_ENDED"),
    ))]
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller<BackOfficeRoles>,
    headers: HeaderMap,
    request: Request,
) -> ApiResult<Response> {
    let key = idempotency_key(&headers)?;
    let received = receive(&state, &caller.principal, request).await?;
    let uploaded = inspect(&received.file, &state.uploads.limits).await?;
    respond(
        &state,
        &caller.principal,
        received,
        uploaded,
        key.as_deref(),
    )
    .await
}
