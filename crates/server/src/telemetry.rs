//! Logs and metrics. Logs go to stderr through a writer thread (`log_writer`): a request
//! formats its line and queues it, never waiting on the terminal or a pipe; a full queue drops
//! the line and counts it (`stampede_log_lines_dropped_total`) instead of slowing requests down. Lines
//! are human-readable when stderr is a terminal and JSON (one object per event, with the
//! request id on access lines) otherwise, unless `log.format` says which.

use crate::config::{LogFormat, LogSettings};
use crate::log_writer::{self, Guard, QueueWriter};
use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};
use tracing_subscriber::EnvFilter;

/// Writes out the queue when dropped; kept until [`flush`] (the end of `main`).
static GUARD: Mutex<Option<Guard>> = Mutex::new(None);
static WRITER: OnceLock<QueueWriter> = OnceLock::new();

/// Installs the global subscriber once; later calls (tests) are no-ops.
pub fn init(settings: &LogSettings) {
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let pretty = match settings.format {
        LogFormat::Auto => std::io::stderr().is_terminal(),
        LogFormat::Json => false,
        LogFormat::Pretty => true,
    };
    let installed = if pretty {
        builder.try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .event_format(crate::access_log::AccessOrJson {
                json: tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false),
            })
            .try_init()
    };
    if installed.is_ok() {
        let _first = WRITER.set(dropped);
        *GUARD.lock().unwrap_or_else(|p| p.into_inner()) = Some(guard);
    }
}

/// Writes out every queued line (before the process exits).
pub fn flush() {
    drop(GUARD.lock().unwrap_or_else(|p| p.into_inner()).take());
}

/// Log lines dropped because the writer's queue was full.
pub fn dropped_lines() -> u64 {
    WRITER.get().map_or(0, QueueWriter::dropped)
}
static PROMETHEUS: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
    std::sync::OnceLock::new();

/// The process-wide Prometheus recorder (installed on first use; one per process).
fn prometheus() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        stampede_api::request_id::DURATION.to_owned(),
                    ),
                    stampede_api::request_id::DURATION_BUCKETS,
                )
                .ok()
                .and_then(|b| b.install_recorder().ok())
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
    let discovery = claim_path.discovery.clone();
    std::sync::Arc::new(move || {
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
