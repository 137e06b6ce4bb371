//! How each stored form is laid out in a SQL row: its columns in bind and read order, how it
//! is read back and how it is bound. Both adapters use these, so a column added here is added
//! for both (their migrations add it to the tables).

use crate::columns::{Binder, Columns};
use crate::error::corrupt;
use stampede_core::claim_ports::{ClaimIndex, OutboxEvent};
use stampede_core::ports::{Account, IdempotencyRecord, StoreError};
use stampede_core::records::{
    AuditRecord, CouponRecord, DistributionRecord, ReminderRecord, TemplateRecord,
};
use stampede_domain::auth::Role;
use stampede_domain::coupon::UserCoupon;
use stampede_domain::distribution::{FailedRow, RowFailure};
use stampede_domain::ids::{CouponId, DistributionId, ShopId, TemplateId, UserId};
use stampede_domain::money::Money;
use stampede_domain::order::{LineStatus, OrderStatus, Settlement, SettlementLine};
use stampede_domain::time::{from_ms, to_ms};

/// A value stored as one SQL row.
pub trait SqlRow: Sized {
    /// The columns, comma-separated, in the order `bind` binds and `read` expects.
    const COLUMNS: &'static str;

    fn read(row: &impl Columns) -> Result<Self, StoreError>;

    /// Binds every column, in `COLUMNS` order.
    fn bind<B: Binder>(&self, q: B) -> B;
}

impl SqlRow for TemplateRecord {
    const COLUMNS: &'static str = "id, shop_id, name, instructions, source, scope, goods_ids, \
         kind, amount_off, threshold, percent_off, max_off, stock_total, stock, claim_start_ms, \
         claim_end_ms, valid_from_ms, valid_until_ms, validity_hours, per_user_limit, status, \
         created_at_ms, updated_at_ms";

    fn read(row: &impl Columns) -> Result<Self, StoreError> {
        Ok(TemplateRecord {
            id: row.int("id")?,
            shop_id: row.int("shop_id")?,
            name: row.text("name")?,
            instructions: row.text("instructions")?,
            source: row.text("source")?,
            scope: row.text("scope")?,
            goods_ids: row.text("goods_ids")?,
            kind: row.text("kind")?,
            amount_off: row.opt_int("amount_off")?,
            threshold: row.opt_int("threshold")?,
            percent_off: row.opt_int("percent_off")?,
            max_off: row.opt_int("max_off")?,
            stock_total: row.int("stock_total")?,
            stock: row.int("stock")?,
            claim_start_ms: row.int("claim_start_ms")?,
            claim_end_ms: row.int("claim_end_ms")?,
            valid_from_ms: row.opt_int("valid_from_ms")?,
            valid_until_ms: row.opt_int("valid_until_ms")?,
            validity_hours: row.opt_int("validity_hours")?,
            per_user_limit: row.int("per_user_limit")?,
            status: row.text("status")?,
            created_at_ms: row.int("created_at_ms")?,
            updated_at_ms: row.int("updated_at_ms")?,
        })
    }

    fn bind<B: Binder>(&self, q: B) -> B {
        q.int(self.id)
            .int(self.shop_id)
            .text(&self.name)
            .text(&self.instructions)
            .text(&self.source)
            .text(&self.scope)
            .text(&self.goods_ids)
            .text(&self.kind)
            .opt_int(self.amount_off)
            .opt_int(self.threshold)
            .opt_int(self.percent_off)
            .opt_int(self.max_off)
            .int(self.stock_total)
            .int(self.stock)
            .int(self.claim_start_ms)
            .int(self.claim_end_ms)
            .opt_int(self.valid_from_ms)
            .opt_int(self.valid_until_ms)
            .opt_int(self.validity_hours)
            .int(self.per_user_limit)
            .text(&self.status)
            .int(self.created_at_ms)
            .int(self.updated_at_ms)
    }
}

impl SqlRow for AuditRecord {
    const COLUMNS: &'static str =
        "template_id, shop_id, at_ms, actor, action, before_json, after_json";

