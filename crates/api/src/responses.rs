//! The problem responses of the OpenAPI document, declared once per endpoint family.
//!
//! A route's `responses(...)` lists its successes, the sets below that apply to it, and only
//! the problems specific to it: a 409 naming the codes that action can meet, a 422 saying
//! what it validates. A route with more to say about a status one of its sets already
//! documents restates it after the set (the later entry replaces the set's).
//!
//! Each variant is one status: its doc comment (or a text several sets share) is the
//! description and names the problem codes a client may branch on. The types only describe
//! responses (handlers answer with `ApiError`); `tests/openapi_statuses.rs` pins the
//! statuses of every operation.

use crate::error::{PROBLEM_JSON, Problem};
use utoipa::IntoResponses;

// Texts of statuses that several sets share.
const UNAUTHENTICATED: &str = "UNAUTHENTICATED: no bearer token, or one that is invalid or expired";
const MALFORMED_JSON: &str = "MALFORMED_REQUEST: the body could not be read or is not JSON";

/// Routes behind a bearer token that admit every role.
#[derive(IntoResponses)]
pub enum BearerErrors {
    #[response(status = 401, content_type = PROBLEM_JSON, description = UNAUTHENTICATED)]
    Unauthenticated(Problem),
}

/// Account management (auth family): admins only.
#[derive(IntoResponses)]
pub enum AdminErrors {
    #[response(status = 401, content_type = PROBLEM_JSON, description = UNAUTHENTICATED)]
    Unauthenticated(Problem),
    /// FORBIDDEN: not an admin token
    #[response(status = 403, content_type = PROBLEM_JSON)]
    Forbidden(Problem),
}

/// Back-office routes (templates, distributions): merchants for their shop, admins for any.
#[derive(IntoResponses)]
pub enum BackOfficeErrors {
    #[response(status = 401, content_type = PROBLEM_JSON, description = UNAUTHENTICATED)]
    Unauthenticated(Problem),
    /// FORBIDDEN: not a merchant or admin token, or a merchant naming another shop
    #[response(status = 403, content_type = PROBLEM_JSON)]
    Forbidden(Problem),
}

/// Shopper routes (claims, my coupons, reminders): user tokens only.
#[derive(IntoResponses)]
pub enum ClaimErrors {
    #[response(status = 401, content_type = PROBLEM_JSON, description = UNAUTHENTICATED)]
    Unauthenticated(Problem),
    /// FORBIDDEN: not a user token
    #[response(status = 403, content_type = PROBLEM_JSON)]
    Forbidden(Problem),
}

/// Settlement routes: users for themselves, the order service for any user.
#[derive(IntoResponses)]
pub enum SettlementErrors {
    #[response(status = 401, content_type = PROBLEM_JSON, description = UNAUTHENTICATED)]
    Unauthenticated(Problem),
    /// FORBIDDEN: not a user or service token, or a user naming another user
    #[response(status = 403, content_type = PROBLEM_JSON)]
    Forbidden(Problem),
}

/// Routes that address one resource by id.
#[derive(IntoResponses)]
pub enum NotFound {
    /// NOT_FOUND: no such resource, or another shop's or user's (existence does not leak)
    #[response(status = 404, content_type = PROBLEM_JSON)]
    NotFound(Problem),
}

/// Routes with a JSON body: what the body reader refuses before any field is read.
#[derive(IntoResponses)]
pub enum JsonBodyErrors {
    #[response(status = 400, content_type = PROBLEM_JSON, description = MALFORMED_JSON)]
    Malformed(Problem),
    /// PAYLOAD_TOO_LARGE: the body is over `server.max_body_bytes` (64 KiB by default)
    #[response(status = 413, content_type = PROBLEM_JSON)]
    PayloadTooLarge(Problem),
    /// UNSUPPORTED_MEDIA_TYPE: the body is not sent as `application/json`
    #[response(status = 415, content_type = PROBLEM_JSON)]
    UnsupportedMediaType(Problem),
}

/// Routes whose only 422 is the field check.
#[derive(IntoResponses)]
pub enum ValidationFailed {
    /// VALIDATION_FAILED: every bad field at once, in `errors[]`
    #[response(status = 422, content_type = PROBLEM_JSON)]
    ValidationFailed(Problem),
}

/// The distribution upload: a multipart form streamed to disk, then the file inspected.
#[derive(IntoResponses)]
pub enum UploadErrors {
    /// MALFORMED_REQUEST: a broken multipart body
    #[response(status = 400, content_type = PROBLEM_JSON)]
    Malformed(Problem),
    /// PAYLOAD_TOO_LARGE: the file is over the upload size limit
    #[response(status = 413, content_type = PROBLEM_JSON)]
    PayloadTooLarge(Problem),
    /// UNSUPPORTED_MEDIA_TYPE: not multipart, or the file is not a CSV or XLSX
    #[response(status = 415, content_type = PROBLEM_JSON)]
    UnsupportedMediaType(Problem),
    #[response(
        status = 422,
        content_type = PROBLEM_JSON,
        description = "VALIDATION_FAILED (bad fields, or a file refused: zip bomb, giant cell, oversized shared strings, no rows, no user ids) or IDEMPOTENCY_KEY_REUSED"
    )]
    Invalid(Problem),
}
