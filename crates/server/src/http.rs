//! The HTTP API over the services, the claim path and the use cases: its state (uploads,
//! health checks, metrics, flow control) and the router.

use crate::claim_path::ClaimPath;
use crate::config::Settings;
use crate::services::Services;
use crate::storage::{DatabaseCheck, RedisCheck};
use crate::use_cases::UseCases;
use stampede_api::flow::FlowControl;
use stampede_api::routes::distributions::UploadConfig;
use stampede_api::{AppState, HealthCheck, HttpLimits, Shared};
use stampede_core::ports::Dependency;
use std::sync::Arc;

pub fn router(
    settings: &Settings,
    services: &Services,
    claim_path: &ClaimPath,
    use_cases: &UseCases,
    flow: Arc<FlowControl>,
) -> axum::Router {
    let work_dir = settings.distribution_dir();
    let uploads = UploadConfig {
        upload_dir: work_dir.join("uploads"),
        work_dir,
        max_bytes: settings.distribution.max_upload_bytes,
        limits: settings.distribution.sheet_limits(),
    };
    let mut checks: Vec<Arc<dyn HealthCheck>> = vec![Arc::new(DatabaseCheck {
        templates: services.stores.templates.clone(),
        breaker: services.stores.mysql.as_ref().map(|m| m.breaker().clone()),
        // Distributed claims go to Redis and the claim log: MySQL down only degrades.
        critical: services.redis.is_none(),
    })];
    if let Some(redis) = &services.redis {
        checks.push(Arc::new(RedisCheck(redis.clone())));
    }
    let state = AppState::new(Shared {
        backoffice: services.backoffice.clone(),
        auth: services.auth.clone(),
        claims: claim_path.claims.clone(),
        discovery: claim_path.discovery.clone(),
        distributions: use_cases.distributions.clone(),
        settlements: use_cases.settlements.clone(),
        reminders: use_cases.reminders.clone(),
        uploads,
        flow,
        checks: Arc::new(checks),
        readiness_timeout: settings.resilience.readiness_timeout,
        metrics: {
            let render = crate::telemetry::metrics_renderer(
                claim_path,
                crate::telemetry::RenderSources {
                    pool_stats: services.stores.pool_stats.clone(),
                    data_dir: settings.server.data_dir.clone(),
                },
            );
            let breakers = services.breakers.clone();
            let used: Vec<Dependency> = std::iter::once(Dependency::Database)
                .chain(services.redis.as_ref().map(|_| Dependency::Redis))
                .collect();
            breakers.register_metrics(&used);
            Arc::new(move || {
                breakers.publish(&used);
                render()
            })
        },
    });
    stampede_api::router(
        state,
        &HttpLimits {
            max_body_bytes: settings.http.max_body_bytes,
        },
    )
}
