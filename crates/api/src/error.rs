//! Error policy for the HTTP layer, in one place:
//!
//! - Every failure leaves as `application/problem+json` (RFC 9457) with the fields `type`,
//!   `title`, `status`, `detail`, `code`, `request_id`, and `errors[]` for validation.
//!   `code` is the stable machine-readable name; clients branch on it.
//! - Use cases return `AppError`; extractors build `ApiError` directly. Both end here.
//! - A 5xx never carries internals: the detail is generic and the cause chain goes to the log
//!   with the request id, so an operator can find it from the client's report.

use crate::request_id::current_request_id;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use stampede_core::AppError;
use stampede_domain::{ErrorCode, FieldError};
use utoipa::ToSchema;

/// The media type of every error response.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:stampede:problem:<CODE>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    pub code: ErrorCode,
    pub request_id: String,
    /// Present for `VALIDATION_FAILED`: every offending field, all at once.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Present on a 503 when one dependency is missing: `database`, `redis` or `broker`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dependency: Option<&'static str>,
}

#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    detail: String,
    errors: Vec<FieldError>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
    /// Seconds for `Retry-After` (429/503); 1 when absent.
    retry_after: Option<u64>,
    /// The dependency a 503 is about.
    dependency: Option<stampede_core::ports::Dependency>,
}

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            errors: Vec::new(),
            source: None,
            retry_after: None,
            dependency: None,
        }
    }

    /// Names the dependency a 503 is about (the problem's `dependency` member).
    pub fn dependency(mut self, d: stampede_core::ports::Dependency) -> Self {
        self.dependency = Some(d);
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn not_found() -> Self {
        Self::new(ErrorCode::NotFound, "no such resource")
    }

    pub fn validation(errors: stampede_domain::ValidationErrors) -> Self {
        let n = errors.as_slice().len();
        Self {
            code: ErrorCode::ValidationFailed,
            detail: format!("{n} field(s) failed validation; see errors"),
            errors: errors.into_vec(),
            source: None,
            retry_after: None,
            dependency: None,
        }
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        let code = e.code();
        match e {
            AppError::Validation(errs) => ApiError::validation(errs),
            AppError::Unavailable { dependency, source } => ApiError {
                code,
                detail: String::new(),
                errors: Vec::new(),
                source: Some(source),
                retry_after: None,
                dependency,
            },
            AppError::OutcomeUnknown(src) => ApiError {
                code,
                detail: AppError::OutcomeUnknown(String::new().into()).to_string(),
                errors: Vec::new(),
                source: Some(src),
                retry_after: None,
                dependency: None,
            },
            AppError::RateLimited {
                detail,
                retry_after_secs,
            }
            | AppError::Overloaded {
                detail,
                retry_after_secs,
            } => ApiError::new(code, detail).retry_after(retry_after_secs.max(1)),
            AppError::Internal(src) => ApiError {
                code,
                detail: String::new(),
                errors: Vec::new(),
                source: Some(src),
                retry_after: None,
                dependency: None,
            },
            other => ApiError::new(code, other.to_string()),
        }
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let request_id = current_request_id();
        let detail = if status.is_server_error() {
            let cause = self
                .source
                .as_deref()
                .map(|s| chain(s))
                .unwrap_or_else(|| self.detail.clone());
            // Shedding is the node working as designed under overload: it is counted
            // (`stampede_requests_shed_total`), and a log line per refusal would add load.
            if self.code != ErrorCode::Overloaded {
                tracing::error!(request_id = %request_id, code = self.code.as_str(), cause = %cause, "request failed");
            }
            match (self.code, self.dependency) {
                (ErrorCode::Unavailable, Some(d)) => {
                    format!("the {d} is unavailable; retry later")
                }
                (ErrorCode::Unavailable, None) => {
                    "a dependency is unavailable; retry later".to_owned()
                }
                (ErrorCode::OutcomeUnknown | ErrorCode::Overloaded, _) => self.detail.clone(),
                _ => {
                    "an internal error occurred; quote the request_id when reporting it".to_owned()
                }
            }
        } else {
            self.detail
        };
        let problem = Problem {
            kind: format!("urn:stampede:problem:{}", self.code.as_str()),
            title: self.code.title(),
            status: status.as_u16(),
            detail,
            code: self.code,
            request_id,
            errors: self.errors,
            dependency: self.dependency.map(|d| d.as_str()),
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut resp = (status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match self.code {
            ErrorCode::Unauthenticated => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ErrorCode::Unavailable
            | ErrorCode::RateLimited
            | ErrorCode::OutcomeUnknown
            | ErrorCode::Overloaded => {
                let secs = HeaderValue::from(self.retry_after.unwrap_or(1));
                headers.insert(header::RETRY_AFTER, secs);
            }
            _ => {}
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
