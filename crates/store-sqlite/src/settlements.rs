//! `SettlementStore` on SQLite: orders, their settlement rows and the coupons they move, each
//! step one `BEGIN IMMEDIATE` transaction (the single writer is the row lock).

use crate::SqliteStore;
use crate::coupons::{Query, decode_coupon};
use async_trait::async_trait;
use sqlx::{AssertSqlSafe, SqliteConnection};
use stampede_core::claim_ports::OutboxEvent;
use stampede_core::ports::StoreError;
use stampede_core::records::CouponRecord;
use stampede_core::settlement_ports::{
    ChangeOutcome, LockOutcome, SettlementStore, coupon_move_event,
};
use stampede_domain::coupon::CouponStatus;
use stampede_domain::ids::{CouponId, UserId};
use stampede_domain::order::{Applied, CouponMove, OrderChange, Settlement};
use stampede_domain::time::{from_ms, to_ms, truncate_ms};
use stampede_store_sql::rows::{
    LINE_COLUMNS, ORDER_COLUMNS, bind_line, bind_order, read_joined_settlement, read_order_owner,
};
use stampede_store_sql::text::{multi_insert, placeholders};
use stampede_store_sql::{Binder, Columns, SqlRow};
use stampede_store_sql::{db_err, refused};
use std::collections::HashMap;
use std::sync::LazyLock;

static INSERT_ORDER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO orders ({ORDER_COLUMNS}) VALUES ({})",
        placeholders(ORDER_COLUMNS)
    )
});
/// An order with its lines, one row per line (an order without lines joins one row of
/// NULLs): one statement, so one hop to SQLite's thread instead of two.
static SELECT_SETTLEMENT: LazyLock<String> = LazyLock::new(|| {
    "SELECT o.order_id, o.user_id, o.status, o.subtotal, o.discount, o.payable, \
     o.lock_expires_at_ms, o.created_at_ms, o.updated_at_ms, \
     l.coupon_id AS line_coupon_id, l.template_id AS line_template_id, \
     l.discount AS line_discount, l.status AS line_status, \
     l.valid_until_ms AS line_valid_until_ms \
     FROM orders o LEFT JOIN settlements l ON l.order_id = o.order_id \
     WHERE o.order_id = ? ORDER BY l.coupon_id"
        .to_owned()
});

async fn read_settlement(
    conn: &mut SqliteConnection,
    order_id: &str,
) -> Result<Option<Settlement>, StoreError> {
    let rows = sqlx::query(SELECT_SETTLEMENT.as_str())
        .bind(order_id)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
    read_joined_settlement(&rows, order_id)
}

fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// Appends `rows` as one multi-row INSERT into `table` to the statement group `sql`.
fn push_insert(sql: &mut String, table: &str, columns: &str, rows: usize) {
    if rows > 0 {
        sql.push_str(&multi_insert("INSERT", table, columns, rows));
        sql.push(';');
    }
}

