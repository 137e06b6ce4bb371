//! The failure report of a task: every row that gave no coupon, as CSV or XLSX, written to a
//! temp file on a blocking thread and streamed back.

use super::shared::{TempFile, distribution_id, field_error, internal};
use crate::error::{ApiResult, PROBLEM_JSON, Problem};
use crate::extract::{BackOfficeRoles, Caller};
use crate::responses::{BackOfficeErrors, NotFound};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;

/// Failure rows fetched per query while writing a report.
const REPORT_PAGE: u32 = 10_000;

/// The report's file formats (documents the `format` query value).
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum ReportFormat {
    Csv,
    Xlsx,
}

/// The failure report: `row,user_id,reason`, one line per row that gave no coupon, by row.
/// `format=csv` (default) or `xlsx` (written in constant memory).
#[utoipa::path(get, path = "/api/v1/merchant/distributions/{id}/failures", operation_id = "distribution_failures", tag = "distribution",
    params(("id" = String, Path, description = "distribution id"),
           ("format" = Option<ReportFormat>, Query, description = "`csv` (default) or `xlsx`")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the report: CSV, or an XLSX workbook with `format=xlsx`",
            content((String = "text/csv"), (String = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"))),
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
        "csv" => stampede_sheet::Format::Csv,
        "xlsx" => stampede_sheet::Format::Xlsx,
        _ => return Err(field_error("format", "must be csv or xlsx")),
    };
    let task = state.distributions.get(&caller.principal, id).await?;
    let dir = &state.uploads.upload_dir;
    tokio::fs::create_dir_all(dir).await.map_err(internal)?;
    let tmp = TempFile::named_in(dir, "report");
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
    .map_err(internal)?;
    written.map_err(internal)?;
    let file = tokio::fs::File::open(tmp.path()).await.map_err(internal)?;
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
