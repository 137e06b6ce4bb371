//! Behaviour of the MySQL store against a real MariaDB, on a single-shard (1×1) and a
//! sharded (2×4, or 2×2) layout. Each test creates its own `stampede_t_<random>_<i>`
//! databases and drops them when it ends, so tests run in parallel and can repeat.
//!
//! The server is `STAMPEDE_TEST_MYSQL` (default `mysql://root@127.0.0.1:3306`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod helpers;
mod claim_log;
mod conformance;
mod coupons;
mod distributions;
mod reminders;
mod schema;
mod settlements;
mod templates;