    fn read(row: &impl Columns) -> Result<Self, StoreError> {
        Ok(AuditRecord {
            template_id: row.int("template_id")?,
            shop_id: row.int("shop_id")?,
            at_ms: row.int("at_ms")?,
            actor: row.text("actor")?,
            action: row.text("action")?,
            before_json: row.opt_text("before_json")?,
            after_json: row.text("after_json")?,
        })
    }

    fn bind<B: Binder>(&self, q: B) -> B {
        q.int(self.template_id)
            .int(self.shop_id)
            .int(self.at_ms)
            .text(&self.actor)
            .text(&self.action)
            .opt_text(self.before_json.as_deref())
            .text(&self.after_json)
    }
}

impl SqlRow for CouponRecord {
    const COLUMNS: &'static str = "id, user_id, template_id, shop_id, seq, origin, status, \
         valid_from_ms, valid_until_ms, claimed_at_ms, locked_order_id, used_at_ms, claim_key";

    fn read(row: &impl Columns) -> Result<Self, StoreError> {
        Ok(CouponRecord {
            id: row.int("id")?,
            user_id: row.int("user_id")?,
            template_id: row.int("template_id")?,
            shop_id: row.int("shop_id")?,
            seq: row.int("seq")?,
            origin: row.text("origin")?,
            status: row.text("status")?,
            valid_from_ms: row.int("valid_from_ms")?,
            valid_until_ms: row.int("valid_until_ms")?,
            claimed_at_ms: row.int("claimed_at_ms")?,
            locked_order_id: row.opt_text("locked_order_id")?,
            used_at_ms: row.opt_int("used_at_ms")?,
            claim_key: row.opt_text("claim_key")?,
        })
    }

    fn bind<B: Binder>(&self, q: B) -> B {
        q.int(self.id)
            .int(self.user_id)
            .int(self.template_id)
            .int(self.shop_id)
            .int(self.seq)
            .text(&self.origin)
            .text(&self.status)
            .int(self.valid_from_ms)
            .int(self.valid_until_ms)
            .int(self.claimed_at_ms)
            .opt_text(self.locked_order_id.as_deref())
            .opt_int(self.used_at_ms)
            .opt_text(self.claim_key.as_deref())
    }
}

impl SqlRow for OutboxEvent {
    const COLUMNS: &'static str =
        "event_id, kind, aggregate_id, payload, created_at_ms, traceparent";

    fn read(row: &impl Columns) -> Result<Self, StoreError> {
        Ok(OutboxEvent {
            id: row.text("event_id")?,
            kind: row.text("kind")?,
            aggregate_id: row.int("aggregate_id")?,
            payload: row.text("payload")?,
            created_at_ms: row.int("created_at_ms")?,
            traceparent: row.opt_text("traceparent")?,
        })
    }

    fn bind<B: Binder>(&self, q: B) -> B {
        q.text(&self.id)
            .text(&self.kind)
            .int(self.aggregate_id)
            .text(&self.payload)
            .int(self.created_at_ms)
            .opt_text(self.traceparent.as_deref())
    }
}

impl SqlRow for DistributionRecord {
    const COLUMNS: &'static str = "id, template_id, shop_id, name, status, send_at_ms, \
         total_rows, processed_rows, succeeded, failed, created_at_ms, started_at_ms, \
         finished_at_ms, notify_url, failure_reason, cancel_requested, file_format, file_size, \
         batch_size, created_by, idem_key, request_hash, lease_owner, lease_until_ms, \
         notify_state, notify_attempts, notify_next_at_ms";

