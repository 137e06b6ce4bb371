//! `AppError`: what a use case can answer besides success. Each variant names the stable API
//! code it becomes; the HTTP layer only renders it.

use stampede_domain::{ErrorCode, ValidationErrors};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("validation failed: {0}")]
    Validation(ValidationErrors),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// A 409 with a specific code (`CONFLICT`, `TEMPLATE_TERMINATED`, ...).
    #[error("{detail}")]
    Conflict { code: ErrorCode, detail: String },
    #[error("this Idempotency-Key was already used with a different request body")]
    IdempotencyKeyReused,
    /// A dependency is down or did not answer in time (`dependency` names it when known).
    #[error("a dependency is unavailable")]
    Unavailable {
        dependency: Option<crate::ports::Dependency>,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A claim was sent but its answer was lost and a lookup could not tell whether it
    /// happened: the client retries with the same `Idempotency-Key` (503 `OUTCOME_UNKNOWN`).
    #[error(
        "the claim may or may not have been made; retry with the same Idempotency-Key to learn its outcome"
    )]
    OutcomeUnknown(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Too many attempts (429 `RATE_LIMITED`); try again after `retry_after_secs`.
    #[error("{detail}")]
    RateLimited {
        detail: String,
        retry_after_secs: u64,
    },
    /// This node sheds the request to protect its core path (503 `OVERLOADED`).
    #[error("{detail}")]
    Overloaded {
        detail: String,
        retry_after_secs: u64,
    },
    /// A claim without an `Idempotency-Key` where one is required (400).
    #[error("claims need an Idempotency-Key header, so that a retry can never claim twice")]
    IdempotencyKeyRequired,
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl AppError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AppError::Validation(_) => ErrorCode::ValidationFailed,
            AppError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            AppError::Forbidden(_) => ErrorCode::Forbidden,
            AppError::NotFound(_) => ErrorCode::NotFound,
            AppError::Conflict { code, .. } => *code,
            AppError::IdempotencyKeyReused => ErrorCode::IdempotencyKeyReused,
            AppError::Unavailable { .. } => ErrorCode::Unavailable,
            AppError::OutcomeUnknown(_) => ErrorCode::OutcomeUnknown,
            AppError::IdempotencyKeyRequired => ErrorCode::IdempotencyKeyRequired,
            AppError::RateLimited { .. } => ErrorCode::RateLimited,
            AppError::Overloaded { .. } => ErrorCode::Overloaded,
            AppError::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        AppError::Validation(ValidationErrors::single(field, message))
    }

    pub fn not_found(what: &str) -> Self {
        AppError::NotFound(format!("{what} not found"))
    }
}

impl From<crate::ports::StoreError> for AppError {
    fn from(e: crate::ports::StoreError) -> Self {
        match e {
            crate::ports::StoreError::Backend(_) => AppError::Unavailable {
                dependency: None,
                source: Box::new(e),
            },
            crate::ports::StoreError::Unavailable { dependency, .. } => AppError::Unavailable {
                dependency: Some(dependency),
                source: Box::new(e),
            },
            crate::ports::StoreError::OutcomeUnknown { .. } => {
                AppError::OutcomeUnknown(Box::new(e))
            }
            other => AppError::Internal(Box::new(other)),
        }
    }
}

impl From<ValidationErrors> for AppError {
    fn from(e: ValidationErrors) -> Self {
        AppError::Validation(e)
    }
}

impl From<crate::ids::IdError> for AppError {
    fn from(e: crate::ids::IdError) -> Self {
        // Without a confirmed worker-id lease the missing piece is Redis, which holds it.
        let dependency = matches!(e, crate::ids::IdError::NoWorkerLease)
            .then_some(crate::ports::Dependency::Redis);
        AppError::Unavailable {
            dependency,
            source: Box::new(e),
        }
    }
}
