//! Structured logs: JSON lines by default (one object per event, with the request id on
//! access lines), or human-readable with `log.format = "pretty"`.

use crate::config::{LogFormat, LogSettings};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls (tests) are no-ops.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_set = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

static PROMETHEUS: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
    std::sync::OnceLock::new();

/// The process-wide Prometheus recorder (installed on first use; one per process).
fn prometheus() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .ok()
        })
        .clone()
}

/// Renders `/metrics`: the recorded counters plus gauges read from the claim_path at render time.
pub fn metrics_renderer(
    claim_path: &crate::claim_path::ClaimPath,
) -> std::sync::Arc<dyn Fn() -> String + Send + Sync> {
    let handle = prometheus();
    let catalog = claim_path.catalog.clone();
    let memory = claim_path.memory.clone();
    std::sync::Arc::new(move || {
        metrics::gauge!("stampede_template_db_queries").set(catalog.db_queries() as f64);
        if let Some(m) = &memory {
            let (batches, claims, failed) = m.writer_stats().snapshot();
            metrics::gauge!("stampede_group_commit_batches").set(batches as f64);
            metrics::gauge!("stampede_group_commit_claims").set(claims as f64);
            metrics::gauge!("stampede_group_commit_failed_batches").set(failed as f64);
        }
        handle.as_ref().map(|h| h.render()).unwrap_or_default()
    })
}
