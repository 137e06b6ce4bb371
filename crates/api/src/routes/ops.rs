//! Operations endpoints: liveness, readiness (each dependency with its state and breaker)
//! and metrics.

use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// `/readyz`: whether this node can serve, and each dependency it uses.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` (every dependency up), `degraded` (some down, the core path still served:
    /// 200) or `unavailable` (a dependency the core path needs is down: 503).
    pub status: &'static str,
    /// One entry per dependency, by name (`database`, `redis`).
    pub checks: BTreeMap<&'static str, DependencyCheck>,
}

#[derive(Serialize, ToSchema)]
pub struct DependencyCheck {
    /// `up` or `down`.
    pub state: &'static str,
    /// The dependency's circuit breaker: `closed`, `half_open` or `open` (an open breaker is
    /// down without asking).
    pub breaker: &'static str,
    /// How long the check took.
    pub latency_ms: u64,
    /// Why it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Alive: the process answers. No dependency is consulted.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Ready: every dependency this node uses is checked at once, each within
/// `resilience.readiness_timeout_ms`, so the answer comes within a second whatever fails.
/// 200 when the node can serve its core path (`degraded` names what is down), 503 when it
/// cannot (distributed mode without Redis).
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, body = Readiness, description = "ready, or degraded with the failing checks named"),
    (status = 503, body = Readiness, description = "unavailable: a dependency of the core path is down"),
))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let timeout = state.readiness_timeout;
    let results = futures::future::join_all(state.checks.iter().map(|c| async move {
        let started = Instant::now();
        let breaker = c.breaker();
        let outcome = if breaker == Some("open") {
            Err("circuit breaker open".to_owned())
        } else {
            match tokio::time::timeout(timeout, c.check()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
            }
        };
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        (c.name(), c.critical(), breaker, latency_ms, outcome)
    }))
    .await;
    let mut checks = BTreeMap::new();
    let (mut degraded, mut unavailable) = (false, false);
    for (name, critical, breaker, latency_ms, outcome) in results {
        let error = match outcome {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(dependency = name, error = %e, "readiness check failed");
                degraded = true;
                unavailable |= critical;
                Some(e)
            }
        };
        checks.insert(
            name,
            DependencyCheck {
                state: if error.is_none() { "up" } else { "down" },
                breaker: breaker.unwrap_or("closed"),
                latency_ms,
                error,
            },
        );
    }
    let (code, status) = if unavailable {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    } else if degraded {
        (StatusCode::OK, "degraded")
    } else {
        (StatusCode::OK, "ready")
    };
    (code, Json(Readiness { status, checks }))
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
