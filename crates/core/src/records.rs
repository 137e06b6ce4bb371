//! Stored forms: flat, primitive-only forms of domain values (integers, text, epoch
//! milliseconds), and the checks that turn them back into domain values. Every adapter that
//! stores a value uses the same form: the SQL adapters as rows (their column layout is in
//! `stampede-store-sql`), the Redis template cache as JSON. No SQL here.

use crate::ports::StoreError;
use stampede_domain::audit::{AuditAction, AuditEntry};
use stampede_domain::coupon::{CouponStatus, Origin, UserCoupon};
use stampede_domain::ids::{CouponId, GoodsId, ShopId, TemplateId, UserId};
use stampede_domain::money::Money;
use stampede_domain::template::{Kind, Scope, Source, Template, TemplateStatus};
use stampede_domain::time::{from_ms, to_ms};

/// A stored template. Times are epoch milliseconds; `goods_ids` is a comma-separated list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TemplateRecord {
    pub id: i64,
    pub shop_id: i64,
    pub name: String,
    pub instructions: String,
    pub source: String,
    pub scope: String,
    pub goods_ids: String,
    pub kind: String,
    pub amount_off: Option<i64>,
    pub threshold: Option<i64>,
    pub percent_off: Option<i64>,
    pub max_off: Option<i64>,
    pub stock_total: i64,
    pub stock: i64,
    pub claim_start_ms: i64,
    pub claim_end_ms: i64,
    pub valid_from_ms: Option<i64>,
    pub valid_until_ms: Option<i64>,
    pub validity_hours: Option<i64>,
    pub per_user_limit: i64,
    pub status: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

fn corrupt(what: &str, id: i64) -> StoreError {
    StoreError::Corrupt(format!("template {id}: bad {what}"))
}

fn money(v: Option<i64>, what: &str, id: i64) -> Result<Option<Money>, StoreError> {
    v.map(|c| Money::parse(c).map_err(|_| corrupt(what, id)))
        .transpose()
}

impl TemplateRecord {
    pub fn from_template(t: &Template) -> Self {
        Self {
            id: t.id.get(),
            shop_id: t.shop_id.get(),
            name: t.name.clone(),
            instructions: t.instructions.clone(),
            source: t.source.as_str().to_owned(),
            scope: t.scope.as_str().to_owned(),
            goods_ids: t
                .goods_ids
                .iter()
                .map(|g| g.to_string())
                .collect::<Vec<_>>()
                .join(","),
            kind: t.kind.as_str().to_owned(),
            amount_off: t.amount_off.map(Money::cents),
            threshold: t.threshold.map(Money::cents),
            percent_off: t.percent_off.map(i64::from),
            max_off: t.max_off.map(Money::cents),
            stock_total: t.stock_total,
            stock: t.stock,
            claim_start_ms: to_ms(t.claim_start),
            claim_end_ms: to_ms(t.claim_end),
            valid_from_ms: t.valid_from.map(to_ms),
            valid_until_ms: t.valid_until.map(to_ms),
            validity_hours: t.validity_hours.map(i64::from),
            per_user_limit: i64::from(t.per_user_limit),
            status: t.status.as_str().to_owned(),
            created_at_ms: to_ms(t.created_at),
            updated_at_ms: to_ms(t.updated_at),
        }
    }

