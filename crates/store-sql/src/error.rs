//! Error policy of the SQL adapters: every `sqlx::Error` becomes a `StoreError` in `db_err`,
//! the one place that decides what a duplicate key or an unreadable value means to the use
//! cases. A stored value that decodes but breaks a domain rule is `corrupt`.

use stampede_core::ports::{Dependency, StoreError};

/// Maps a driver error: unique-key violations → `Duplicate`, values that cannot be read back
/// → `Corrupt`, a database that cannot be reached or did not answer in time (I/O, TLS, pool
/// timeout or closed, a connection-class SQLSTATE `08…`, SQLite's I/O and cannot-open
/// errors) → `Unavailable { Database }`, so the use cases answer 503 naming it and its
/// breaker counts it; everything else (syntax, lock timeouts, refused rows) → `Backend`.
/// The driver's error is kept as the source.
pub fn db_err(e: sqlx::Error) -> StoreError {
    if is_unique_violation(&e)
        && let Some(d) = e.as_database_error()
    {
        return StoreError::Duplicate(d.message().to_owned());
    }
    if is_unreachable(&e) {
        return StoreError::Unavailable {
            dependency: Dependency::Database,
            source: Box::new(e),
        };
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

/// SQLite's primary result codes for "the file cannot be used": SQLITE_IOERR and
/// SQLITE_CANTOPEN (extended codes carry them in their low byte).
const SQLITE_IOERR: u32 = 10;
const SQLITE_CANTOPEN: u32 = 14;

/// Whether `e` says the database is unreachable or not answering rather than answering "no".
pub fn is_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|code| {
            // SQLSTATE is 5 characters; SQLite's extended result codes are numbers < 10,000.
            if code.len() == 5 {
                code.starts_with("08")
            } else {
                code.parse::<u32>()
                    .is_ok_and(|c| matches!(c & 0xff, SQLITE_IOERR | SQLITE_CANTOPEN))
            }
        }),
        _ => false,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_databases_are_unavailable_and_answers_are_not() {
        for e in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        ] {
            assert!(matches!(
                db_err(e),
                StoreError::Unavailable {
                    dependency: Dependency::Database,
                    ..
                }
            ));
        }
        assert!(matches!(
            db_err(sqlx::Error::RowNotFound),
            StoreError::Backend(_)
        ));
    }
}