    fn read(row: &impl Columns) -> Result<Self, StoreError> {
        Ok(DistributionRecord {
            id: row.int("id")?,
            template_id: row.int("template_id")?,
            shop_id: row.int("shop_id")?,
            name: row.text("name")?,
            status: row.text("status")?,
            send_at_ms: row.int("send_at_ms")?,
            total_rows: row.int("total_rows")?,
            processed_rows: row.int("processed_rows")?,
            succeeded: row.int("succeeded")?,
            failed: row.int("failed")?,
            created_at_ms: row.int("created_at_ms")?,
            started_at_ms: row.opt_int("started_at_ms")?,
            finished_at_ms: row.opt_int("finished_at_ms")?,
            notify_url: row.opt_text("notify_url")?,
            failure_reason: row.opt_text("failure_reason")?,
            cancel_requested: row.flag("cancel_requested")?,
            file_format: row.text("file_format")?,
            file_size: row.int("file_size")?,
            batch_size: row.int("batch_size")?,
            created_by: row.text("created_by")?,
            idem_key: row.opt_text("idem_key")?,
            request_hash: row.opt_text("request_hash")?,
            lease_owner: row.opt_text("lease_owner")?,
            lease_until_ms: row.int("lease_until_ms")?,
            notify_state: row.text("notify_state")?,
            notify_attempts: row.int("notify_attempts")?,
            notify_next_at_ms: row.int("notify_next_at_ms")?,
        })
    }

    fn bind<B: Binder>(&self, q: B) -> B {
        q.int(self.id)
            .int(self.template_id)
            .int(self.shop_id)
            .text(&self.name)
            .text(&self.status)
            .int(self.send_at_ms)
            .int(self.total_rows)
            .int(self.processed_rows)
            .int(self.succeeded)
            .int(self.failed)
            .int(self.created_at_ms)
            .opt_int(self.started_at_ms)
            .opt_int(self.finished_at_ms)
            .opt_text(self.notify_url.as_deref())
            .opt_text(self.failure_reason.as_deref())
            .flag(self.cancel_requested)
            .text(&self.file_format)
            .int(self.file_size)
            .int(self.batch_size)
            .text(&self.created_by)
            .opt_text(self.idem_key.as_deref())
            .opt_text(self.request_hash.as_deref())
            .opt_text(self.lease_owner.as_deref())
            .int(self.lease_until_ms)
            .text(&self.notify_state)
            .int(self.notify_attempts)
            .int(self.notify_next_at_ms)
    }
}

impl SqlRow for ReminderRecord {
    const COLUMNS: &'static str = "user_id, template_id, claim_start_ms, bits, sent, next_due_ms";

    fn read(row: &impl Columns) -> Result<Self, StoreError> {
        Ok(ReminderRecord {
            user_id: row.int("user_id")?,
            template_id: row.int("template_id")?,
            claim_start_ms: row.int("claim_start_ms")?,
            bits: row.int("bits")?,
            sent: row.int("sent")?,
            next_due_ms: row.opt_int("next_due_ms")?,
        })
    }

    fn bind<B: Binder>(&self, q: B) -> B {
        q.int(self.user_id)
            .int(self.template_id)
            .int(self.claim_start_ms)
            .int(self.bits)
            .int(self.sent)
            .opt_int(self.next_due_ms)
    }
}

impl SqlRow for Account {
    const COLUMNS: &'static str = "id, username, password_hash, role, shop_id, created_at_ms";

    fn read(row: &impl Columns) -> Result<Self, StoreError> {
        let id = row.int("id")?;
        let what = format!("account {id}");
        let role = row.text("role")?;
        Ok(Account {
            id,
            username: row.text("username")?,
            password_hash: row.text("password_hash")?,
            role: Role::parse(&role).ok_or_else(|| corrupt(&what, "role"))?,
            shop_id: row
                .opt_int("shop_id")?
                .map(|s| ShopId::from_stored(s).ok_or_else(|| corrupt(&what, "shop_id")))
                .transpose()?,
            created_at: from_ms(row.int("created_at_ms")?),
        })
    }

    fn bind<B: Binder>(&self, q: B) -> B {
        q.int(self.id)
            .text(&self.username)
            .text(&self.password_hash)
            .text(self.role.as_str())
            .opt_int(self.shop_id.map(ShopId::get))
            .int(to_ms(self.created_at))
    }
}

/// The `orders` columns, in `bind_order` order.
pub const ORDER_COLUMNS: &str = "order_id, user_id, status, subtotal, discount, payable, \
     lock_expires_at_ms, created_at_ms, updated_at_ms";