    pub fn into_template(self) -> Result<Template, StoreError> {
        let id = self.id;
        let goods_ids = if self.goods_ids.is_empty() {
            Vec::new()
        } else {
            self.goods_ids
                .split(',')
                .map(|g| GoodsId::parse(g).ok_or_else(|| corrupt("goods_ids", id)))
                .collect::<Result<_, _>>()?
        };
        Ok(Template {
            id: TemplateId::new(id).ok_or_else(|| corrupt("id", id))?,
            shop_id: ShopId::from_stored(self.shop_id).ok_or_else(|| corrupt("shop_id", id))?,
            source: Source::parse(&self.source).ok_or_else(|| corrupt("source", id))?,
            scope: Scope::parse(&self.scope).ok_or_else(|| corrupt("scope", id))?,
            kind: Kind::parse(&self.kind).ok_or_else(|| corrupt("kind", id))?,
            status: TemplateStatus::parse(&self.status).ok_or_else(|| corrupt("status", id))?,
            name: self.name,
            instructions: self.instructions,
            goods_ids,
            amount_off: money(self.amount_off, "amount_off", id)?,
            threshold: money(self.threshold, "threshold", id)?,
            percent_off: self
                .percent_off
                .map(|p| u8::try_from(p).map_err(|_| corrupt("percent_off", id)))
                .transpose()?,
            max_off: money(self.max_off, "max_off", id)?,
            stock_total: self.stock_total,
            stock: self.stock,
            claim_start: from_ms(self.claim_start_ms),
            claim_end: from_ms(self.claim_end_ms),
            valid_from: self.valid_from_ms.map(from_ms),
            valid_until: self.valid_until_ms.map(from_ms),
            validity_hours: self
                .validity_hours
                .map(|h| u32::try_from(h).map_err(|_| corrupt("validity_hours", id)))
                .transpose()?,
            per_user_limit: u32::try_from(self.per_user_limit)
                .map_err(|_| corrupt("per_user_limit", id))?,
            created_at: from_ms(self.created_at_ms),
            updated_at: from_ms(self.updated_at_ms),
        })
    }
}

/// A stored user coupon (times in epoch ms), with the claim key that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponRecord {
    pub id: i64,
    pub user_id: i64,
    pub template_id: i64,
    pub shop_id: i64,
    pub seq: i64,
    pub origin: String,
    pub status: String,
    pub valid_from_ms: i64,
    pub valid_until_ms: i64,
    pub claimed_at_ms: i64,
    pub locked_order_id: Option<String>,
    pub used_at_ms: Option<i64>,
    pub claim_key: Option<String>,
}

impl CouponRecord {
    pub fn from_coupon(c: &UserCoupon, claim_key: Option<&str>) -> Self {
        Self {
            id: c.id.get(),
            user_id: c.user_id.get(),
            template_id: c.template_id.get(),
            shop_id: c.shop_id.get(),
            seq: i64::from(c.seq),
            origin: c.origin.as_str().to_owned(),
            status: c.status.as_str().to_owned(),
            valid_from_ms: to_ms(c.valid_from),
            valid_until_ms: to_ms(c.valid_until),
            claimed_at_ms: to_ms(c.claimed_at),
            locked_order_id: c.locked_order_id.clone(),
            used_at_ms: c.used_at.map(to_ms),
            claim_key: claim_key.map(str::to_owned),
        }
    }

    pub fn into_coupon(self) -> Result<UserCoupon, StoreError> {
        let id = self.id;
        let bad = |what: &str| StoreError::Corrupt(format!("coupon {id}: bad {what}"));
        Ok(UserCoupon {
            id: CouponId::new(id).ok_or_else(|| bad("id"))?,
            user_id: UserId::new(self.user_id).ok_or_else(|| bad("user_id"))?,
            template_id: TemplateId::new(self.template_id).ok_or_else(|| bad("template_id"))?,
            shop_id: ShopId::from_stored(self.shop_id).ok_or_else(|| bad("shop_id"))?,
            seq: u32::try_from(self.seq).map_err(|_| bad("seq"))?,
            origin: Origin::parse(&self.origin).ok_or_else(|| bad("origin"))?,
            status: CouponStatus::parse(&self.status).ok_or_else(|| bad("status"))?,
            valid_from: from_ms(self.valid_from_ms),
            valid_until: from_ms(self.valid_until_ms),
            claimed_at: from_ms(self.claimed_at_ms),
            locked_order_id: self.locked_order_id,
            used_at: self.used_at_ms.map(from_ms),
        })
    }
}

