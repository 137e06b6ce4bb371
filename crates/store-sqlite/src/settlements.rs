//! `SettlementStore` on SQLite: orders, their settlement rows and the coupons they move, each
//! step one `BEGIN IMMEDIATE` transaction (the single writer is the row lock).

use crate::SqliteStore;
use crate::coupons::{INSERT_EVENTS, decode_coupon};
use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Row, SqliteConnection};
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
use stampede_store_sql::SqlRow;
use stampede_store_sql::rows::{
    LINE_COLUMNS, ORDER_COLUMNS, bind_line, bind_order, read_line, read_order, read_order_owner,
};
use stampede_store_sql::text::placeholders;
use stampede_store_sql::{db_err, refused};
use std::sync::LazyLock;

static INSERT_ORDER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO orders ({ORDER_COLUMNS}) VALUES ({})",
        placeholders(ORDER_COLUMNS)
    )
});
static INSERT_LINE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO settlements ({LINE_COLUMNS}) VALUES ({})",
        placeholders(LINE_COLUMNS)
    )
});
static SELECT_ORDER: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = ?"));
static SELECT_LINES: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {LINE_COLUMNS} FROM settlements WHERE order_id = ? ORDER BY coupon_id")
});

async fn read_settlement(
    conn: &mut SqliteConnection,
    order_id: &str,
) -> Result<Option<Settlement>, StoreError> {
    let Some(o) = sqlx::query(SELECT_ORDER.as_str())
        .bind(order_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?
    else {
        return Ok(None);
    };
    let lines = sqlx::query(SELECT_LINES.as_str())
        .bind(order_id)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
    let mut s = read_order(&o)?;
    s.coupons = lines
        .iter()
        .map(|l| read_line(l, order_id))
        .collect::<Result<_, _>>()?;
    Ok(Some(s))
}

/// Writes a decided change: order row, line statuses, coupon moves and their events.
async fn write_change(
    conn: &mut SqliteConnection,
    kind: &str,
    after: &Settlement,
    moves: &[CouponMove],
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE orders SET status = ?, updated_at_ms = ? WHERE order_id = ?")
        .bind(after.status.as_str())
        .bind(now_ms)
        .bind(after.order_id.as_str())
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    for l in &after.coupons {
        sqlx::query("UPDATE settlements SET status = ? WHERE order_id = ? AND coupon_id = ?")
            .bind(l.status.as_str())
            .bind(after.order_id.as_str())
            .bind(l.coupon_id.get())
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
    }
    let mut events = Vec::with_capacity(moves.len());
    for m in moves {
        sqlx::query(
            "UPDATE user_coupons SET status = ?, locked_order_id = ?, used_at_ms = ? \
             WHERE id = ? AND user_id = ?",
        )
        .bind(m.to.as_str())
        .bind(m.locked_order.as_deref())
        .bind(m.used_at.map(to_ms))
        .bind(m.coupon_id.get())
        .bind(after.user_id.get())
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
        events.push(
            coupon_move_event(kind, after, m, from_ms(now_ms)).ok_or_else(|| {
                refused(format!(
                    "coupon {} moved but not in order {}",
                    m.coupon_id, after.order_id
                ))
            })?,
        );
    }
    INSERT_EVENTS.insert(conn, &events).await?;
    Ok(())
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
                if let Some(existing) = read_settlement(conn, &s.order_id).await? {
                    return Ok(if existing.user_id == s.user_id {
                        LockOutcome::Exists(existing)
                    } else {
                        LockOutcome::OtherUser
                    });
                }
                for &coupon_id in &named {
                    let row = sqlx::query(
                        "SELECT status, locked_order_id FROM user_coupons WHERE id = ? AND user_id = ?",
                    )
                    .bind(coupon_id.get())
                    .bind(s.user_id.get())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(db_err)?;
                    let found = row
                        .map(|r| -> Result<_, StoreError> {
                            let st: String = r.try_get("status").map_err(db_err)?;
                            let by: Option<String> = r.try_get("locked_order_id").map_err(db_err)?;
                            Ok((CouponStatus::parse(&st), by))
                        })
                        .transpose()?;
                    match found {
                        Some((Some(CouponStatus::Unused), _)) => {}
                        Some((status, locked_by)) => {
                            return Ok(LockOutcome::NotUsable {
                                coupon_id,
                                status,
                                locked_by,
                            });
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
                // The order row first: settlement rows reference it.
                bind_order(sqlx::query(INSERT_ORDER.as_str()), &s)
                .execute(&mut *conn)
                .await
                .map_err(db_err)?;
                for l in &s.coupons {
                    sqlx::query(
                        "UPDATE user_coupons SET status = 'locked', locked_order_id = ? \
                         WHERE id = ? AND user_id = ?",
                    )
                    .bind(s.order_id.as_str())
                    .bind(l.coupon_id.get())
                    .bind(s.user_id.get())
                    .execute(&mut *conn)
                    .await
                    .map_err(db_err)?;
                    bind_line(sqlx::query(INSERT_LINE.as_str()), &s, l)
                    .execute(&mut *conn)
                    .await
                    .map_err(db_err)?;
                }
                INSERT_EVENTS.insert(conn, &events).await?;
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
