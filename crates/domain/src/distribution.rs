//! Distribution tasks: a merchant's bulk push of one template's
//! coupons to the users listed in an uploaded file, and what happened to each row.
//!
//! The task's life: `pending` (waiting for `send_at`) → `running` → `completed` | `failed`
//! (the file became unreadable); `pending` or `running` → `canceled` by the merchant, which
//! takes effect at the next batch boundary. `processed_rows` is also the checkpoint: data rows
//! `[0, processed_rows)` are done (issued or recorded as failures), exactly once.

use crate::coupon::ClaimRefusal;
use crate::ids::{DistributionId, ShopId, TemplateId};
use jiff::Timestamp;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DistributionStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Canceled,
}

impl DistributionStatus {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "running" => Some(Self::Running),
            "completed" => Some(Self::Completed),
            "failed" => Some(Self::Failed),
            "canceled" => Some(Self::Canceled),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    /// No runner will touch the task again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Canceled)
    }
}

/// Why one row of the file gave no coupon (the `reason` of the failure report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowFailure {
    /// Empty, not a decimal number, zero, negative or beyond 64 bits.
    InvalidUserId,
    /// The user appears earlier in the file and those rows already took the per-user limit.
    DuplicateInFile,
    /// The user already held the per-user limit before this file reached them.
    LimitReached,
    SoldOut,
    TemplateTerminated,
    /// The template's claim window closed (`claim_end`) while the task ran.
    TemplateEnded,
    /// The system of record refused the coupon (its slot was taken by another coupon).
    StoreRejected,
}

impl RowFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidUserId => "INVALID_USER_ID",
            Self::DuplicateInFile => "DUPLICATE_IN_FILE",
            Self::LimitReached => "LIMIT_REACHED",
            Self::SoldOut => "SOLD_OUT",
            Self::TemplateTerminated => "TEMPLATE_TERMINATED",
            Self::TemplateEnded => "TEMPLATE_ENDED",
            Self::StoreRejected => "STORE_REJECTED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::InvalidUserId,
            Self::DuplicateInFile,
            Self::LimitReached,
            Self::SoldOut,
            Self::TemplateTerminated,
            Self::TemplateEnded,
            Self::StoreRejected,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }

    /// The failure a hot-store refusal means for a distribution row. `seen_before`: the user
    /// appeared on an earlier row of the same file.
    pub fn from_refusal(r: ClaimRefusal, seen_before: bool) -> Self {
        match r {
            ClaimRefusal::LimitReached if seen_before => Self::DuplicateInFile,
            ClaimRefusal::LimitReached => Self::LimitReached,
            ClaimRefusal::SoldOut => Self::SoldOut,
            ClaimRefusal::Terminated => Self::TemplateTerminated,
            // Distributions ignore `claim_start` (pushing before a sale is normal), so the
            // only window refusal they can meet is the end.
            ClaimRefusal::Ended | ClaimRefusal::NotStarted => Self::TemplateEnded,
        }
    }
}

/// The uploaded file's format (decided by content at upload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    Xlsx,
}

impl FileFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Xlsx => "xlsx",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "csv" => Some(Self::Csv),
            "xlsx" => Some(Self::Xlsx),
            _ => None,
        }
    }
}

/// Delivery state of the completion callback to `notify_url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyState {
    /// No `notify_url`, or the task is not finished yet.
    None,
    /// Waiting for (another) attempt.
    Pending,
    Delivered,
    /// Every attempt failed.
    GaveUp,
}

impl NotifyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::GaveUp => "gave_up",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Self::None),
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "gave_up" => Some(Self::GaveUp),
            _ => None,
        }
    }
}

