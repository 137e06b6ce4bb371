//! The distribution runner: a job every node runs. Each step takes one runnable task under a
//! lease (so exactly one node works on it) and runs it to the end, batch by batch:
//!
//! 1. a blocking thread streams the file (`stampede-sheet`) and hands over batches of
//!    `batch_size` data rows through a channel of two (memory does not grow with rows);
//! 2. per batch: rows with a bad user id fail at once; the hot state reserves one coupon per
//!    valid row atomically with claims (limit, stock — a partial reservation once stock runs
//!    out); the coupons, the template's stock change, the failures and the checkpoint are
//!    committed exactly once (`DistributionStore::commit_batch`, guarded by the checkpoint
//!    and the lease);
//! 3. at the end the task is `completed` (or `failed` when the file became unreadable) with
//!    a `distribution.completed` outbox event, in one transaction.
//!
//! A crash anywhere resumes from the checkpoint: rows before it are re-read only to rebuild
//! the set of users seen (for `DUPLICATE_IN_FILE`); the batch in flight is redone, and the hot
//! state (Redis: a stored answer per batch; in-process: rebuilt from the record) and the
//! idempotent coupon insert make the redo issue nothing twice.

use crate::runner::Job;
use crate::seen::SeenUsers;
use async_trait::async_trait;
use jiff::SignedDuration;
use stampede_core::AppError;
use stampede_core::claim_ports::{ClaimRecord, HotState, Reservation, RowReservation};
use stampede_core::clock::Clock;
use stampede_core::distribution_ports::{
    BatchCommit, BatchCoupon, BatchOutcome, DistributionStore, FILE_CHUNK_BYTES, FinishGuard,
    row_key,
};
use stampede_core::events::distribution_completed_event;
use stampede_core::ids::IdGenerator;
use stampede_core::ports::{StoreError, TemplateStore};
use stampede_domain::coupon::{Origin, new_claimed_coupon};
use stampede_domain::distribution::{
    DistributionStatus, DistributionTask, FailedRow, FileFormat, RowFailure,
};
use stampede_domain::ids::{CouponId, UserId};
use stampede_domain::template::Template;
use stampede_sheet::{Cell, Format, Limits, Row, RowReader, SheetError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Counter: distribution rows decided, by `outcome` (`issued`, `failed`) and, for failed rows,
/// `reason` (the failure report's code, e.g. `SOLD_OUT`).
pub const ROWS: &str = "stampede_distribution_rows_total";
/// Counter: distributions that reached a final state, by `status`.
const FINISHED: &str = "stampede_distributions_finished_total";

/// Registers the distribution counters at zero (alerts and panels read them from the first
/// scrape, not from the first distribution).
pub fn register_metrics() {
    metrics::counter!(ROWS, "outcome" => "issued").increment(0);
    for s in [
        DistributionStatus::Completed,
        DistributionStatus::Failed,
        DistributionStatus::Canceled,
    ] {
        metrics::counter!(FINISHED, "status" => s.as_str()).increment(0);
    }
}

/// How the runner behaves; the composition root fills it from configuration.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The name this runner takes task leases under. Distributed nodes use their
    /// process-unique id, so a restarted node never mistakes a dead predecessor's lease for
    /// its own. Embedded mode uses one stable name: one process owns a data dir, so a
    /// restarted process resumes its own tasks at once instead of waiting out the lease.
    pub owner: String,
    /// Where files are cached locally while a task runs.
    pub work_dir: PathBuf,
    /// How long a lease lasts without a batch renewing it (another node takes over after).
    pub lease: Duration,
    /// How often to look for due tasks (the scheduler's resolution: `send_at` + this).
    pub interval: Duration,
    pub limits: Limits,
}

pub struct DistributionRunner {
    pub store: Arc<dyn DistributionStore>,
    /// Quotes cache users' coupons; a batch gives some of them a coupon.
    pub quote_cache: Arc<stampede_core::coupon_cache::UserCouponCache>,
    pub templates: Arc<dyn TemplateStore>,
    pub hot: Arc<dyn HotState>,
    pub ids: Arc<IdGenerator>,
    pub clock: Arc<dyn Clock>,
    pub config: RunnerConfig,
    /// Cancelled at shutdown: the task in hand stops at its next batch boundary and gives
    /// its lease back.
    pub shutdown: CancellationToken,
}

/// How a task run ended (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    Finished(DistributionStatus),
    /// Shutdown: the lease was given back; the next runner resumes at the checkpoint.
    Stopped,
    /// Another runner holds the task now.
    LeaseLost,
}