/// Writes a decided change: order row, line statuses, coupon moves and their events, as ONE
/// group of statements (SQLite runs a multi-statement query with its placeholders bound in
/// order): each statement sent to SQLite's thread separately was a thread hand-off, and
/// those hand-offs, not SQLite, bounded lock → redeem.
async fn write_change(
    conn: &mut SqliteConnection,
    kind: &str,
    after: &Settlement,
    moves: &[CouponMove],
    now_ms: i64,
) -> Result<(), StoreError> {
    let mut events = Vec::with_capacity(moves.len());
    for m in moves {
        events.push(
            coupon_move_event(kind, after, m, from_ms(now_ms)).ok_or_else(|| {
                refused(format!(
                    "coupon {} moved but not in order {}",
                    m.coupon_id, after.order_id
                ))
            })?,
        );
    }
    let mut sql = String::with_capacity(512);
    sql.push_str("UPDATE orders SET status = ?, updated_at_ms = ? WHERE order_id = ?;");
    for _ in &after.coupons {
        sql.push_str("UPDATE settlements SET status = ? WHERE order_id = ? AND coupon_id = ?;");
    }
    for _ in moves {
        sql.push_str(
            "UPDATE user_coupons SET status = ?, locked_order_id = ?, used_at_ms = ? \
             WHERE id = ? AND user_id = ?;",
        );
    }
    push_insert(&mut sql, "outbox", OutboxEvent::COLUMNS, events.len());
    let mut q: Query = sqlx::query(AssertSqlSafe(sql))
        .text(after.status.as_str())
        .int(now_ms)
        .text(&after.order_id);
    for l in &after.coupons {
        q = q
            .text(l.status.as_str())
            .text(&after.order_id)
            .int(l.coupon_id.get());
    }
    for m in moves {
        q = q
            .text(m.to.as_str())
            .opt_text(m.locked_order.as_deref())
            .opt_int(m.used_at.map(to_ms))
            .int(m.coupon_id.get())
            .int(after.user_id.get());
    }
    for e in &events {
        q = e.bind(q);
    }
    q.execute(&mut *conn).await.map_err(db_err)?;
    Ok(())
}

/// The lock's reads in one statement: whether `order_id` exists (and whose it is), and the
/// state of each named coupon of `user`. Always one row at least (the order side is NULL when
/// there is no such order, the coupon side when no coupon matched).
async fn lock_reads(
    conn: &mut SqliteConnection,
    order_id: &str,
    user: UserId,
    named: &[CouponId],
) -> Result<(Option<i64>, HashMap<i64, (String, Option<String>)>), StoreError> {
    let sql = format!(
        "SELECT o.user_id AS order_user, c.id, c.status, c.locked_order_id \
         FROM (SELECT 1) AS one \
         LEFT JOIN orders o ON o.order_id = ? \
         LEFT JOIN user_coupons c ON c.user_id = ? AND c.id IN ({})",
        marks(named.len())
    );
    let mut q: Query = sqlx::query(AssertSqlSafe(sql))
        .text(order_id)
        .int(user.get());
    for id in named {
        q = q.int(id.get());
    }
    let rows = q.fetch_all(&mut *conn).await.map_err(db_err)?;
    let mut order_user = None;
    let mut found = HashMap::with_capacity(named.len());
    for r in &rows {
        order_user = order_user.or(r.opt_int("order_user")?);
        if let Some(id) = r.opt_int("id")? {
            found.insert(id, (r.text("status")?, r.opt_text("locked_order_id")?));
        }
    }
    Ok((order_user, found))
}

#[async_trait]
impl SettlementStore for SqliteStore {
    async fn lock_coupons(
        &self,
        s: &Settlement,
        events: &[OutboxEvent],
    ) -> Result<LockOutcome, StoreError> {
        // In the caller's order, so the first unusable coupon it named is the one reported.
        let named: Vec<CouponId> = s.coupons.iter().map(|l| l.coupon_id).collect();
        let s = s.stored_form();
        let events = events.to_vec();
        self.in_write_tx(move |conn| {
            Box::pin(async move {
                let (order_user, found) = lock_reads(conn, &s.order_id, s.user_id, &named).await?;
                if order_user.is_some()
                    && let Some(existing) = read_settlement(conn, &s.order_id).await?
                {
                    return Ok(if existing.user_id == s.user_id {
                        LockOutcome::Exists(existing)
                    } else {
                        LockOutcome::OtherUser
                    });
                }
                for &coupon_id in &named {
                    match found.get(&coupon_id.get()) {
                        Some((st, by)) => {
                            let status = CouponStatus::parse(st);
                            if status != Some(CouponStatus::Unused) {
                                return Ok(LockOutcome::NotUsable {
                                    coupon_id,
                                    status,
                                    locked_by: by.clone(),
                                });
                            }
                        }
                        None => {
                            return Ok(LockOutcome::NotUsable {
                                coupon_id,
                                status: None,
                                locked_by: None,
                            });
                        }
                    }
                }
                // One statement group: the order row first (settlement rows reference it),
                // the coupons, the lines, the events.
                let mut sql = format!(
                    "{};UPDATE user_coupons SET status = 'locked', locked_order_id = ? \
                     WHERE user_id = ? AND id IN ({});",
                    INSERT_ORDER.as_str(),
                    marks(s.coupons.len())
                );
                push_insert(&mut sql, "settlements", LINE_COLUMNS, s.coupons.len());
                push_insert(&mut sql, "outbox", OutboxEvent::COLUMNS, events.len());
                let mut q: Query = bind_order(sqlx::query(AssertSqlSafe(sql)), &s)
                    .text(&s.order_id)
                    .int(s.user_id.get());
                for l in &s.coupons {
                    q = q.int(l.coupon_id.get());
                }
                for l in &s.coupons {
                    q = bind_line(q, &s, l);
                }
                for e in &events {
                    q = e.bind(q);
                }
                q.execute(&mut *conn).await.map_err(db_err)?;
                Ok(LockOutcome::Locked(s))
            })
        })
        .await
    }