/// The `settlements` (order line) columns, in `bind_line` order.
pub const LINE_COLUMNS: &str =
    "order_id, coupon_id, user_id, template_id, discount, status, valid_until_ms";

pub fn bind_order<B: Binder>(q: B, s: &Settlement) -> B {
    q.text(&s.order_id)
        .int(s.user_id.get())
        .text(s.status.as_str())
        .int(s.subtotal.cents())
        .int(s.discount.cents())
        .int(s.payable.cents())
        .int(to_ms(s.lock_expires_at))
        .int(to_ms(s.created_at))
        .int(to_ms(s.updated_at))
}

pub fn bind_line<B: Binder>(q: B, s: &Settlement, l: &SettlementLine) -> B {
    q.text(&s.order_id)
        .int(l.coupon_id.get())
        .int(s.user_id.get())
        .int(l.template_id.get())
        .int(l.discount.cents())
        .text(l.status.as_str())
        .int(to_ms(l.valid_until))
}

fn money(raw: i64, what: &str, field: &str) -> Result<Money, StoreError> {
    Money::parse(raw).map_err(|_| corrupt(what, field))
}

/// An order row, without its lines (`coupons` is empty).
pub fn read_order(row: &impl Columns) -> Result<Settlement, StoreError> {
    let order_id = row.text("order_id")?;
    let what = format!("order {order_id}");
    let status = row.text("status")?;
    Ok(Settlement {
        user_id: UserId::new(row.int("user_id")?).ok_or_else(|| corrupt(&what, "user_id"))?,
        status: OrderStatus::parse(&status).ok_or_else(|| corrupt(&what, "status"))?,
        subtotal: money(row.int("subtotal")?, &what, "subtotal")?,
        discount: money(row.int("discount")?, &what, "discount")?,
        payable: money(row.int("payable")?, &what, "payable")?,
        lock_expires_at: from_ms(row.int("lock_expires_at_ms")?),
        coupons: Vec::new(),
        created_at: from_ms(row.int("created_at_ms")?),
        updated_at: from_ms(row.int("updated_at_ms")?),
        order_id,
    })
}

/// A line row (`coupon_id, template_id, discount, status, valid_until_ms`) of `order_id`.
pub fn read_line(row: &impl Columns, order_id: &str) -> Result<SettlementLine, StoreError> {
    let coupon = row.int("coupon_id")?;
    let what = format!("order {order_id}, coupon {coupon}");
    let status = row.text("status")?;
    Ok(SettlementLine {
        coupon_id: CouponId::new(coupon).ok_or_else(|| corrupt(&what, "coupon_id"))?,
        template_id: TemplateId::new(row.int("template_id")?)
            .ok_or_else(|| corrupt(&what, "template_id"))?,
        discount: money(row.int("discount")?, &what, "discount")?,
        status: LineStatus::parse(&status).ok_or_else(|| corrupt(&what, "status"))?,
        valid_until: from_ms(row.int("valid_until_ms")?),
    })
}

/// A settlement from the rows of `orders o LEFT JOIN settlements l`, the line columns
/// selected as `line_<column>` (both dialects read an order and its lines in one statement);
/// `None` when there is no row.
pub fn read_joined_settlement<R: Columns>(
    rows: &[R],
    order_id: &str,
) -> Result<Option<Settlement>, StoreError> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut s = read_order(first)?;
    for row in rows {
        // An order without lines joins one row of NULLs.
        if row.opt_int("line_coupon_id")?.is_some() {
            s.coupons
                .push(read_line(&crate::Prefixed::new(row, "line_"), order_id)?);
        }
    }
    Ok(Some(s))
}

/// A `(user_id, seq)` row: one coupon of a template, as the user's seq.
pub fn read_user_seq(row: &impl Columns) -> Result<(UserId, u32), StoreError> {
    let user = row.int("user_id")?;
    let seq = row.int("seq")?;
    Ok((
        UserId::new(user).ok_or_else(|| corrupt(format!("coupon of user {user}"), "user_id"))?,
        u32::try_from(seq).map_err(|_| corrupt(format!("coupon of user {user}"), "seq"))?,
    ))
}

