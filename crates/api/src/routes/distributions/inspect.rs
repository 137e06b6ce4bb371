//! Upload step 2, inspect: `stampede-sheet` reads the received file on a blocking thread
//! (format by content, zip bombs, giant cells, oversized shared strings, row count, user
//! ids). A file that is not a CSV or XLSX is 415; one refused for its content is 422 on
//! `file`; failing to read our own disk is a 500.

use super::receive::SavedFile;
use super::shared::{field_error, internal};
use crate::error::{ApiError, ApiResult};
use stampede_core::distributions::UploadedFile;
use stampede_domain::ErrorCode;
use stampede_domain::distribution::FileFormat;
use stampede_sheet::{Format, Limits, SheetError};

/// What the task needs to know about the file, once the sheet checks passed.
pub(super) async fn inspect(file: &SavedFile, limits: &Limits) -> ApiResult<UploadedFile> {
    let path = file.temp.path().to_path_buf();
    let limits = limits.clone();
    // Reading a workbook is CPU and blocking I/O: keep it off the runtime's threads.
    let summary = tokio::task::spawn_blocking(move || stampede_sheet::inspect(&path, &limits))
        .await
        .map_err(internal)?;
    let summary = match summary {
        Ok(s) => s,
        Err(SheetError::UnsupportedFormat(what)) => {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!("the file is not a CSV or XLSX file: it looks like {what}"),
            ));
        }
        Err(e) if e.is_client_error() => return Err(field_error("file", e.to_string())),
        Err(e) => return Err(internal(e)),
    };
    Ok(UploadedFile {
        format: match summary.format {
            Format::Csv => FileFormat::Csv,
            Format::Xlsx => FileFormat::Xlsx,
        },
        data_rows: summary.data_rows,
        size: file.size,
        sha256: file.sha256.clone(),
    })
}
