//! Distribution endpoints (SPEC §6 "Distribution"): upload a file of user ids, list, read
//! progress, cancel, download the failure report.
//!
//! The upload is streamed part by part to a file in the upload directory (never held in
//! memory), counted against the size limit as it arrives (413 as soon as it is crossed) and
//! hashed for `Idempotency-Key` replays. The file is then checked by `stampede-sheet` on a
//! blocking thread (format by content, zip bombs, giant cells, row count) before the task is
//! created, so a hostile or unreadable file is a 4xx and never a task.

use crate::error::{ApiError, ApiResult, PROBLEM_JSON, Problem};
use crate::extract::{BackOfficeRoles, Caller, idempotency_key};
use crate::responses::{BackOfficeErrors, NotFound, UploadErrors};
use crate::state::AppState;
use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};
use stampede_core::distributions::{Created, UploadFields, UploadedFile};
use stampede_domain::distribution::{DistributionStatus, DistributionTask, FileFormat};
use stampede_domain::ids::{DistributionId, ShopId, TemplateId};
use stampede_domain::{ErrorCode, ValidationErrors};
use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use tokio::io::AsyncWriteExt;
use utoipa::{IntoParams, ToSchema};

/// Largest accepted text form field (name, URL, ...).
const MAX_FIELD_BYTES: usize = 4096;
/// Failure rows fetched per query while writing a report.
const REPORT_PAGE: u32 = 10_000;

/// Where uploads go and how big they may be (from the server's configuration).
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// Uploads are streamed here first.
    pub upload_dir: PathBuf,
    /// An accepted upload is moved here as `<id>.<format>`, the runner's local copy.
    pub work_dir: PathBuf,
    pub max_bytes: u64,
    pub limits: stampede_sheet::Limits,
}

/// A distribution task as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DistributionView {
    pub id: DistributionId,
    pub template_id: TemplateId,
    pub shop_id: ShopId,
    pub name: String,
    pub status: DistributionStatus,
    #[schema(value_type = String, format = DateTime)]
    pub send_at: jiff::Timestamp,
    /// Data rows in the file (header and blank rows excluded).
    pub total_rows: u64,
    pub processed_rows: u64,
    pub succeeded: u64,
    pub failed: u64,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: jiff::Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<jiff::Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<jiff::Timestamp>,
    pub notify_url: Option<String>,
    /// Why the task `failed`.
    pub failure_reason: Option<String>,
    /// A cancel was asked for; a running task stops at its next batch.
    pub cancel_requested: bool,
    /// `csv` or `xlsx`, as decided from the file's content.
    pub file_format: String,
}

impl From<DistributionTask> for DistributionView {
    fn from(t: DistributionTask) -> Self {
        Self {
            id: t.id,
            template_id: t.template_id,
            shop_id: t.shop_id,
            name: t.name,
            status: t.status,
            send_at: t.send_at,
            total_rows: t.total_rows,
            processed_rows: t.processed_rows,
            succeeded: t.succeeded,
            failed: t.failed,
            created_at: t.created_at,
            started_at: t.started_at,
            finished_at: t.finished_at,
            notify_url: t.notify_url,
            failure_reason: t.failure_reason,
            cancel_requested: t.cancel_requested,
            file_format: t.format.as_str().to_owned(),
        }
    }
}

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

fn distribution_id(raw: &str) -> ApiResult<DistributionId> {
    DistributionId::parse(raw).ok_or_else(ApiError::not_found)
}

fn field_error(field: &str, msg: impl Into<String>) -> ApiError {
    ApiError::validation(ValidationErrors::single(field, msg))
}

