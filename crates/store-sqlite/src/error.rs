//! The one place sqlx errors become `StoreError`, so every query maps them the same way.

use stampede_core::ports::StoreError;

/// Unique violations → `Duplicate`, unreadable rows → `Corrupt`, anything else → `Backend`.
pub(crate) fn db(e: sqlx::Error) -> StoreError {
    if let Some(d) = e.as_database_error()
        && d.is_unique_violation()
    {
        return StoreError::Duplicate(d.message().to_owned());
    }
    match e {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(e.to_string()),
        other => StoreError::Backend(Box::new(other)),
    }
}

/// A request the store refuses because it contradicts what is stored (e.g. claims for a
/// template that does not exist); reported as a backend failure.
#[derive(Debug, thiserror::Error)]
#[error("SQLite store: {0}")]
pub(crate) struct Refused(pub(crate) String);

pub(crate) fn refused(what: impl Into<String>) -> StoreError {
    StoreError::Backend(Box::new(Refused(what.into())))
}
