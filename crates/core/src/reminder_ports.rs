//! Ports of reminders: the store of users' reminders and the notifiers
//! that deliver them.
//!
//! Storage is one row per (user, template) on the user's shard: `bits` (the reminders set, a
//! [`ReminderSet`]), `sent` (those delivered), the template's `claim_start` and `next_due`, a
//! wake-up hint that is never later than the earliest undelivered reminder of the row.
//! Set and delete are single-row atomic bit operations, so concurrent updates never lose a
//! bit; setting lowers `next_due`, deleting leaves it (an early hint only costs a look).
//!
//! Delivery is partitioned (SQLite: one partition; MySQL: one per shard table). A node leases
//! a partition before delivering from it, and records what it delivered in one transaction
//! that first checks its lease is still the current one (a fencing token), so two nodes never
//! both deliver the same batch while leases hold. The scheduler rewrites `next_due` only if
//! the row's `bits` are still the ones it read; otherwise it sets `next_due = now` and the row
//! is looked at again (a reminder set meanwhile is never lost).

use crate::claim_ports::OutboxEvent;
use crate::ports::StoreError;
use async_trait::async_trait;
use jiff::Timestamp;
use stampede_domain::ids::{TemplateId, UserId};
use stampede_domain::reminder::{Channel, Reminder, ReminderSet};

/// The outbox kind of an `app` reminder: the app-push service consumes it.
pub const REMINDER_DUE: &str = "reminder.due";

/// A stored row: a user's reminders for one template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderRow {
    pub user_id: UserId,
    pub template_id: TemplateId,
    /// The template's `claim_start` when the row was written (templates never move it).
    pub claim_start: Timestamp,
    pub bits: ReminderSet,
    pub sent: ReminderSet,
    pub next_due: Option<Timestamp>,
}

impl ReminderRow {
    /// Set and not delivered yet.
    pub fn pending(&self) -> ReminderSet {
        self.bits.minus(self.sent)
    }
}

/// A partition lease: who holds it and its fencing token (bumped on every change of holder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLease {
    pub partition: u32,
    pub owner: String,
    pub token: i64,
}

/// What a delivery pass decided for one row it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowUpdate {
    pub user_id: UserId,
    pub template_id: TemplateId,
    /// `bits` as read: `next_due` is written only if they are unchanged.
    pub read_bits: ReminderSet,
    /// Delivered (or given up or cancelled) now: added to `sent`.
    pub done: ReminderSet,
    /// When the row needs a look again (`None`: nothing left to deliver).
    pub next_due: Option<Timestamp>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Another node holds the partition now: nothing was recorded.
    #[error("the partition lease was lost")]
    LeaseLost,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[async_trait]
pub trait ReminderStore: Send + Sync + 'static {
    /// Sets `r` (atomically `bits |= r`, clearing its `sent` bit and lowering `next_due` to
    /// its due time), creating the row if needed.
    async fn set_reminder(
        &self,
        user: UserId,
        template: TemplateId,
        claim_start: Timestamp,
        r: Reminder,
    ) -> Result<(), StoreError>;

    /// Clears `r` (atomically `bits &= !r`). `false` when it was not set.
    async fn delete_reminder(
        &self,
        user: UserId,
        template: TemplateId,
        r: Reminder,
    ) -> Result<bool, StoreError>;

    /// The user's rows with any reminder set (one query on the user's shard).
    async fn user_reminders(&self, user: UserId) -> Result<Vec<ReminderRow>, StoreError>;

    /// How many delivery partitions there are (numbered from 0).
    fn partitions(&self) -> u32;

    /// Whether partition `p` has a row due at `now` (a cheap look before leasing).
    async fn any_due(&self, p: u32, now: Timestamp) -> Result<bool, StoreError>;

    /// Takes or renews the lease of partition `p` until `until`: granted when it is free,
    /// expired (`until_ms ≤ now`) or already `owner`'s. Renewing keeps the token, so
    /// `owner` must be unique per process (≤ 64 characters).
    async fn lease_partition(
        &self,
        p: u32,
        owner: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Option<PartitionLease>, StoreError>;

    /// Gives the lease up early (only if still `lease`'s), so another node need not wait.
    async fn release_partition(&self, lease: &PartitionLease) -> Result<(), StoreError>;

    /// Rows of partition `p` with `next_due ≤ now`, earliest first, at most `limit`.
    async fn due_reminders(
        &self,
        p: u32,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<ReminderRow>, StoreError>;

    /// Deletes up to `limit` rows of partition `p` whose sale started before
    /// `started_before` (their reminders are all behind them); returns how many.
    async fn purge_reminders(
        &self,
        p: u32,
        started_before: Timestamp,
        limit: u32,
    ) -> Result<u64, StoreError>;

    /// In one transaction: checks `lease` is still the partition's current lease (else
    /// `LeaseLost`, nothing written) and extends it to `lease_until`; applies every update
    /// (`sent |= done`; `next_due` as decided if `bits = read_bits`, else `now`); writes
    /// `events` (the `app` channel's `reminder.due`) to the outbox.
    async fn record_deliveries(
        &self,
        lease: &PartitionLease,
        lease_until: Timestamp,
        updates: &[RowUpdate],
        events: &[OutboxEvent],
        now: Timestamp,
    ) -> Result<(), DeliveryError>;
}

/// One reminder being delivered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DueReminder {
    /// Stable across redeliveries: receivers deduplicate on it.
    pub dedupe_id: String,
    #[serde(serialize_with = "as_string")]
    pub user_id: UserId,
    #[serde(serialize_with = "as_string")]
    pub template_id: TemplateId,
    pub template_name: String,
    pub channel: Channel,
    pub minutes_before: u32,
    #[serde(serialize_with = "rfc3339")]
    pub claim_start: Timestamp,
    #[serde(serialize_with = "rfc3339")]
    pub remind_at: Timestamp,
}

fn as_string<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn rfc3339<S: serde::Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(t)
}

/// Delivers reminders of one channel (webhook, email). The `app` channel needs none: its
/// reminders become outbox events in the transaction that records them.
#[async_trait]
pub trait ReminderNotifier: Send + Sync + 'static {
    fn channel(&self) -> Channel;

    /// Tries to deliver `batch` (retrying as the notifier sees fit) and says, per reminder
    /// in order, whether it was delivered. At least once: a reminder may have reached its
    /// receiver even when reported failed; it is then sent again with the same dedupe id.
    async fn deliver(&self, batch: &[DueReminder]) -> Vec<bool>;
}