fn internal(e: impl std::error::Error + Send + Sync + 'static) -> AppError {
    AppError::Internal(Box::new(e))
}

fn sheet_format(f: FileFormat) -> Format {
    match f {
        FileFormat::Csv => Format::Csv,
        FileFormat::Xlsx => Format::Xlsx,
    }
}

/// One batch of data rows, as the parsing thread hands it over.
type Batch = Vec<Row>;

/// Streams the file's data rows in batches of `size` from a blocking thread.
fn spawn_reader(
    path: PathBuf,
    format: Format,
    limits: Limits,
    size: usize,
) -> mpsc::Receiver<Result<Batch, SheetError>> {
    let (tx, rx) = mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        let reader = match RowReader::open(&path, format, &limits) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        let mut batch = Vec::with_capacity(size);
        for row in reader {
            match row {
                Ok(r) => {
                    batch.push(r);
                    if batch.len() == size {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(size));
                        if tx.blocking_send(Ok(full)).is_err() {
                            return; // the task stopped; nobody listens
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        if !batch.is_empty() {
            let _ = tx.blocking_send(Ok(batch));
        }
    });
    rx
}

impl DistributionRunner {
    fn lease_until(&self) -> i64 {
        let lease =
            SignedDuration::try_from(self.config.lease).unwrap_or(SignedDuration::from_secs(30));
        (self.clock.now() + lease).as_millisecond()
    }

    /// Takes one runnable task (if any) and runs it. `Ok(None)`: nothing to do.
    pub async fn run_next(&self) -> Result<Option<(DistributionTask, RunEnd)>, AppError> {
        let now = self.clock.now();
        for candidate in self.store.runnable_distributions(now, 8).await? {
            let Some(task) = self
                .store
                .acquire_distribution(
                    candidate.id,
                    candidate.shop_id,
                    &self.config.owner,
                    now,
                    self.lease_until(),
                )
                .await?
            else {
                continue; // another node got it first
            };
            tracing::info!(distribution = %task.id, from_row = task.processed_rows, "distribution task taken");
            let end = match self.run(&task).await {
                Ok(end) => end,
                Err(e) => {
                    // Give the task back at once so the retry (here or elsewhere) need not wait
                    // for the lease to lapse.
                    if let Err(r) = self
                        .store
                        .release_distribution(task.id, task.shop_id, &self.config.owner)
                        .await
                    {
                        tracing::warn!(distribution = %task.id, error = %r, "could not release the lease");
                    }
                    return Err(e);
                }
            };
            tracing::info!(distribution = %task.id, end = ?end, "distribution task left");
            return Ok(Some((task, end)));
        }
        Ok(None)
    }

    async fn finish(
        &self,
        task: &DistributionTask,
        status: DistributionStatus,
        reason: Option<&str>,
    ) -> Result<RunEnd, AppError> {
        let now = self.clock.now();
        let mut done = self
            .store
            .get_distribution(task.id)
            .await?
            .unwrap_or_else(|| task.clone());
        done.status = status;
        done.finished_at = Some(now);
        done.failure_reason = reason.map(str::to_owned);
        let event = distribution_completed_event(&done);
        let finished = self
            .store
            .finish_distribution(
                task.id,
                task.shop_id,
                FinishGuard::Owner(&self.config.owner),
                status,
                reason,
                now,
                &event,
            )
            .await?;
        let _ = tokio::fs::remove_file(self.local_path(task)).await;
        match finished {
            Some(t) => {
                metrics::counter!(FINISHED, "status" => status.as_str()).increment(1);
                tracing::info!(distribution = %t.id, status = status.as_str(), succeeded = t.succeeded, failed = t.failed, total = t.total_rows, "distribution finished");
                Ok(RunEnd::Finished(status))
            }
            None => Ok(RunEnd::LeaseLost),
        }
    }

    fn local_path(&self, t: &DistributionTask) -> PathBuf {
        self.config.work_dir.join(t.local_file_name())
    }

    /// The task's file on local disk: the cached copy when complete, else fetched chunk by
    /// chunk from the store. `Err(reason)` when the store does not hold the whole file.
    async fn local_file(&self, t: &DistributionTask) -> Result<Result<PathBuf, String>, AppError> {
        let path = self.local_path(t);
        if let Ok(m) = tokio::fs::metadata(&path).await
            && m.len() == t.file_size
        {
            return Ok(Ok(path));
        }
        tokio::fs::create_dir_all(&self.config.work_dir)
            .await
            .map_err(internal)?;
        let part = path.with_extension("part");
        let mut out = tokio::fs::File::create(&part).await.map_err(internal)?;
        let chunks = t.file_size.div_ceil(FILE_CHUNK_BYTES as u64);
        let mut written = 0u64;
        for n in 0..chunks {
            let n32 = u32::try_from(n).map_err(|_| AppError::Internal("file too large".into()))?;
            let Some(bytes) = self.store.file_chunk(t.id, t.shop_id, n32).await? else {
                return Ok(Err(format!(
                    "the uploaded file is incomplete (chunk {n} of {chunks} is missing)"
                )));
            };
            out.write_all(&bytes).await.map_err(internal)?;
            written += bytes.len() as u64;
        }
        out.flush().await.map_err(internal)?;
        drop(out);
        if written != t.file_size {
            return Ok(Err(format!(
                "the uploaded file is incomplete ({written} of {} bytes)",
                t.file_size
            )));
        }
        tokio::fs::rename(&part, &path).await.map_err(internal)?;
        Ok(Ok(path))
    }

    async fn run(&self, task: &DistributionTask) -> Result<RunEnd, AppError> {
        if task.cancel_requested && task.processed_rows == 0 {
            return self.finish(task, DistributionStatus::Canceled, None).await;
        }
        let Some(template) = self.templates.get_template(task.template_id).await? else {
            return self
                .finish(
                    task,
                    DistributionStatus::Failed,
                    Some("the template no longer exists"),
                )
                .await;
        };
        let path = match self.local_file(task).await? {
            Ok(p) => p,
            Err(reason) => {
                return self
                    .finish(task, DistributionStatus::Failed, Some(&reason))
                    .await;
            }
        };
        let size = usize::try_from(task.batch_size).unwrap_or(5_000).max(1);
        let mut rx = spawn_reader(
            path,
            sheet_format(task.format),
            self.config.limits.clone(),
            size,
        );
        let mut seen = SeenUsers::with_capacity(usize::try_from(task.total_rows).unwrap_or(0));
        let mut next = task.processed_rows;
        while let Some(batch) = rx.recv().await {
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    let reason =
                        format!("the file became unreadable at data row {}: {e}", next + 1);
                    return self
                        .finish(task, DistributionStatus::Failed, Some(&reason))
                        .await;
                }
            };
            let first = batch.first().map(|r| r.index).unwrap_or(next);
            let len = batch.len() as u64;
            if first + len <= next {
                // Done before a restart: only remember who was in it.
                for r in &batch {
                    if let Cell::UserId(u) = r.value {
                        seen.insert(u);
                    }
                }
                seen.end_batch();
                continue;
            }
            if first != next {
                return Err(AppError::Internal(
                    format!(
                        "distribution {}: batch starts at row {first}, checkpoint is {next}",
                        task.id
                    )
                    .into(),
                ));
            }
            if self.shutdown.is_cancelled() {
                self.store
                    .release_distribution(task.id, task.shop_id, &self.config.owner)
                    .await?;
                return Ok(RunEnd::Stopped);
            }
            let current = self.store.get_distribution(task.id).await?;
            let canceling = current
                .as_ref()
                .is_none_or(|c| c.cancel_requested || c.status.is_final());
            match self
                .batch(task, &template, &batch, &mut seen, canceling)
                .await?
            {
                Step::Applied | Step::AlreadyApplied => next += len,
                Step::NothingReserved => {}
                Step::LeaseLost => return Ok(RunEnd::LeaseLost),
            }
            if canceling {
                // A batch that was in flight when the cancel came is finished above (its
                // reservation would otherwise be lost); nothing new starts.
                return self.finish(task, DistributionStatus::Canceled, None).await;
            }
        }
        self.finish(task, DistributionStatus::Completed, None).await
    }

    /// Reserves, builds and commits one batch.
    async fn batch(
        &self,
        task: &DistributionTask,
        t: &Template,
        rows: &[Row],
        seen: &mut SeenUsers,
        replay_only: bool,
    ) -> Result<Step, AppError> {
        let first_row = rows.first().map(|r| r.index).unwrap_or(task.processed_rows);
        let users: Vec<UserId> = rows
            .iter()
            .filter_map(|r| match r.value {
                Cell::UserId(u) => UserId::new(u),
                Cell::Invalid(_) => None,
            })
            .collect();
        let reservation = Reservation {
            task: task.id,
            first_row,
            users: &users,
            replay_only,
        };
        let now = self.clock.now();
        let answer = if users.is_empty() && !replay_only {
            Vec::new()
        } else {
            match self.hot.reserve_batch(t, &reservation, now).await? {
                Some(a) if a.len() == users.len() => a,
                Some(a) => {
                    return Err(AppError::Internal(
                        format!("reservation answered {} users of {}", a.len(), users.len()).into(),
                    ));
                }
                None => return Ok(Step::NothingReserved),
            }
        };
        let mut coupons = Vec::with_capacity(users.len());
        let mut failures = Vec::new();
        let mut answers = answer.iter();
        for r in rows {
            match &r.value {
                Cell::Invalid(raw) => failures.push(FailedRow {
                    row: r.number,
                    raw: raw.clone(),
                    reason: RowFailure::InvalidUserId,
                }),
                Cell::UserId(u) => {
                    let seen_before = seen.insert(*u);
                    let user = UserId::new(*u);
                    match (answers.next(), user) {
                        (Some(RowReservation::Reserved { seq }), Some(user)) => {
                            let id = CouponId::new(self.ids.next()?).ok_or_else(|| {
                                AppError::Internal("non-positive coupon id".into())
                            })?;
                            let coupon =
                                new_claimed_coupon(t, id, user, *seq, Origin::Distribution, now);
                            coupons.push(BatchCoupon {
                                row: r.number,
                                raw: u.to_string(),
                                record: ClaimRecord {
                                    coupon,
                                    claim_key: Some(row_key(task.id, r.number)),
                                    // The step's trace (see `Runner`): one per batch.
                                    traceparent: stampede_core::events::current_traceparent(),
                                },
                            });
                        }
                        (Some(RowReservation::Refused(refusal)), _) => failures.push(FailedRow {
                            row: r.number,
                            raw: u.to_string(),
                            reason: RowFailure::from_refusal(*refusal, seen_before),
                        }),
                        _ => failures.push(FailedRow {
                            row: r.number,
                            raw: u.to_string(),
                            reason: RowFailure::InvalidUserId,
                        }),
                    }
                }
            }
        }
        seen.end_batch();
        let commit = BatchCommit {
            task: task.id,
            shop_id: task.shop_id,
            template_id: task.template_id,
            owner: self.config.owner.clone(),
            first_row,
            rows: rows.len() as u64,
            coupons,
            failures,
            lease_until_ms: self.lease_until(),
        };
        match self.store.commit_batch(&commit).await {
            Ok(BatchOutcome::Applied { issued, rejected }) => {
                for c in &commit.coupons {
                    self.quote_cache.invalidate(c.record.coupon.user_id).await;
                }
                if rejected > 0 {
                    self.hot
                        .return_stock(t, task.id, first_row, rejected)
                        .await?;
                }
                // Rows by outcome, failed ones by reason (the failure report's codes).
                metrics::counter!(ROWS, "outcome" => "issued").increment(issued);
                for f in &commit.failures {
                    metrics::counter!(ROWS, "outcome" => "failed", "reason" => f.reason.as_str())
                        .increment(1);
                }
                if rejected > 0 {
                    metrics::counter!(ROWS, "outcome" => "failed", "reason" => RowFailure::StoreRejected.as_str())
                        .increment(rejected);
                }
                Ok(Step::Applied)
            }
            Ok(BatchOutcome::AlreadyApplied) => Ok(Step::AlreadyApplied),
            Ok(BatchOutcome::LeaseLost) => Ok(Step::LeaseLost),
            Err(e) => {
                if let Err(undo) = self.hot.abandon_batch(t, &reservation, &answer).await {
                    tracing::error!(distribution = %task.id, error = %undo, "could not give an uncommitted reservation back");
                }
                Err(store(e))
            }
        }
    }
}

fn store(e: StoreError) -> AppError {
    AppError::from(e)
}

enum Step {
    Applied,
    AlreadyApplied,
    /// A canceled task had no batch in flight: nothing to finish.
    NothingReserved,
    LeaseLost,
}

#[async_trait]
impl Job for DistributionRunner {
    fn name(&self) -> &'static str {
        "distribution_runner"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    /// After a task, look again at once: another may be due.
    fn batch(&self) -> usize {
        1
    }

    async fn run_once(&self) -> Result<usize, AppError> {
        Ok(usize::from(self.run_next().await?.is_some()))
    }
}

/// Removes cached files of tasks this node no longer runs (left by a crash).
pub async fn clean_work_dir(dir: &Path) {
    if let Ok(mut entries) = tokio::fs::read_dir(dir).await {
        while let Ok(Some(e)) = entries.next_entry().await {
            if e.path().extension().is_some_and(|x| x == "part") {
                let _ = tokio::fs::remove_file(e.path()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_map_one_to_one() {
        assert_eq!(sheet_format(FileFormat::Csv), Format::Csv);
        assert_eq!(sheet_format(FileFormat::Xlsx), Format::Xlsx);
    }
}
