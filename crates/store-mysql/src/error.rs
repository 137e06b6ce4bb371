//! Error policy of the adapter: every `sqlx::Error` becomes a `StoreError` in `db_err`, the
//! one place that decides what a duplicate key or an unreadable row means to the use cases.

use sqlx::mysql::{MySql, MySqlRow};
use sqlx::{Decode, Row, Type};
use stampede_core::ports::StoreError;

/// The store was configured or called in a way it cannot serve (reported as a backend error).
#[derive(Debug, thiserror::Error)]
#[error("MySQL store: {0}")]
pub struct ConfigError(pub String);

/// Maps a driver error: unique-key violations → `Duplicate`, values that cannot be read back →
/// `Corrupt`, everything else (connection, syntax, lock timeouts) → `Backend`.
pub(crate) fn db_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Duplicate(d.message().to_owned())
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. } => StoreError::Corrupt(e.to_string()),
        other => StoreError::Backend(Box::new(other)),
    }
}

/// The server's error number, when `e` is an error the server reported.
pub(crate) fn error_number(e: &sqlx::Error) -> Option<u16> {
    e.as_database_error()
        .and_then(|d| d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .map(|d| d.number())
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// Whether the server refused a statement for the values it was given (SQLSTATE class 22,
/// data exception, or 23, integrity constraint), so one of its rows may be at fault; not for
/// a lost connection, a lock wait timeout or a deadlock, which retrying the same rows may fix.
pub(crate) fn is_data_error(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|state| state.starts_with("22") || state.starts_with("23"))
}

/// A condition the store gave up on (not a driver error), e.g. a lock wait that timed out.
#[derive(Debug, thiserror::Error)]
#[error("MySQL store: {0}")]
pub(crate) struct GaveUp(String);

/// A misuse or misconfiguration, as a `StoreError`.
pub(crate) fn misuse(what: impl Into<String>) -> StoreError {
    StoreError::Backend(Box::new(ConfigError(what.into())))
}

pub(crate) fn gave_up(what: impl Into<String>) -> StoreError {
    StoreError::Backend(Box::new(GaveUp(what.into())))
}

/// Reads one column, mapping a missing or mistyped column to `Corrupt`.
pub(crate) fn col<'r, T>(row: &'r MySqlRow, name: &str) -> Result<T, StoreError>
where
    T: Decode<'r, MySql> + Type<MySql>,
{
    row.try_get(name).map_err(db_err)
}
