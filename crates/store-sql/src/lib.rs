//! `stampede-store-sql`: what the two SQL adapters (`stampede-store-sqlite` and
//! `stampede-store-mysql`) share, written once and generic over `sqlx::Database`, so both
//! dialects read and write the same columns with the same checks.
//!
//! - `error`: the one mapping of driver errors to `StoreError` (unique violation →
//!   `Duplicate`, unreadable value → `Corrupt`, anything else → `Backend`), and the names of
//!   the adapters' own refusals.
//! - `columns`: `Columns` (typed reads of a row by column name, for any sqlx row) and
//!   `Binder` (typed binds onto any sqlx query).
//! - `rows`: `SqlRow` for each stored form (`stampede_core::records`, outbox events,
//!   accounts): its column list in bind order, how it is read and how it is bound; plus the
//!   settlement readers.
//! - `pool`: a connection pool's occupancy for `/metrics`.
//! - `leases`: the partition-lease tables and owner rules (the grant's upsert is dialect's).
//! - `text`: SQL text both dialects accept: placeholder lists, multi-row inserts, the template
//!   and coupon status conditions, `LIKE` escaping.
//!
//! Statements that differ by dialect (upserts, `FOR UPDATE`, `UPDATE … FROM`, table names of
//! the shard layout) stay in their adapter.

pub mod columns;
pub mod error;
pub mod leases;
pub mod pool;
pub mod rows;
pub mod text;

pub use columns::{Binder, Columns, Prefixed};
pub use error::{db_err, is_unreachable, refused};
pub use pool::pool_gauge;
pub use rows::SqlRow;