    async fn get_settlement(
        &self,
        order_id: &str,
        user: Option<UserId>,
    ) -> Result<Option<Settlement>, StoreError> {
        let mut conn = self.reader.acquire().await.map_err(db_err)?;
        let s = read_settlement(&mut conn, order_id).await?;
        Ok(s.filter(|s| user.is_none_or(|u| u == s.user_id)))
    }

    /// `now` is taken to the millisecond, the precision of every stored time.
    async fn change_settlement(
        &self,
        order_id: &str,
        user: UserId,
        change: &OrderChange,
        now: jiff::Timestamp,
    ) -> Result<ChangeOutcome, StoreError> {
        let now = truncate_ms(now);
        let order_id = order_id.to_owned();
        let change = change.clone();
        self.in_write_tx(move |conn| {
            Box::pin(async move {
                let Some(s) = read_settlement(conn, &order_id)
                    .await?
                    .filter(|s| s.user_id == user)
                else {
                    return Ok(ChangeOutcome::NotFound);
                };
                let now_ms = to_ms(now);
                let kind = change.event_kind();
                Ok(match s.apply(&change, now) {
                    Applied::Unchanged => ChangeOutcome::Unchanged(s),
                    Applied::Changed { settlement, moves } => {
                        write_change(conn, kind, &settlement, &moves, now_ms).await?;
                        ChangeOutcome::Changed(settlement)
                    }
                    Applied::Refused { conflict, release } => match release.map(|r| *r) {
                        Some(Applied::Changed { settlement, moves }) => {
                            write_change(conn, "coupon.released", &settlement, &moves, now_ms)
                                .await?;
                            ChangeOutcome::Refused {
                                conflict,
                                after: settlement,
                            }
                        }
                        _ => ChangeOutcome::Refused { conflict, after: s },
                    },
                })
            })
        })
        .await
    }

    async fn expired_locks(
        &self,
        now: jiff::Timestamp,
        limit: u32,
    ) -> Result<Vec<(String, UserId)>, StoreError> {
        let rows = sqlx::query(
            "SELECT order_id, user_id FROM orders WHERE status = 'locked' \
             AND lock_expires_at_ms <= ? ORDER BY lock_expires_at_ms LIMIT ?",
        )
        .bind(to_ms(now))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        rows.iter().map(read_order_owner).collect()
    }

    async fn unused_coupons(
        &self,
        user: UserId,
        limit: u32,
    ) -> Result<Vec<stampede_domain::coupon::UserCoupon>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {} FROM user_coupons WHERE user_id = ? AND status = 'unused' \
             ORDER BY valid_until_ms, id LIMIT ?",
            CouponRecord::COLUMNS
        )))
        .bind(user.get())
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        rows.iter().map(decode_coupon).collect()
    }
}
