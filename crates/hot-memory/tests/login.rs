//! `MemoryLoginAttempts` against the login-attempts conformance suite.

use stampede_core::login::LoginAttempts;
use stampede_hot_memory::MemoryLoginAttempts;

async fn run(scenario: impl AsyncFnOnce(&dyn LoginAttempts)) {
    scenario(&MemoryLoginAttempts::new()).await;
}

stampede_conformance::login_attempts_suite!(run);
