//! `SettlementStore` on SQLite: orders, their settlement rows and the coupons they move, each
//! step one `BEGIN IMMEDIATE` transaction (the single writer is the row lock).

use crate::SqliteStore;
use crate::coupons::{INSERT_EVENTS, bind_event, decode_coupon};
use crate::error::{db, refused};
use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Row, SqliteConnection};
use stampede_core::claim_ports::OutboxEvent;
use stampede_core::ports::StoreError;
use stampede_core::records::COUPON_COLUMNS;
use stampede_core::settlement_ports::{
    ChangeOutcome, LockOutcome, SettlementStore, coupon_move_event,
};
use stampede_domain::coupon::CouponStatus;
use stampede_domain::ids::{CouponId, TemplateId, UserId};
use stampede_domain::money::Money;
use stampede_domain::order::{
    Applied, CouponMove, LineStatus, OrderChange, OrderStatus, Settlement, SettlementLine,
};
use stampede_domain::time::{from_ms, to_ms, truncate_ms};

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("settlement: bad {what}"))
}

fn money(v: i64, what: &str) -> Result<Money, StoreError> {
    Money::parse(v).map_err(|_| corrupt(what))
}

async fn read_settlement(
    conn: &mut SqliteConnection,
    order_id: &str,
) -> Result<Option<Settlement>, StoreError> {
    let Some(o) = sqlx::query(
        "SELECT user_id, status, subtotal, discount, payable, lock_expires_at_ms, created_at_ms, \
         updated_at_ms FROM orders WHERE order_id = ?",
    )
    .bind(order_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?
    else {
        return Ok(None);
    };
    let lines = sqlx::query(
        "SELECT coupon_id, template_id, discount, status, valid_until_ms FROM settlements \
         WHERE order_id = ? ORDER BY coupon_id",
    )
    .bind(order_id)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let mut coupons = Vec::with_capacity(lines.len());
    for l in &lines {
        let status: String = l.try_get("status").map_err(db)?;
        coupons.push(SettlementLine {
            coupon_id: CouponId::new(l.try_get("coupon_id").map_err(db)?)
                .ok_or_else(|| corrupt("coupon id"))?,
            template_id: TemplateId::new(l.try_get("template_id").map_err(db)?)
                .ok_or_else(|| corrupt("template id"))?,
            discount: money(l.try_get("discount").map_err(db)?, "line discount")?,
            status: LineStatus::parse(&status).ok_or_else(|| corrupt("line status"))?,
            valid_until: from_ms(l.try_get("valid_until_ms").map_err(db)?),
        });
    }
    let status: String = o.try_get("status").map_err(db)?;
    Ok(Some(Settlement {
        order_id: order_id.to_owned(),
        user_id: UserId::new(o.try_get("user_id").map_err(db)?).ok_or_else(|| corrupt("user"))?,
        status: OrderStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
        subtotal: money(o.try_get("subtotal").map_err(db)?, "subtotal")?,
        discount: money(o.try_get("discount").map_err(db)?, "discount")?,
        payable: money(o.try_get("payable").map_err(db)?, "payable")?,
        lock_expires_at: from_ms(o.try_get("lock_expires_at_ms").map_err(db)?),
        coupons,
        created_at: from_ms(o.try_get("created_at_ms").map_err(db)?),
        updated_at: from_ms(o.try_get("updated_at_ms").map_err(db)?),
    }))
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
        .map_err(db)?;
    for l in &after.coupons {
        sqlx::query("UPDATE settlements SET status = ? WHERE order_id = ? AND coupon_id = ?")
            .bind(l.status.as_str())
            .bind(after.order_id.as_str())
            .bind(l.coupon_id.get())
            .execute(&mut *conn)
            .await
            .map_err(db)?;
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
        .map_err(db)?;
        events.push(
            coupon_move_event(kind, after, m, from_ms(now_ms)).ok_or_else(|| {
                refused(format!(
                    "coupon {} moved but not in order {}",
                    m.coupon_id, after.order_id
                ))
            })?,
        );
    }
    INSERT_EVENTS.run(conn, &events, bind_event).await?;
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
        self.in_write_tx(|conn| {
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
                    .map_err(db)?;
                    let found = row
                        .map(|r| -> Result<_, StoreError> {
                            let st: String = r.try_get("status").map_err(db)?;
                            let by: Option<String> = r.try_get("locked_order_id").map_err(db)?;
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
                sqlx::query(
                    "INSERT INTO orders (order_id, user_id, status, subtotal, discount, payable, \
                     lock_expires_at_ms, created_at_ms, updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(s.order_id.as_str())
                .bind(s.user_id.get())
                .bind(s.status.as_str())
                .bind(s.subtotal.cents())
                .bind(s.discount.cents())
                .bind(s.payable.cents())
                .bind(to_ms(s.lock_expires_at))
                .bind(to_ms(s.created_at))
                .bind(to_ms(s.updated_at))
                .execute(&mut *conn)
                .await
                .map_err(db)?;
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
                    .map_err(db)?;
                    sqlx::query(
                        "INSERT INTO settlements (order_id, coupon_id, user_id, template_id, \
                         discount, status, valid_until_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    )
                    .bind(s.order_id.as_str())
                    .bind(l.coupon_id.get())
                    .bind(s.user_id.get())
                    .bind(l.template_id.get())
                    .bind(l.discount.cents())
                    .bind(l.status.as_str())
                    .bind(to_ms(l.valid_until))
                    .execute(&mut *conn)
                    .await
                    .map_err(db)?;
                }
                INSERT_EVENTS.run(conn, &events, bind_event).await?;
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
        let mut conn = self.reader.acquire().await.map_err(db)?;
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
        self.in_write_tx(|conn| {
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
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                let user: i64 = r.try_get("user_id").map_err(db)?;
                Ok((
                    r.try_get("order_id").map_err(db)?,
                    UserId::new(user).ok_or_else(|| corrupt("user"))?,
                ))
            })
            .collect()
    }

    async fn unused_coupons(
        &self,
        user: UserId,
        limit: u32,
    ) -> Result<Vec<stampede_domain::coupon::UserCoupon>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COUPON_COLUMNS} FROM user_coupons WHERE user_id = ? AND status = 'unused' \
             ORDER BY valid_until_ms, id LIMIT ?"
        )))
        .bind(user.get())
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        rows.iter().map(decode_coupon).collect()
    }
}
