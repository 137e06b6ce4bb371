//! Operations endpoints: liveness and readiness.

use crate::error::{ApiError, ApiResult, PROBLEM_JSON, Problem};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use stampede_domain::ErrorCode;
use std::collections::BTreeMap;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub status: &'static str,
    /// Each dependency and `ok` or why it failed.
    pub checks: BTreeMap<&'static str, String>,
}

/// Alive: the process answers. No dependency is consulted.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Ready: every dependency (databases, and later Redis/NATS) answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, body = Readiness),
    (status = 503, body = Problem, content_type = PROBLEM_JSON, description = "UNAVAILABLE: a dependency is down"),
))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Readiness>> {
    let results = futures::future::join_all(
        state
            .checks
            .iter()
            .map(|c| async move { (c.name(), c.check().await) }),
    )
    .await;
    let mut checks = BTreeMap::new();
    let mut failed = Vec::new();
    for (name, r) in results {
        match r {
            Ok(()) => {
                checks.insert(name, "ok".to_owned());
            }
            Err(e) => {
                tracing::warn!(dependency = name, error = %e, "readiness check failed");
                failed.push(name);
                checks.insert(name, "unavailable".to_owned());
            }
        }
    }
    if failed.is_empty() {
        Ok(Json(Readiness {
            status: "ready",
            checks,
        }))
    } else {
        Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("not ready: {} unavailable", failed.join(", ")),
        ))
    }
}

/// Prometheus metrics of this process.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(
    State(state): State<AppState>,
) -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        (state.metrics)(),
    )
}
