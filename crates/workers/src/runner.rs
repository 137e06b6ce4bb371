//! The job runner.

use async_trait::async_trait;
use stampede_core::AppError;
use stampede_core::trace::TraceContext;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

#[async_trait]
pub trait Job: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Pause between steps that found nothing to do.
    fn interval(&self) -> Duration;
    /// Does one bounded step of work; returns how many items it handled. A step that handled
    /// a full batch is followed at once by another.
    async fn run_once(&self) -> Result<usize, AppError>;
    /// A step handling this many items had a full batch.
    fn batch(&self) -> usize;
}

/// One step of `job` as a unit of work of its own: a new trace (current for the step, so the
/// events it writes can name it) and a span (`job`, at debug level like the request spans).
async fn step(job: &dyn Job) -> Result<usize, AppError> {
    let trace = TraceContext::root();
    // The span is made inside the scope: an exporter takes its ids from the context.
    trace
        .scope(async {
            let span = tracing::debug_span!("job", job = job.name(), trace_id = %trace.trace_hex());
            job.run_once().instrument(span).await
        })
        .await
}

#[derive(Default, Clone)]
pub struct Runner {
    jobs: Vec<Arc<dyn Job>>,
}

impl Runner {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, job: Arc<dyn Job>) {
        self.jobs.push(job);
    }

    /// Spawns one loop per job on `tracker`; each stops when `token` is cancelled (between
    /// steps, so a step's transaction is never cut in half by shutdown).
    pub fn start(&self, token: &CancellationToken, tracker: &TaskTracker) {
        for job in &self.jobs {
            let job = Arc::clone(job);
            let token = token.clone();
            tracker.spawn(async move {
                tracing::info!(job = job.name(), "job started");
                while !token.is_cancelled() {
                    let pause = match step(&*job).await {
                        Ok(n) if n >= job.batch() => Duration::ZERO,
                        Ok(_) => job.interval(),
                        Err(e) => {
                            tracing::warn!(job = job.name(), error = %e, "job step failed; retrying after its interval");
                            job.interval()
                        }
                    };
                    tokio::select! {
                        () = token.cancelled() => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
                tracing::info!(job = job.name(), "job stopped");
            });
        }
    }

    /// Runs every job until a full pass finds no work. For tests and the CLI.
    pub async fn drain(&self) -> Result<(), AppError> {
        loop {
            let mut handled = 0;
            for job in &self.jobs {
                handled += step(&**job).await?;
            }
            if handled == 0 {
                return Ok(());
            }
        }
    }
}