/// A stored audit entry; `before`/`after` are JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub template_id: i64,
    pub shop_id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub before_json: Option<String>,
    pub after_json: String,
}

impl AuditRecord {
    pub fn from_entry(e: &AuditEntry) -> Self {
        Self {
            template_id: e.template_id.get(),
            shop_id: e.shop_id.get(),
            at_ms: to_ms(e.at),
            actor: e.actor.clone(),
            action: e.action.as_str().to_owned(),
            before_json: e.before.as_ref().map(|v| v.to_string()),
            after_json: e.after.to_string(),
        }
    }

    pub fn into_entry(self) -> Result<AuditEntry, StoreError> {
        let bad = |what: &str| {
            StoreError::Corrupt(format!(
                "audit of template {}: bad {what}",
                self.template_id
            ))
        };
        let before = match &self.before_json {
            Some(s) => Some(serde_json::from_str(s).map_err(|_| bad("before"))?),
            None => None,
        };
        Ok(AuditEntry {
            template_id: TemplateId::new(self.template_id).ok_or_else(|| bad("template_id"))?,
            shop_id: ShopId::from_stored(self.shop_id).ok_or_else(|| bad("shop_id"))?,
            at: from_ms(self.at_ms),
            action: AuditAction::parse(&self.action).ok_or_else(|| bad("action"))?,
            after: serde_json::from_str(&self.after_json).map_err(|_| bad("after"))?,
            before,
            actor: self.actor,
        })
    }
}

/// A stored distribution task. Times are epoch milliseconds (`0` lease = free).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistributionRecord {
    pub id: i64,
    pub template_id: i64,
    pub shop_id: i64,
    pub name: String,
    pub status: String,
    pub send_at_ms: i64,
    pub total_rows: i64,
    pub processed_rows: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub notify_url: Option<String>,
    pub failure_reason: Option<String>,
    pub cancel_requested: bool,
    pub file_format: String,
    pub file_size: i64,
    pub batch_size: i64,
    pub created_by: String,
    pub idem_key: Option<String>,
    pub request_hash: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_until_ms: i64,
    pub notify_state: String,
    pub notify_attempts: i64,
    pub notify_next_at_ms: i64,
}

