//! HTTP-level behavioural suite. It runs the real server (port 0) against the backend named
//! by `STAMPEDE_TEST_BACKEND`: `sqlite` (default), `mysql-1x1` or `mysql-2x4`; the README's
//! test command runs it once per backend, so the same behaviour is checked on all three.

mod auth;
mod bad_input;
mod cli;
#[allow(dead_code)] // the crash and fault tests use the rest
#[path = "../common/mod.rs"]
mod common;
mod discovery;
mod distribution;
mod event_schemas;
mod events;
mod flow;
mod helpers;
mod manage;
mod ops;
mod outcome;
mod reminders;
mod settlement;
mod shopper;
mod templates;
mod upgrade;
