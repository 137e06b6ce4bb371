//! Errors particular to the MySQL adapter. Driver errors become `StoreError` through the
//! shared `stampede_store_sql::db_err`, as in the SQLite adapter; what is here is what only
//! MySQL has: server error numbers, SQLSTATE classes, lock waits it gives up on, and its
//! configuration.

use stampede_core::ports::StoreError;

/// The store was configured in a way it cannot serve (reported as a backend error).
#[derive(Debug, thiserror::Error)]
#[error("MySQL store: {0}")]
pub struct ConfigError(pub String);

/// The server's error number, when `e` is an error the server reported.
pub(crate) fn error_number(e: &sqlx::Error) -> Option<u16> {
    e.as_database_error()
        .and_then(|d| d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .map(|d| d.number())
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

pub(crate) fn gave_up(what: impl Into<String>) -> StoreError {
    StoreError::Backend(Box::new(GaveUp(what.into())))
}
