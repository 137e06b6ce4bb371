//! What handlers share: the use cases and the readiness checks, behind cheap `Arc`s.

use async_trait::async_trait;
use stampede_core::auth::AuthService;
use stampede_core::backoffice::BackOffice;
use stampede_core::claims::Claims;
use stampede_core::distributions::Distributions;
use stampede_core::reminders::Reminders;
use stampede_core::settlements::Settlements;
use std::sync::Arc;

/// One dependency `/readyz` asks about.
#[async_trait]
pub trait HealthCheck: Send + Sync + 'static {
    /// The dependency's name (`database`, `redis`, `broker`).
    fn name(&self) -> &'static str;
    /// Whether this node cannot serve its core path without it (then `/readyz` answers 503).
    fn critical(&self) -> bool;
    /// Its circuit breaker's state (`closed`, `half_open`, `open`), when it has one; an
    /// open breaker means down without asking.
    fn breaker(&self) -> Option<&'static str> {
        None
    }
    async fn check(&self) -> Result<(), String>;
}

/// Handed to every handler: one `Arc`, so a request clones a pointer, not the set.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub backoffice: Arc<BackOffice>,
    pub auth: Arc<AuthService>,
    pub claims: Arc<Claims>,
    pub discovery: Arc<stampede_core::discovery::Discovery>,
    pub distributions: Arc<Distributions>,
    pub settlements: Arc<Settlements>,
    pub reminders: Arc<Reminders>,
    pub uploads: crate::routes::distributions::UploadConfig,
    /// Flow control: rules in force, rate limiter, in-flight slots.
    pub flow: Arc<crate::flow::FlowControl>,
    pub checks: Arc<Vec<Arc<dyn HealthCheck>>>,
    /// Time each readiness check gets (the whole answer stays under a second).
    pub readiness_timeout: std::time::Duration,
    /// Renders the Prometheus exposition of this process's metrics.
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
}
