//! What the distribution routes share: the upload configuration, temp files that remove
//! themselves, and the small error helpers.

use crate::error::{ApiError, ApiResult};
use stampede_core::AppError;
use stampede_domain::ValidationErrors;
use stampede_domain::ids::DistributionId;
use std::path::{Path, PathBuf};

/// Where uploads go and how big they may be (from the server's configuration).
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// Uploads (and failure reports) are streamed here first.
    pub upload_dir: PathBuf,
    /// An accepted upload is moved here under the task's `local_file_name`: the runner's
    /// local copy.
    pub work_dir: PathBuf,
    pub max_bytes: u64,
    pub limits: stampede_sheet::Limits,
}

/// A file in the upload directory, removed when dropped unless kept: an upload or a report
/// that fails anywhere leaves nothing behind.
pub(super) struct TempFile(Option<PathBuf>);

impl TempFile {
    /// A fresh random name in `dir` ending in `.{ext}`; the file is not created here.
    pub(super) fn named_in(dir: &Path, ext: &str) -> Self {
        Self(Some(
            dir.join(format!("{:016x}.{ext}", rand::random::<u64>())),
        ))
    }

    pub(super) fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    /// Hands the file over to the caller: it is no longer removed on drop.
    pub(super) fn keep(mut self) -> Option<PathBuf> {
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

/// A 500 whose cause goes to the log (never to the client).
pub(super) fn internal(e: impl std::error::Error + Send + Sync + 'static) -> ApiError {
    ApiError::from(AppError::Internal(Box::new(e)))
}

/// A 422 `VALIDATION_FAILED` on one field.
pub(super) fn field_error(field: &str, msg: impl Into<String>) -> ApiError {
    ApiError::validation(ValidationErrors::single(field, msg))
}

/// An id that cannot exist is simply not found.
pub(super) fn distribution_id(raw: &str) -> ApiResult<DistributionId> {
    DistributionId::parse(raw).ok_or_else(ApiError::not_found)
}
