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
    /// The template's id (a positive integer string).
    #[schema(
        pattern = "^([1-9][0-9]{0,17}|[1-8][0-9]{18}|9[0-1][0-9]{17}|92[0-1][0-9]{16}|922[0-2][0-9]{15}|9223[0-2][0-9]{14}|92233[0-6][0-9]{13}|922337[0-1][0-9]{12}|92233720[0-2][0-9]{10}|922337203[0-5][0-9]{9}|9223372036[0-7][0-9]{8}|92233720368[0-4][0-9]{7}|922337203685[0-3][0-9]{6}|9223372036854[0-6][0-9]{5}|92233720368547[0-6][0-9]{4}|922337203685477[0-4][0-9]{3}|9223372036854775[0-7][0-9]{2}|922337203685477580[0-6]|9223372036854775807)$"
    )]
    template_id: String,
    /// 1–100 characters, trimmed, no control characters.
    #[schema(
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
    /// `.xlsx` or `.csv`, decided by content; first column user ids, header row optional.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// RFC 3339, not in the past, at most 30 days ahead; absent = now. (A form field has no
    /// `null`: leave it out.)
    #[schema(value_type = String, format = DateTime, required = false)]
    send_at: Option<String>,
    /// An http:// or https:// URL of at most 2048 characters, POSTed the summary when the task
    /// finishes (HMAC-SHA256 signed).
    #[schema(value_type = String, max_length = 2048, pattern = "^https?://[!-\"$-.0-9;->@-~][!-~]*$", required = false)]
    notify_url: Option<String>,
}

/// Upload a distribution: a multipart form with `template_id`, `name`, `file` (.xlsx or .csv;
/// first column user ids; a header row is detected and skipped; other columns ignored), and
/// optional `send_at` and `notify_url`. 202 with the `pending` task; the runner starts it at
/// `send_at` (within a second). A hostile or unreadable file is refused here: 415 when it is
/// not a CSV or XLSX, 413 over the size limit, 422 for a zip bomb, a giant cell, an
/// oversized shared-string table, no rows, or no user ids in the first column.
#[utoipa::path(post, path = "/api/v1/merchant/distributions", operation_id = "upload_distribution", tag = "distribution",
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