/// Removes the file when dropped (unless kept): an upload that fails anywhere leaves nothing.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn path(&self) -> &FsPath {
        self.0.as_deref().unwrap_or(FsPath::new(""))
    }

    fn keep(mut self) -> Option<PathBuf> {
        self.0.take()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn io_error(e: std::io::Error) -> ApiError {
    ApiError::from(stampede_core::AppError::Internal(Box::new(e)))
}

/// Reads a text field, refusing more than `MAX_FIELD_BYTES`.
async fn text_field(
    name: &str,
    mut field: axum::extract::multipart::Field<'_>,
) -> ApiResult<String> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(malformed)? {
        if buf.len() + chunk.len() > MAX_FIELD_BYTES {
            return Err(field_error(
                name,
                format!("must be at most {MAX_FIELD_BYTES} bytes"),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8(buf).map_err(|_| field_error(name, "must be UTF-8 text"))
}

fn malformed(e: axum::extract::multipart::MultipartError) -> ApiError {
    ApiError::new(
        ErrorCode::MalformedRequest,
        format!("the multipart body is malformed: {}", e.body_text()),
    )
}

/// Streams the file part to `dest`, hashing and counting; 413 past `max`.
async fn save_file(
    mut field: axum::extract::multipart::Field<'_>,
    dest: &FsPath,
    max: u64,
) -> ApiResult<(u64, String)> {
    let mut out = tokio::fs::File::create(dest).await.map_err(io_error)?;
    let mut hash = Sha256::new();
    let mut size: u64 = 0;
    while let Some(chunk) = field.chunk().await.map_err(malformed)? {
        size += chunk.len() as u64;
        if size > max {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("the file is larger than the limit of {max} bytes"),
            ));
        }
        hash.update(&chunk);
        out.write_all(&chunk).await.map_err(io_error)?;
    }
    out.flush().await.map_err(io_error)?;
    Ok((size, hex::encode(hash.finalize())))
}

/// Upload a distribution: a multipart form with `template_id`, `name`, `file` (.xlsx or .csv;
/// first column user ids; a header row is detected and skipped; other columns ignored), and
/// optional `send_at` and `notify_url`. 202 with the `pending` task; the runner starts it at
/// `send_at` (within a second). A hostile or unreadable file is refused here: 415 when it is
/// not a CSV or XLSX, 413 over the size limit, 422 for a zip bomb, a giant cell, an
/// oversized shared-string table, no rows, or no user ids in the first column.
#[utoipa::path(post, path = "/api/v1/merchant/distributions", tag = "distribution",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    params(("Idempotency-Key" = Option<String>, Header, description = "1–255 visible ASCII characters; binds the fields and the file's bytes")),
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
    let cfg = state.uploads.clone();
    let mut multipart = Multipart::from_request(request, &state)
        .await
        .map_err(|e| {
            ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!("send the upload as multipart/form-data: {}", e.body_text()),
            )
        })?;
    tokio::fs::create_dir_all(&cfg.upload_dir)
        .await
        .map_err(io_error)?;
    let mut fields = UploadFields::default();
    let mut file: Option<(TempFile, u64, String)> = None;
    let mut unknown = ValidationErrors::new();
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or("").to_owned();
        match name.as_str() {
            "file" => {
                if file.is_some() {
                    return Err(field_error("file", "send exactly one file"));
                }
                let tmp = TempFile(Some(
                    cfg.upload_dir
                        .join(format!("{:016x}.upload", rand::random::<u64>())),
                ));
                let (size, sha) = save_file(field, tmp.path(), cfg.max_bytes).await?;
                file = Some((tmp, size, sha));
            }
            "template_id" => fields.template_id = Some(text_field(&name, field).await?),
            "name" => fields.name = Some(text_field(&name, field).await?),
            "send_at" => fields.send_at = Some(text_field(&name, field).await?),
            "notify_url" => fields.notify_url = Some(text_field(&name, field).await?),
            other => unknown.add(
                if other.is_empty() { "(unnamed)" } else { other },
                "is not a field of this form",
            ),
        }
    }
    if file.is_none() {
        unknown.add("file", "is required");
    }
    // Report the form's own errors together with the fields' (all at once).
    let checked = match state.distributions.check(&caller.principal, &fields).await {
        Err(stampede_core::AppError::Validation(errs)) => {
            for e in errs.into_vec() {
                unknown.add(&e.field, e.message);
            }
            return Err(ApiError::validation(unknown));
        }
        Err(_) if !unknown.is_empty() => return Err(ApiError::validation(unknown)),
        other => other?,
    };
    unknown.finish(()).map_err(ApiError::validation)?;
    let Some((tmp, size, sha256)) = file else {
        return Err(field_error("file", "is required"));
    };

    let path = tmp.path().to_path_buf();
    let limits = cfg.limits.clone();
    let summary = tokio::task::spawn_blocking(move || stampede_sheet::inspect(&path, &limits))
        .await
        .map_err(|e| ApiError::from(stampede_core::AppError::Internal(Box::new(e))))?;
    let summary = match summary {
        Ok(s) => s,
        Err(stampede_sheet::SheetError::UnsupportedFormat(what)) => {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!("the file is not a CSV or XLSX file: it looks like {what}"),
            ));
        }
        Err(e) if e.is_client_error() => return Err(field_error("file", e.to_string())),
        Err(e) => return Err(io_error(std::io::Error::other(e.to_string()))),
    };
    let format = match summary.format {
        stampede_sheet::Format::Csv => FileFormat::Csv,
        stampede_sheet::Format::Xlsx => FileFormat::Xlsx,
    };
    let uploaded = UploadedFile {
        format,
        data_rows: summary.data_rows,
        size,
        sha256,
    };
    let (task, created) = state
        .distributions
        .create(
            &caller.principal,
            checked,
            uploaded,
            tmp.path(),
            key.as_deref(),
        )
        .await?;
    if created == Created::New {
        // The runner on this node can start from the local copy instead of the store's.
        let cached = cfg.work_dir.join(task.local_file_name());
        if tokio::fs::create_dir_all(&cfg.work_dir).await.is_ok()
            && let Some(p) = tmp.keep()
            && tokio::fs::rename(&p, &cached).await.is_err()
        {
            let _ = tokio::fs::remove_file(&p).await;
        }
    }
    let status = match created {
        Created::New => StatusCode::ACCEPTED,
        Created::Replayed => StatusCode::OK,
    };
    let mut resp = (status, Json(DistributionView::from(task.clone()))).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/api/v1/merchant/distributions/{}", task.id)) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageParams {
    /// 1-based, default 1.
    page: Option<u32>,
    /// 1–100, default 20.
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
    let v = q.get(k).filter(|v| !v.is_empty())?;
    let parsed = v.parse::<u32>().ok();
    if parsed.is_none() {
        errs.add(k, "must be a non-negative integer");
    }
    parsed
}

