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