fn count(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl DistributionRecord {
    pub fn from_task(t: &stampede_domain::distribution::DistributionTask) -> Self {
        Self {
            id: t.id.get(),
            template_id: t.template_id.get(),
            shop_id: t.shop_id.get(),
            name: t.name.clone(),
            status: t.status.as_str().to_owned(),
            send_at_ms: to_ms(t.send_at),
            total_rows: count(t.total_rows),
            processed_rows: count(t.processed_rows),
            succeeded: count(t.succeeded),
            failed: count(t.failed),
            created_at_ms: to_ms(t.created_at),
            started_at_ms: t.started_at.map(to_ms),
            finished_at_ms: t.finished_at.map(to_ms),
            notify_url: t.notify_url.clone(),
            failure_reason: t.failure_reason.clone(),
            cancel_requested: t.cancel_requested,
            file_format: t.format.as_str().to_owned(),
            file_size: count(t.file_size),
            batch_size: i64::from(t.batch_size),
            created_by: t.created_by.clone(),
            idem_key: t.idempotency_key.clone(),
            request_hash: t.request_hash.clone(),
            lease_owner: t.lease_owner.clone(),
            lease_until_ms: t.lease_until_ms,
            notify_state: t.notify_state.as_str().to_owned(),
            notify_attempts: i64::from(t.notify_attempts),
            notify_next_at_ms: t.notify_next_at_ms,
        }
    }

    pub fn into_task(self) -> Result<stampede_domain::distribution::DistributionTask, StoreError> {
        use stampede_domain::distribution::{
            DistributionStatus, DistributionTask, FileFormat, NotifyState,
        };
        use stampede_domain::ids::DistributionId;
        let id = self.id;
        let bad = |what: &str| StoreError::Corrupt(format!("distribution {id}: bad {what}"));
        let unsigned = |v: i64, what: &str| u64::try_from(v).map_err(|_| bad(what));
        let time = |v: i64, _what: &str| -> Result<jiff::Timestamp, StoreError> { Ok(from_ms(v)) };
        Ok(DistributionTask {
            id: DistributionId::new(id).ok_or_else(|| bad("id"))?,
            template_id: TemplateId::new(self.template_id).ok_or_else(|| bad("template_id"))?,
            shop_id: ShopId::from_stored(self.shop_id).ok_or_else(|| bad("shop_id"))?,
            name: self.name,
            status: DistributionStatus::parse(&self.status).ok_or_else(|| bad("status"))?,
            send_at: time(self.send_at_ms, "send_at")?,
            total_rows: unsigned(self.total_rows, "total_rows")?,
            processed_rows: unsigned(self.processed_rows, "processed_rows")?,
            succeeded: unsigned(self.succeeded, "succeeded")?,
            failed: unsigned(self.failed, "failed")?,
            created_at: time(self.created_at_ms, "created_at")?,
            started_at: self
                .started_at_ms
                .map(|v| time(v, "started_at"))
                .transpose()?,
            finished_at: self
                .finished_at_ms
                .map(|v| time(v, "finished_at"))
                .transpose()?,
            notify_url: self.notify_url,
            failure_reason: self.failure_reason,
            cancel_requested: self.cancel_requested,
            format: FileFormat::parse(&self.file_format).ok_or_else(|| bad("file_format"))?,
            file_size: unsigned(self.file_size, "file_size")?,
            batch_size: u32::try_from(self.batch_size)
                .ok()
                .filter(|b| *b > 0)
                .ok_or_else(|| bad("batch_size"))?,
            created_by: self.created_by,
            idempotency_key: self.idem_key,
            request_hash: self.request_hash,
            lease_owner: self.lease_owner,
            lease_until_ms: self.lease_until_ms,
            notify_state: NotifyState::parse(&self.notify_state)
                .ok_or_else(|| bad("notify_state"))?,
            notify_attempts: u32::try_from(self.notify_attempts)
                .map_err(|_| bad("notify_attempts"))?,
            notify_next_at_ms: self.notify_next_at_ms,
        })
    }
}

/// A stored reminder row: one per user and template. Sets are stored as non-negative 64-bit
/// integers (36 bits used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderRecord {
    pub user_id: i64,
    pub template_id: i64,
    pub claim_start_ms: i64,
    pub bits: i64,
    pub sent: i64,
    pub next_due_ms: Option<i64>,
}

/// A reminder set as stored.
pub fn stored_set(set: stampede_domain::reminder::ReminderSet) -> i64 {
    // At most 36 bits: always fits.
    i64::try_from(set.bits()).unwrap_or(i64::MAX)
}

impl ReminderRecord {
    pub fn into_row(self) -> Result<crate::reminder_ports::ReminderRow, StoreError> {
        use stampede_domain::reminder::ReminderSet;
        let (user, template) = (self.user_id, self.template_id);
        let bad =
            |what: &str| StoreError::Corrupt(format!("reminder ({user}, {template}): bad {what}"));
        let set = |raw: i64, what: &str| {
            u64::try_from(raw)
                .map(ReminderSet::from_bits)
                .map_err(|_| bad(what))
        };
        Ok(crate::reminder_ports::ReminderRow {
            user_id: UserId::new(user).ok_or_else(|| bad("user_id"))?,
            template_id: TemplateId::new(template).ok_or_else(|| bad("template_id"))?,
            claim_start: from_ms(self.claim_start_ms),
            bits: set(self.bits, "bits")?,
            sent: set(self.sent, "sent")?,
            next_due: self.next_due_ms.map(from_ms),
        })
    }
}