/// List distribution tasks, newest first: merchants their shop's, admins every shop's.
#[utoipa::path(get, path = "/api/v1/merchant/distributions", tag = "distribution",
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
#[utoipa::path(get, path = "/api/v1/merchant/distributions/{id}", tag = "distribution",
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
#[utoipa::path(post, path = "/api/v1/merchant/distributions/{id}/cancel", tag = "distribution",
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

/// The failure report: `row,user_id,reason`, one line per row that gave no coupon, by row.
/// `format=csv` (default) or `xlsx` (written in constant memory).
#[utoipa::path(get, path = "/api/v1/merchant/distributions/{id}/failures", tag = "distribution",
    params(("id" = String, Path, description = "distribution id"),
           ("format" = Option<String>, Query, description = "`csv` (default) or `xlsx`")),
    security(("bearer" = [])),
    responses(
        (status = 200, content_type = "text/csv", description = "the report as CSV"),
        BackOfficeErrors, NotFound,
        (status = 422, body = Problem, content_type = PROBLEM_JSON, description = "VALIDATION_FAILED: format is not csv or xlsx"),
    ))]
pub async fn failures(
    State(state): State<AppState>,
    caller: Caller<BackOfficeRoles>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let id = distribution_id(&id)?;
    let format = match q.get("format").map(String::as_str).unwrap_or("csv") {
        "csv" | "" => stampede_sheet::Format::Csv,
        "xlsx" => stampede_sheet::Format::Xlsx,
        _ => return Err(field_error("format", "must be csv or xlsx")),
    };
    let task = state.distributions.get(&caller.principal, id).await?;
    let cfg = state.uploads.clone();
    tokio::fs::create_dir_all(&cfg.upload_dir)
        .await
        .map_err(io_error)?;
    let tmp = TempFile(Some(
        cfg.upload_dir
            .join(format!("{:016x}.report", rand::random::<u64>())),
    ));
    let out = tmp.path().to_path_buf();
    let service = state.distributions.clone();
    let handle = tokio::runtime::Handle::current();
    let written = tokio::task::spawn_blocking(move || {
        // Pages come from the async store; this thread is outside the runtime, so it may
        // block on them.
        let mut after = 0u64;
        let mut page: std::vec::IntoIter<stampede_domain::distribution::FailedRow> =
            Vec::new().into_iter();
        let mut done = false;
        let rows = std::iter::from_fn(move || {
            loop {
                if let Some(f) = page.next() {
                    after = f.row;
                    return Some(Ok(stampede_sheet::FailureRow {
                        row: f.row,
                        user_id: f.raw,
                        reason: f.reason.as_str().to_owned(),
                    }));
                }
                if done {
                    return None;
                }
                match handle.block_on(service.failures_page(&task, after, REPORT_PAGE)) {
                    Ok(next) => {
                        done = next.len() < REPORT_PAGE as usize;
                        page = next.into_iter();
                    }
                    Err(e) => {
                        done = true;
                        return Some(Err(e));
                    }
                }
            }
        });
        stampede_sheet::write_failures(&out, format, rows)
    })
    .await
    .map_err(|e| ApiError::from(stampede_core::AppError::Internal(Box::new(e))))?;
    written.map_err(|e| io_error(std::io::Error::other(e.to_string())))?;
    let file = tokio::fs::File::open(tmp.path()).await.map_err(io_error)?;
    // The open handle keeps the data readable; the name can go now.
    drop(tmp);
    let (content_type, ext) = match format {
        stampede_sheet::Format::Csv => ("text/csv; charset=utf-8", "csv"),
        stampede_sheet::Format::Xlsx => (
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "xlsx",
        ),
    };
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"distribution-{id}-failures.{ext}\""
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}
