//! The task as the API shows it: the fields a merchant reads, without the runner's
//! bookkeeping (leases, batch size, callback state).

use serde::Serialize;
use stampede_domain::distribution::{DistributionStatus, DistributionTask};
use stampede_domain::ids::{DistributionId, ShopId, TemplateId};
use utoipa::ToSchema;

/// A distribution task as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DistributionView {
    pub id: DistributionId,
    pub template_id: TemplateId,
    pub shop_id: ShopId,
    pub name: String,
    pub status: DistributionStatus,
    #[schema(value_type = String, format = DateTime)]
    pub send_at: jiff::Timestamp,
    /// Data rows in the file (header and blank rows excluded).
    pub total_rows: u64,
    pub processed_rows: u64,
    pub succeeded: u64,
    pub failed: u64,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: jiff::Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<jiff::Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<jiff::Timestamp>,
    pub notify_url: Option<String>,
    /// Why the task `failed`.
    pub failure_reason: Option<String>,
    /// A cancel was asked for; a running task stops at its next batch.
    pub cancel_requested: bool,
    /// `csv` or `xlsx`, as decided from the file's content.
    pub file_format: String,
}

impl From<DistributionTask> for DistributionView {
    fn from(t: DistributionTask) -> Self {
        Self {
            id: t.id,
            template_id: t.template_id,
            shop_id: t.shop_id,
            name: t.name,
            status: t.status,
            send_at: t.send_at,
            total_rows: t.total_rows,
            processed_rows: t.processed_rows,
            succeeded: t.succeeded,
            failed: t.failed,
            created_at: t.created_at,
            started_at: t.started_at,
            finished_at: t.finished_at,
            notify_url: t.notify_url,
            failure_reason: t.failure_reason,
            cancel_requested: t.cancel_requested,
            file_format: t.format.as_str().to_owned(),
        }
    }
}
