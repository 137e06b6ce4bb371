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
    fn name(&self) -> &'static str;
    async fn check(&self) -> Result<(), String>;
}

#[derive(Clone)]
pub struct AppState {
    pub backoffice: Arc<BackOffice>,
    pub auth: Arc<AuthService>,
    pub claims: Arc<Claims>,
    pub distributions: Arc<Distributions>,
    pub settlements: Arc<Settlements>,
    pub reminders: Arc<Reminders>,
    pub uploads: crate::routes::distributions::UploadConfig,
    /// Flow control: rules in force, rate limiter, in-flight slots.
    pub flow: Arc<crate::flow::FlowControl>,
    pub checks: Arc<Vec<Arc<dyn HealthCheck>>>,
    /// Renders the Prometheus exposition of this process's metrics.
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
}
