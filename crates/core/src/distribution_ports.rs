//! Ports of distribution tasks: the task store (tasks, their files, failures, leases and
//! exactly-once batch commits). The hot-state side of a batch (reservations) lives on
//! [`crate::claim_ports::HotState`].

use crate::claim_ports::{ClaimRecord, OutboxEvent};
use crate::ports::{Page, StoreError};
use async_trait::async_trait;
use jiff::Timestamp;
use stampede_domain::distribution::{DistributionStatus, DistributionTask, FailedRow, NotifyState};
use stampede_domain::ids::{DistributionId, ShopId, TemplateId};

/// The `claim_key` a distribution row's coupon is stored with. A space never appears in an
/// `Idempotency-Key` (visible ASCII only), so no claim can take a row's key; and because the
/// key is stable, a replayed batch finds its own coupons instead of making new ones.
pub fn row_key(task: DistributionId, row: u64) -> String {
    format!("dist {task} {row}")
}

/// Bytes per stored file chunk (a row of its own in the store, so any node can read the file).
pub const FILE_CHUNK_BYTES: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct DistributionQuery {
    /// `None` only for admins listing every shop.
    pub shop_id: Option<ShopId>,
    /// 1-based.
    pub page: u32,
    pub page_size: u32,
}

/// One coupon of a batch, with the file row it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchCoupon {
    pub row: u64,
    pub raw: String,
    /// `claim_key` is [`row_key`] of the row.
    pub record: ClaimRecord,
}

/// One processed batch, stored exactly once by [`DistributionStore::commit_batch`].
#[derive(Debug, Clone)]
pub struct BatchCommit {
    pub task: DistributionId,
    /// Routes the task and its template (both live with the shop).
    pub shop_id: ShopId,
    pub template_id: TemplateId,
    /// The runner's lease: a commit from anyone else changes nothing.
    pub owner: String,
    /// The checkpoint this batch starts at (`processed_rows` before it)...
    pub first_row: u64,
    /// ...and how many data rows it covers (`processed_rows` after = `first_row + rows`).
    pub rows: u64,
    pub coupons: Vec<BatchCoupon>,
    pub failures: Vec<FailedRow>,
    /// The renewed lease.
    pub lease_until_ms: i64,
}