/// Adds a `(user_id, seq, id, claim_key)` row to a claim index: the user's seq, and the key
/// and coupon id when a keyed claim made it (`claim_key` is null otherwise).
pub fn push_claim_index_row(index: &mut ClaimIndex, row: &impl Columns) -> Result<(), StoreError> {
    let (user, seq) = read_user_seq(row)?;
    index.user_seqs.push((user, seq));
    if let Some(key) = row.opt_text("claim_key")? {
        let id = row.int("id")?;
        let id = CouponId::new(id).ok_or_else(|| corrupt(format!("coupon {id}"), "id"))?;
        index.keyed.push((user, key, id));
    }
    Ok(())
}

/// A coupon row made by a keyed claim: its key and the coupon.
pub fn read_keyed(row: &impl Columns) -> Result<(String, UserCoupon), StoreError> {
    let mut r = CouponRecord::read(row)?;
    let key = r.claim_key.take().unwrap_or_default();
    Ok((key, r.into_coupon()?))
}

/// A failed row of a distribution task, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRecord {
    pub distribution_id: i64,
    pub row_no: i64,
    pub raw: String,
    pub reason: String,
}

impl FailureRecord {
    /// `f` of task `task`, its raw value cut to `max_raw_chars` characters (the column's
    /// width where it has one).
    pub fn new(task: DistributionId, f: &FailedRow, max_raw_chars: usize) -> Self {
        FailureRecord {
            distribution_id: task.get(),
            row_no: i64::try_from(f.row).unwrap_or(i64::MAX),
            raw: f.raw.chars().take(max_raw_chars).collect(),
            reason: f.reason.as_str().to_owned(),
        }
    }

    pub fn into_failed_row(self) -> Result<FailedRow, StoreError> {
        let what = format!("failure {} of task {}", self.row_no, self.distribution_id);
        Ok(FailedRow {
            row: u64::try_from(self.row_no).map_err(|_| corrupt(&what, "row_no"))?,
            reason: RowFailure::parse(&self.reason).ok_or_else(|| corrupt(&what, "reason"))?,
            raw: self.raw,
        })
    }
}

impl SqlRow for FailureRecord {
    const COLUMNS: &'static str = "distribution_id, row_no, raw, reason";

    fn read(row: &impl Columns) -> Result<Self, StoreError> {
        Ok(FailureRecord {
            distribution_id: row.int("distribution_id")?,
            row_no: row.int("row_no")?,
            raw: row.text("raw")?,
            reason: row.text("reason")?,
        })
    }

    fn bind<B: Binder>(&self, q: B) -> B {
        q.int(self.distribution_id)
            .int(self.row_no)
            .text(&self.raw)
            .text(&self.reason)
    }
}

/// An `(order_id, user_id)` row: an order and whose it is.
pub fn read_order_owner(row: &impl Columns) -> Result<(String, UserId), StoreError> {
    let order_id = row.text("order_id")?;
    let user = row.int("user_id")?;
    let user = UserId::new(user).ok_or_else(|| corrupt(format!("order {order_id}"), "user_id"))?;
    Ok((order_id, user))
}

impl SqlRow for IdempotencyRecord {
    const COLUMNS: &'static str = "shop_id, idem_key, request_hash, template_id, created_at_ms";

    fn read(row: &impl Columns) -> Result<Self, StoreError> {
        let key = row.text("idem_key")?;
        let what = format!("idempotency key {key:?}");
        Ok(IdempotencyRecord {
            shop_id: ShopId::from_stored(row.int("shop_id")?)
                .ok_or_else(|| corrupt(&what, "shop_id"))?,
            request_hash: row.text("request_hash")?,
            template_id: TemplateId::new(row.int("template_id")?)
                .ok_or_else(|| corrupt(&what, "template_id"))?,
            created_at: from_ms(row.int("created_at_ms")?),
            key,
        })
    }

    fn bind<B: Binder>(&self, q: B) -> B {
        q.int(self.shop_id.get())
            .text(&self.key)
            .text(&self.request_hash)
            .int(self.template_id.get())
            .int(to_ms(self.created_at))
    }
}
