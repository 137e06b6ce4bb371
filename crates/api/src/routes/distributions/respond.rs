//! Upload step 3, respond: create the task (or find the one an `Idempotency-Key` replays),
//! leave the file in the work directory as the runner's local copy, and answer 202 (200 for
//! a replay) with the task and its `Location`.

use super::receive::Received;
use super::shared::TempFile;
use super::view::DistributionView;
use crate::error::ApiResult;
use crate::state::AppState;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use stampede_core::distributions::{Created, UploadedFile};
use stampede_domain::auth::Principal;
use stampede_domain::distribution::DistributionTask;
use std::path::Path;

/// Creates the task from the received form and the inspected file, and answers with it.
pub(super) async fn respond(
    state: &AppState,
    who: &Principal,
    received: Received,
    uploaded: UploadedFile,
    key: Option<&str>,
) -> ApiResult<Response> {
    let Received { form, file } = received;
    let (task, created) = state
        .distributions
        .create(who, form, uploaded, file.temp.path(), key)
        .await?;
    let status = match created {
        Created::New => {
            keep_local_copy(file.temp, &state.uploads.work_dir, &task).await;
            StatusCode::ACCEPTED
        }
        Created::Replayed => StatusCode::OK,
    };
    let location = format!("/api/v1/merchant/distributions/{}", task.id);
    let mut resp = (status, Json(DistributionView::from(task))).into_response();
    if let Ok(loc) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

/// Moves the accepted file to the task's local name in `work_dir`, so the runner on this node
/// starts from it instead of fetching the store's copy. Best effort: without it the runner
/// fetches the file, and the temp file is removed.
async fn keep_local_copy(temp: TempFile, work_dir: &Path, task: &DistributionTask) {
    let local = work_dir.join(task.local_file_name());
    if tokio::fs::create_dir_all(work_dir).await.is_ok()
        && let Some(p) = temp.keep()
        && tokio::fs::rename(&p, &local).await.is_err()
    {
        let _ = tokio::fs::remove_file(&p).await;
    }
}