impl BatchCommit {
    /// A batch whose rows do not add up (a row neither a coupon nor a failure, or both; a
    /// coupon of another template or keyed for another row) would corrupt the counters:
    /// adapters refuse it before writing anything.
    pub fn check(&self) -> Result<(), String> {
        let what =
            |m: String| format!("batch at row {} of task {}: {m}", self.first_row, self.task);
        if (self.coupons.len() + self.failures.len()) as u64 != self.rows {
            return Err(what(format!(
                "{} coupons and {} failures for {} rows",
                self.coupons.len(),
                self.failures.len(),
                self.rows
            )));
        }
        let mut rows = std::collections::HashSet::new();
        if !self
            .coupons
            .iter()
            .map(|c| c.row)
            .chain(self.failures.iter().map(|f| f.row))
            .all(|r| rows.insert(r))
        {
            return Err(what("a row appears twice".to_owned()));
        }
        for c in &self.coupons {
            if c.record.coupon.template_id != self.template_id
                || c.record.claim_key.as_deref() != Some(row_key(self.task, c.row).as_str())
            {
                return Err(what(format!("row {}'s coupon is not the task's", c.row)));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Stored: the coupons (those already present from an earlier attempt count as this
    /// batch's), the template's stock down by `issued`, the failures, counters and checkpoint.
    /// `rejected` coupons could not be stored (their slot belongs to another coupon); they are
    /// recorded as `STORE_REJECTED` failures and their reserved stock must go back.
    Applied { issued: u64, rejected: u64 },
    /// The checkpoint is no longer `first_row` (an earlier attempt committed): nothing changed.
    AlreadyApplied,
    /// Another runner holds the lease: nothing changed.
    LeaseLost,
}

/// Who may finish a task.
#[derive(Debug, Clone, Copy)]
pub enum FinishGuard<'a> {
    /// The runner holding the lease.
    Owner(&'a str),
    /// Anyone, while the task is still `pending` and nobody holds it (canceling before start).
    Pending,
}

#[derive(Debug)]
pub enum CreateDistribution {
    Created,
    /// The upload's `Idempotency-Key` is already bound in the shop: nothing was written.
    KeyExists(Box<DistributionTask>),
}

#[async_trait]
pub trait DistributionStore: Send + Sync + 'static {
    /// Inserts a new task (with its id → shop directory entry where the store is sharded).
    async fn create_distribution(
        &self,
        t: &DistributionTask,
    ) -> Result<CreateDistribution, StoreError>;

    /// Stores chunk `n` (0-based) of the task's file. Re-storing a chunk replaces it.
    async fn put_file_chunk(
        &self,
        id: DistributionId,
        shop: ShopId,
        n: u32,
        bytes: &[u8],
    ) -> Result<(), StoreError>;

    async fn file_chunk(
        &self,
        id: DistributionId,
        shop: ShopId,
        n: u32,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    async fn get_distribution(
        &self,
        id: DistributionId,
    ) -> Result<Option<DistributionTask>, StoreError>;

    /// Newest first (by id), with the total matching count.
    async fn list_distributions(
        &self,
        q: &DistributionQuery,
    ) -> Result<Page<DistributionTask>, StoreError>;

    /// Tasks a runner could take at `now`: `running` ones and `pending` ones whose `send_at`
    /// passed or whose cancel was requested, in both cases with a free lease
    /// (`lease_until_ms < now`). Oldest `send_at` first, at most `limit`.
    async fn runnable_distributions(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<DistributionTask>, StoreError>;

    /// Takes the lease when it is free (or already `owner`'s) and the task is not final; a
    /// `pending` task becomes `running` with `started_at = now`. The task after, or `None`
    /// when someone else holds it or it is final.
    async fn acquire_distribution(
        &self,
        id: DistributionId,
        shop: ShopId,
        owner: &str,
        now: Timestamp,
        lease_until_ms: i64,
    ) -> Result<Option<DistributionTask>, StoreError>;

    /// Gives the lease up (graceful stop) so another node can resume at once.
    async fn release_distribution(
        &self,
        id: DistributionId,
        shop: ShopId,
        owner: &str,
    ) -> Result<(), StoreError>;

    /// Stores one batch exactly once (see [`BatchOutcome`]). The template's stock change and
    /// the task's checkpoint are one transaction guarded by `processed_rows = first_row` and
    /// the lease; the coupons are inserted before it (on their users' shards where sharded),
    /// idempotently on their `claim_key`.
    async fn commit_batch(&self, b: &BatchCommit) -> Result<BatchOutcome, StoreError>;

    /// Moves the task to a final `status` with `finished_at = now` and the reason, writes
    /// `event` to the outbox in the same transaction, and arms the `notify_url` callback
    /// (`notify_state = pending`, due now) when there is one. `None` when the guard does not
    /// hold or the task is already final (nothing changed).
    #[allow(clippy::too_many_arguments)]
    async fn finish_distribution(
        &self,
        id: DistributionId,
        shop: ShopId,
        guard: FinishGuard<'_>,
        status: DistributionStatus,
        reason: Option<&str>,
        now: Timestamp,
        event: &OutboxEvent,
    ) -> Result<Option<DistributionTask>, StoreError>;

    /// Sets `cancel_requested` on a task that is not final; `false` when it is final or
    /// missing.
    async fn request_cancel(&self, id: DistributionId, shop: ShopId) -> Result<bool, StoreError>;

    /// Failed rows by row number, after `after_row` (exclusive), at most `limit`.
    async fn failures(
        &self,
        id: DistributionId,
        shop: ShopId,
        after_row: u64,
        limit: u32,
    ) -> Result<Vec<FailedRow>, StoreError>;

    /// Finished tasks whose callback is `pending` and due (`notify_next_at_ms <= now`).
    async fn due_notifications(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<DistributionTask>, StoreError>;

    /// Compare-and-set of the callback state: only when `notify_attempts` is still
    /// `attempts_before`. Claiming an attempt (attempts + 1, next try pushed out) before
    /// sending keeps two nodes from sending the same attempt.
    async fn update_notification(
        &self,
        id: DistributionId,
        shop: ShopId,
        attempts_before: u32,
        attempts: u32,
        state: NotifyState,
        next_at_ms: i64,
    ) -> Result<bool, StoreError>;
}