/// A distribution task as stored. The API shows the task's public fields; the rest is bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistributionTask {
    pub id: DistributionId,
    pub template_id: TemplateId,
    pub shop_id: ShopId,
    pub name: String,
    pub status: DistributionStatus,
    /// When to start; `created_at` when the upload gave none.
    pub send_at: Timestamp,
    /// Data rows in the file (header and blank rows excluded).
    pub total_rows: u64,
    /// Also the checkpoint: data rows `[0, processed_rows)` are done.
    pub processed_rows: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub notify_url: Option<String>,
    /// Why the task `failed` (e.g. the file became unreadable).
    pub failure_reason: Option<String>,
    /// The merchant asked to cancel a running task; the runner stops at the next batch.
    pub cancel_requested: bool,
    pub format: FileFormat,
    /// Bytes of the stored file.
    pub file_size: u64,
    /// Rows per batch, fixed at creation: a batch is identified by its first row, so a
    /// resumed task must cut the file exactly as before.
    pub batch_size: u32,
    /// Who created it (`sub` of the token), for the audit trail.
    pub created_by: String,
    /// `Idempotency-Key` of the upload and the SHA-256 of what it bound (form fields + file).
    pub idempotency_key: Option<String>,
    pub request_hash: Option<String>,
    /// The runner holding the task, and until when (epoch ms; 0 = nobody).
    pub lease_owner: Option<String>,
    pub lease_until_ms: i64,
    pub notify_state: NotifyState,
    pub notify_attempts: u32,
    pub notify_next_at_ms: i64,
}

/// The name of a task's file in a node's work directory: `<id>.<format>`. The upload leaves
/// an accepted file under this name and the runner looks for its local copy there, so the
/// node that took the upload need not fetch the file back from the store.
pub fn local_file_name(id: DistributionId, format: FileFormat) -> String {
    format!("{id}.{}", format.as_str())
}

impl DistributionTask {
    /// The name of the task's file in a node's work directory (see `local_file_name`).
    pub fn local_file_name(&self) -> String {
        local_file_name(self.id, self.format)
    }

    /// Whether a runner should pick the task up at `now` (given its lease is free).
    pub fn is_due(&self, now: Timestamp) -> bool {
        match self.status {
            DistributionStatus::Pending => self.send_at <= now || self.cancel_requested,
            DistributionStatus::Running => true,
            _ => false,
        }
    }

    /// `succeeded + failed = processed_rows` always holds; `processed_rows = total_rows`
    /// once completed.
    pub fn counters_consistent(&self) -> bool {
        self.succeeded + self.failed == self.processed_rows
            && self.processed_rows <= self.total_rows
    }
}

/// One row that gave no coupon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRow {
    /// Row number in the file as a spreadsheet shows it (the header, if any, is row 1).
    pub row: u64,
    /// The raw first-column value (trimmed, shortened to 100 characters).
    pub raw: String,
    pub reason: RowFailure,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for r in [
            RowFailure::InvalidUserId,
            RowFailure::DuplicateInFile,
            RowFailure::LimitReached,
            RowFailure::SoldOut,
            RowFailure::TemplateTerminated,
            RowFailure::TemplateEnded,
            RowFailure::StoreRejected,
        ] {
            assert_eq!(RowFailure::parse(r.as_str()), Some(r));
        }
        for s in ["pending", "running", "completed", "failed", "canceled"] {
            assert_eq!(DistributionStatus::parse(s).map(|x| x.as_str()), Some(s));
        }
        for s in ["none", "pending", "delivered", "gave_up"] {
            assert_eq!(NotifyState::parse(s).map(|x| x.as_str()), Some(s));
        }
    }

    #[test]
    fn a_limit_refusal_of_a_repeated_user_is_a_duplicate() {
        assert_eq!(
            RowFailure::from_refusal(ClaimRefusal::LimitReached, true),
            RowFailure::DuplicateInFile
        );
        assert_eq!(
            RowFailure::from_refusal(ClaimRefusal::LimitReached, false),
            RowFailure::LimitReached
        );
        assert_eq!(
            RowFailure::from_refusal(ClaimRefusal::SoldOut, true),
            RowFailure::SoldOut
        );
    }
}
