//! Logs and metrics. Logs go to stderr through a writer thread (`log_writer`): a request
//! formats its line and queues it, never waiting on the terminal or a pipe; a full queue drops
//! the line and counts it (`stampede_log_lines_dropped_total`) instead of slowing requests down. Lines
//! are human-readable when stderr is a terminal and JSON (one object per event, with the
//! request id on access lines) otherwise, unless `log.format` says which.

use crate::config::{LogFormat, LogSettings, TracingSettings};
use crate::log_writer::{self, Guard, QueueWriter};
use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};
use tracing_subscriber::EnvFilter;

/// Writes out the queue when dropped; kept until [`flush`] (the end of `main`).
static GUARD: Mutex<Option<Guard>> = Mutex::new(None);
static WRITER: OnceLock<QueueWriter> = OnceLock::new();

/// Installs the global subscriber once; later calls (tests) are no-ops. With
/// `tracing.otlp_endpoint` set, the request and job-step spans are exported too (`otlp`).
pub fn init(settings: &LogSettings, tracing_settings: &TracingSettings) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    if WRITER.get().is_some() {
        return;
    }
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let Ok((writer, guard)) = log_writer::spawn(settings.queue_bytes, std::io::stderr()) else {
        eprintln!("warning: cannot start the log writer thread; logging stays off");
        return;
    };
    let dropped = writer.clone();
    let pretty = match settings.format {
        LogFormat::Auto => std::io::stderr().is_terminal(),
        LogFormat::Json => false,
        LogFormat::Pretty => true,
    };
    let logs = if pretty {
        tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .event_format(crate::access_log::AccessOrJson {
                json: tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false),
            })
            .with_filter(filter)
            .boxed()
    };
    let registry = tracing_subscriber::registry().with(logs);
    let (export, provider) = match crate::otlp::layer(tracing_settings) {
        Ok(Some((layer, provider))) => {
            // Exported traces lead somewhere: events record them too.
            stampede_core::trace::record_own_traces(true);
            (Some(layer), Some(provider))
        }
        Ok(None) => (None, None),
        Err(e) => {
            eprintln!("warning: spans are not exported: {e:#}");
            (None, None)
        }
    };
    if registry.with(export).try_init().is_ok() {
        let _first = WRITER.set(dropped);
        *GUARD.lock().unwrap_or_else(|p| p.into_inner()) = Some(guard);
        *PROVIDER.lock().unwrap_or_else(|p| p.into_inner()) = provider;
    }
}

/// The span exporter, shut down (its queue sent) by [`flush`].
static PROVIDER: Mutex<Option<opentelemetry_sdk::trace::SdkTracerProvider>> = Mutex::new(None);

/// Writes out every queued line (before the process exits).
pub fn flush() {
    if let Some(p) = PROVIDER.lock().unwrap_or_else(|p| p.into_inner()).take()
        && let Err(e) = p.shutdown()
    {
        tracing::warn!(error = %e, "the span exporter did not shut down cleanly");
    }
    drop(GUARD.lock().unwrap_or_else(|p| p.into_inner()).take());
}

/// Log lines dropped because the writer's queue was full.
pub fn dropped_lines() -> u64 {
    WRITER.get().map_or(0, QueueWriter::dropped)
}
static PROMETHEUS: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
    std::sync::OnceLock::new();

/// Buckets of the other latency histograms (`*_seconds`): 0.1 ms to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Buckets of batch sizes: powers of two up to 8192.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];

/// The process-wide Prometheus recorder (installed on first use; one per process). Every
/// histogram gets buckets (a histogram without them would render as a summary, which
/// Prometheus cannot aggregate across nodes).
fn prometheus() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    PROMETHEUS
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(stampede_api::request_id::DURATION.to_owned()),
                    stampede_api::request_id::DURATION_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(stampede_core::telemetry::GROUP_COMMIT_BATCH.to_owned()),
                        BATCH_BUCKETS,
                    )
                })
                .and_then(|b| b.set_buckets(SECONDS_BUCKETS))
                .ok()
                .and_then(|b| b.install_recorder().ok())
        })
        .clone()
}

/// Gauge: free bytes (for unprivileged users) of the data dir's filesystem.
pub const DATA_DIR_FREE: &str = "stampede_data_dir_free_bytes";
/// Gauge: size in bytes of the data dir's filesystem.
pub const DATA_DIR_TOTAL: &str = "stampede_data_dir_total_bytes";

/// What `/metrics` reads at render time besides the recorded series.
pub struct RenderSources {
    pub pool_stats: crate::storage::PoolStats,
    pub data_dir: std::path::PathBuf,
}

/// Renders `/metrics`: the recorded series plus gauges read at render time (claim path,
/// pools, process, the data dir's filesystem).
pub fn metrics_renderer(
    claim_path: &crate::claim_path::ClaimPath,
    sources: RenderSources,
) -> std::sync::Arc<dyn Fn() -> String + Send + Sync> {
    let handle = prometheus();
    let catalog = claim_path.catalog.clone();
    let memory = claim_path.memory.clone();
    let discovery = claim_path.discovery.clone();
    let process = metrics_process::Collector::default();
    process.describe();
    // Counters alerts `rate()`, registered at zero by the code that records them.
    stampede_api::flow::register_metrics();
    stampede_workers::distribution::register_metrics();
    stampede_workers::reminders::register_metrics();
    stampede_workers::relay::register_metrics();
    if memory.is_none() {
        stampede_hot_redis::connection::register_metrics();
    }
    std::sync::Arc::new(move || {
        process.collect();
        stampede_core::telemetry::publish_pools(&(sources.pool_stats)());
        // The data dir may be missing (distributed nodes need none until an upload).
        if let Ok(fs) = rustix::fs::statvfs(&sources.data_dir) {
            metrics::gauge!(DATA_DIR_FREE).set((fs.f_bavail * fs.f_frsize) as f64);
            metrics::gauge!(DATA_DIR_TOTAL).set((fs.f_blocks * fs.f_frsize) as f64);
        }
        metrics::gauge!("stampede_template_db_queries").set(catalog.db_queries() as f64);
        metrics::counter!("stampede_discovery_db_queries_total").absolute(discovery.db_queries());
        metrics::counter!("stampede_log_lines_dropped_total").absolute(dropped_lines());
        if let Some(m) = &memory {
            let (batches, claims, failed) = m.writer_stats().snapshot();
            metrics::gauge!("stampede_group_commit_batches").set(batches as f64);
            metrics::gauge!("stampede_group_commit_claims").set(claims as f64);
            metrics::gauge!("stampede_group_commit_failed_batches").set(failed as f64);
            if let Some(j) = m.journal_stats() {
                use std::sync::atomic::Ordering::Relaxed;
                metrics::gauge!("stampede_claim_journal_backlog").set(j.backlog() as f64);
                metrics::counter!("stampede_claim_journal_appended_total")
                    .absolute(j.appended.load(Relaxed));
                metrics::counter!("stampede_claim_journal_writes_total")
                    .absolute(j.writes.load(Relaxed));
                metrics::counter!("stampede_claim_journal_applied_total")
                    .absolute(j.applied.load(Relaxed));
                metrics::counter!("stampede_claim_journal_apply_batches_total")
                    .absolute(j.apply_batches.load(Relaxed));
                metrics::counter!("stampede_claim_journal_apply_failures_total")
                    .absolute(j.apply_failures.load(Relaxed));
                metrics::counter!("stampede_claim_journal_rejected_total")
                    .absolute(j.rejected.load(Relaxed));
            }
        }
        handle.as_ref().map(|h| h.render()).unwrap_or_default()
    })
}
