//! `MemoryRateLimiter` against the rate-limiter conformance suite (`stampede-conformance`).

use stampede_core::flow::RateLimiter;
use stampede_hot_memory::MemoryRateLimiter;
use std::sync::Arc;

async fn run(scenario: impl AsyncFnOnce(Arc<dyn RateLimiter>)) {
    scenario(Arc::new(MemoryRateLimiter::new())).await;
}

stampede_conformance::rate_limiter_suite!(run);
