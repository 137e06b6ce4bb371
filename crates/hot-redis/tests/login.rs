//! `RedisLoginAttempts` against the login-attempts conformance suite: a real Redis under a
//! random key prefix per scenario.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestPrefix, conn};
use stampede_core::login::LoginAttempts;
use stampede_hot_redis::RedisLoginAttempts;

async fn run(scenario: impl AsyncFnOnce(&dyn LoginAttempts)) {
    let prefix = TestPrefix::new();
    scenario(&RedisLoginAttempts::new(conn().await, &prefix.0)).await;
}

stampede_conformance::login_attempts_suite!(run);
