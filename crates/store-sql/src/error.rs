//! Error policy of the SQL adapters: every `sqlx::Error` becomes a `StoreError` in `db_err`,
//! the one place that decides what a duplicate key or an unreadable value means to the use
//! cases. A stored value that decodes but breaks a domain rule is `corrupt`.

use stampede_core::ports::StoreError;

/// Maps a driver error: unique-key violations → `Duplicate`, values that cannot be read back
/// → `Corrupt`, everything else (connection, syntax, lock timeouts) → `Backend`, with the
/// driver's error kept as the source.
pub fn db_err(e: sqlx::Error) -> StoreError {
    if is_unique_violation(&e)
        && let Some(d) = e.as_database_error()
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

pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// A stored value of `what` (e.g. `"template 7"`) whose `field` breaks a domain rule.
pub fn corrupt(what: impl std::fmt::Display, field: &str) -> StoreError {
    StoreError::Corrupt(format!("{what}: bad {field}"))
}

/// A request the store refuses because it contradicts what is stored or how the store is
/// set up (claims for a template that does not exist, a partition it does not have).
#[derive(Debug, thiserror::Error)]
#[error("the store refused: {0}")]
pub struct Refused(pub String);

/// `Refused`, as the `Backend` error the use cases see.
pub fn refused(what: impl Into<String>) -> StoreError {
    StoreError::Backend(Box::new(Refused(what.into())))
}
