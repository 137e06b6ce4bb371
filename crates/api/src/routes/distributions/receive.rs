//! Upload step 1, receive: the multipart form, streamed part by part. The file goes to a temp
//! file in the upload directory (never held in memory), counted against the size limit as it
//! arrives (413 as soon as it is crossed) and hashed (SHA-256) for `Idempotency-Key`
//! replays. The text fields are then checked with the template, every form error at once.

use super::shared::{TempFile, field_error, internal};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::multipart::{Field, MultipartError};
use axum::extract::{FromRequest, Multipart, Request};
use sha2::{Digest, Sha256};
use stampede_core::AppError;
use stampede_core::distributions::{CheckedUpload, UploadFields};
use stampede_domain::auth::Principal;
use stampede_domain::{ErrorCode, ValidationErrors};
use std::path::Path;
use tokio::io::AsyncWriteExt;

/// Largest accepted text form field (name, URL, ...).
const MAX_FIELD_BYTES: usize = 4096;

/// The file part, on disk.
pub(super) struct SavedFile {
    pub(super) temp: TempFile,
    pub(super) size: u64,
    /// SHA-256 (hex) of the file's bytes.
    pub(super) sha256: String,
}

/// A form whose fields passed their checks, with its file.
pub(super) struct Received {
    pub(super) form: CheckedUpload,
    pub(super) file: SavedFile,
}

/// Reads the form and checks its fields: 415 when the body is not multipart, 400 for a
/// broken one, 413 for a file over the limit, 422 for bad or unknown fields, and the
/// template's own refusals (404, 409).
pub(super) async fn receive(
    state: &AppState,
    who: &Principal,
    request: Request,
) -> ApiResult<Received> {
    let multipart = Multipart::from_request(request, state).await.map_err(|e| {
        ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("send the upload as multipart/form-data: {}", e.body_text()),
        )
    })?;
    let cfg = &state.uploads;
    tokio::fs::create_dir_all(&cfg.upload_dir)
        .await
        .map_err(internal)?;
    let (fields, file, mut errs) = read_parts(multipart, &cfg.upload_dir, cfg.max_bytes).await?;
    if file.is_none() {
        errs.add("file", "is required");
    }
    // Report the form's own errors together with the fields' (all at once).
    let form = match state.distributions.check(who, &fields).await {
        Err(AppError::Validation(more)) => {
            for e in more.into_vec() {
                errs.add(&e.field, e.message);
            }
            return Err(ApiError::validation(errs));
        }
        Err(_) if !errs.is_empty() => return Err(ApiError::validation(errs)),
        other => other?,
    };
    errs.finish(()).map_err(ApiError::validation)?;
    let file = file.ok_or_else(|| field_error("file", "is required"))?;
    Ok(Received { form, file })
}

/// Every part of the form: the text fields, the file (saved into `dir`), and the errors of
/// parts that are not fields of this form. A second file is refused at once.
async fn read_parts(
    mut multipart: Multipart,
    dir: &Path,
    max_bytes: u64,
) -> ApiResult<(UploadFields, Option<SavedFile>, ValidationErrors)> {
    let mut fields = UploadFields::default();
    let mut file = None;
    let mut unknown = ValidationErrors::new();
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or("").to_owned();
        match name.as_str() {
            "file" => {
                if file.is_some() {
                    return Err(field_error("file", "send exactly one file"));
                }
                file = Some(save_file(field, TempFile::named_in(dir, "upload"), max_bytes).await?);
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
    Ok((fields, file, unknown))
}

/// Reads a text field, refusing more than `MAX_FIELD_BYTES`.
async fn text_field(name: &str, mut field: Field<'_>) -> ApiResult<String> {
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

/// Streams the file part into `temp`, hashing and counting; 413 past `max`.
async fn save_file(mut field: Field<'_>, temp: TempFile, max: u64) -> ApiResult<SavedFile> {
    let mut out = tokio::fs::File::create(temp.path())
        .await
        .map_err(internal)?;
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
        out.write_all(&chunk).await.map_err(internal)?;
    }
    out.flush().await.map_err(internal)?;
    Ok(SavedFile {
        temp,
        size,
        sha256: hex::encode(hash.finalize()),
    })
}

fn malformed(e: MultipartError) -> ApiError {
    ApiError::new(
        ErrorCode::MalformedRequest,
        format!("the multipart body is malformed: {}", e.body_text()),
    )
}
