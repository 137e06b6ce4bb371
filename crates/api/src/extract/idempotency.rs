//! The `Idempotency-Key` header, read the same way by every route that honours it.

use crate::error::{ApiError, ApiResult};
use axum::http::HeaderMap;
use stampede_domain::ValidationErrors;

const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The header's value, if sent: 422 on `Idempotency-Key` when it is not visible ASCII. Its
/// length is checked by the use case, which also binds it to the request.
pub fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    v.to_str().map(|s| Some(s.to_owned())).map_err(|_| {
        ApiError::validation(ValidationErrors::single(
            "Idempotency-Key",
            "must be visible ASCII",
        ))
    })
}
