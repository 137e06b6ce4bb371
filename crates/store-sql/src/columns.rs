//! Typed reads and binds that work on any sqlx backend, so row decoding and binding are
//! written once for both dialects. The bounds on the blanket impls say which Rust types each
//! backend must map; SQLite and MySQL both do.

use crate::error::db_err;
use sqlx::query::Query;
use sqlx::{ColumnIndex, Database, Decode, Encode, Row, Type};
use stampede_core::ports::StoreError;

/// Reads a column of a row by name; a missing column or a value of another type is
/// `StoreError::Corrupt`.
pub trait Columns {
    fn int(&self, column: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError>;
    fn text(&self, column: &str) -> Result<String, StoreError>;
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError>;
    fn flag(&self, column: &str) -> Result<bool, StoreError>;
}

impl<R> Columns for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    fn int(&self, column: &str) -> Result<i64, StoreError> {
        self.try_get(column).map_err(db_err)
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        self.try_get(column).map_err(db_err)
    }

    fn text(&self, column: &str) -> Result<String, StoreError> {
        self.try_get(column).map_err(db_err)
    }

    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        self.try_get(column).map_err(db_err)
    }

    fn flag(&self, column: &str) -> Result<bool, StoreError> {
        self.try_get(column).map_err(db_err)
    }
}

/// A row read through a column-name prefix: in a join whose tables share column names, one
/// side is selected as `<prefix><column>` and read with the unprefixed names.
pub struct Prefixed<'r, R> {
    row: &'r R,
    prefix: &'static str,
}

impl<'r, R: Columns> Prefixed<'r, R> {
    pub fn new(row: &'r R, prefix: &'static str) -> Self {
        Self { row, prefix }
    }

    fn name(&self, column: &str) -> String {
        format!("{}{column}", self.prefix)
    }
}

impl<R: Columns> Columns for Prefixed<'_, R> {
    fn int(&self, column: &str) -> Result<i64, StoreError> {
        self.row.int(&self.name(column))
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        self.row.opt_int(&self.name(column))
    }

    fn text(&self, column: &str) -> Result<String, StoreError> {
        self.row.text(&self.name(column))
    }

    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        self.row.opt_text(&self.name(column))
    }

    fn flag(&self, column: &str) -> Result<bool, StoreError> {
        self.row.flag(&self.name(column))
    }
}

/// Binds the next placeholder of a query. Values are encoded at once, so borrowed text need
/// not outlive the call.
pub trait Binder: Sized {
    fn int(self, v: i64) -> Self;
    fn opt_int(self, v: Option<i64>) -> Self;
    fn text(self, v: &str) -> Self;
    fn opt_text(self, v: Option<&str>) -> Self;
    fn flag(self, v: bool) -> Self;
}

impl<DB> Binder for Query<'_, DB, <DB as Database>::Arguments>
where
    DB: Database,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> bool: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<&'t str>: Encode<'t, DB> + Type<DB>,
{
    fn int(self, v: i64) -> Self {
        self.bind(v)
    }

    fn opt_int(self, v: Option<i64>) -> Self {
        self.bind(v)
    }

    fn text(self, v: &str) -> Self {
        self.bind(v)
    }

    fn opt_text(self, v: Option<&str>) -> Self {
        self.bind(v)
    }

    fn flag(self, v: bool) -> Self {
        self.bind(v)
    }
}
