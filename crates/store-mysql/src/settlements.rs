//! `SettlementStore`: orders and the coupons they hold, on the shard of the order's *user* —
//! the route of the user's coupons and outbox — so each lifecycle step (lock, redeem, release,
//! refund, expiry) is one local transaction over the order row (`orders_{t}`), its lines
//! (`settlements_{t}`), the coupons (`user_coupons_{t}`) and one event per coupon moved
//! (`outbox_{t}`).
//!
//! The store only locks and writes: what a change does is decided by the domain
//! (`Settlement::apply`) on the rows this transaction locked.
//!
//! `order_directory` in `databases[0]` maps an order id to its user, so a lookup by order id
//! alone is routed, and one order id never serves two users. It is written before the shard
//! transaction, like the template directory: a crash in between, or a lock refused because a
//! coupon was not usable, leaves a row that points at no order (read as "no settlement") and
//! keeps the id for that user.
//!
//! Lock order: the coupons of a lock are read `FOR UPDATE` in one statement by primary key and
//! a change moves its coupons in coupon id order, so writers of one user's coupons take their
//! row locks in ascending id order and do not deadlock each other.

use crate::MysqlStore;
use crate::coupons::{insert_records, insert_rows};
use crate::error::gave_up;
use crate::listing::union;
use crate::router::Shard;
use async_trait::async_trait;
use futures::future::try_join_all;
use jiff::Timestamp;
use sqlx::AssertSqlSafe;
use sqlx::mysql::MySqlConnection;
use stampede_core::claim_ports::OutboxEvent;
use stampede_core::ports::StoreError;
use stampede_core::records::CouponRecord;
use stampede_core::settlement_ports::{
    ChangeOutcome, LockOutcome, SettlementStore, coupon_move_event,
};
use stampede_domain::coupon::{CouponStatus, UserCoupon};
use stampede_domain::ids::{CouponId, UserId};
use stampede_domain::order::{
    Applied, CouponMove, LineStatus, MAX_ORDER_COUPONS, OrderChange, OrderStatus, Settlement,
    valid_order_id,
};
use stampede_domain::time::{to_ms, truncate_ms};
use stampede_store_sql::SqlRow;
use stampede_store_sql::error::is_unique_violation;
use stampede_store_sql::rows::{
    LINE_COLUMNS, ORDER_COLUMNS, bind_line, bind_order, read_joined_settlement, read_order_owner,
};
use stampede_store_sql::text::placeholders;
use stampede_store_sql::{Columns, db_err, refused};
use std::collections::{BTreeMap, HashMap, HashSet};

/// What `lock_coupons` must be given: a valid order id, 1..=`MAX_ORDER_COUPONS` distinct
/// coupons, and a settlement that is (wholly) locked.
fn check_lock(s: &Settlement) -> Result<(), StoreError> {
    let refuse = |why: &str| Err(refused(format!("locking order {:?}: {why}", s.order_id)));
    if !valid_order_id(&s.order_id) {
        return refuse("not a valid order id");
    }
    if s.coupons.is_empty() || s.coupons.len() > MAX_ORDER_COUPONS {
        return refuse("an order locks 1 to MAX_ORDER_COUPONS coupons");
    }
    let mut ids = HashSet::new();
    if !s.coupons.iter().all(|l| ids.insert(l.coupon_id)) {
        return refuse("a coupon appears twice");
    }
    if s.status != OrderStatus::Locked || s.coupons.iter().any(|l| l.status != LineStatus::Locked) {
        return refuse("the settlement to write is not locked");
    }
    Ok(())
}

/// The settlement of `order_id` in `shard` (of `user` when given), lines by coupon id. One
/// statement, so the order and its lines are read as of one moment; `lock` reads them
/// `FOR UPDATE` (inside the caller's transaction).
async fn select_settlement(
    conn: &mut MySqlConnection,
    shard: Shard,
    order_id: &str,
    user: Option<UserId>,
    lock: bool,
) -> Result<Option<Settlement>, StoreError> {
    let sql = format!(
        "SELECT o.order_id, o.user_id, o.status, o.subtotal, o.discount, o.payable, \
         o.lock_expires_at_ms, o.created_at_ms, o.updated_at_ms, \
         l.coupon_id AS line_coupon_id, l.template_id AS line_template_id, \
         l.discount AS line_discount, l.status AS line_status, \
         l.valid_until_ms AS line_valid_until_ms \
         FROM {} o LEFT JOIN {} l ON l.order_id = o.order_id \
         WHERE o.order_id = ?{} ORDER BY l.coupon_id{}",
        shard.orders_table(),
        shard.settlements_table(),
        if user.is_some() {
            " AND o.user_id = ?"
        } else {
            ""
        },
        if lock { " FOR UPDATE" } else { "" },
    );
    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(order_id.to_owned());
    if let Some(u) = user {
        q = q.bind(u.get());
    }
    let rows = q.fetch_all(conn).await.map_err(db_err)?;
    read_joined_settlement(&rows, order_id)
}

/// What an order id found stored means to a lock by `user`.
fn existing(stored: Settlement, user: UserId) -> LockOutcome {
    if stored.user_id == user {
        LockOutcome::Exists(stored)
    } else {
        LockOutcome::OtherUser
    }
}

fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// Writes a change `before → after` (with its coupon moves and their events) inside the
/// caller's transaction.
async fn write_change(
    conn: &mut MySqlConnection,
    shard: Shard,
    before: &Settlement,
    after: &Settlement,
    moves: &[CouponMove],
    kind: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    let user = after.user_id.get();
    let sql = format!(
        "UPDATE {} SET status = ?, subtotal = ?, discount = ?, payable = ?, \
         lock_expires_at_ms = ?, updated_at_ms = ? WHERE order_id = ? AND user_id = ?",
        shard.orders_table()
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(after.status.as_str())
        .bind(after.subtotal.cents())
        .bind(after.discount.cents())
        .bind(after.payable.cents())
        .bind(to_ms(after.lock_expires_at))
        .bind(to_ms(after.updated_at))
        .bind(after.order_id.clone())
        .bind(user)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;

    // The lines whose status changed, by their new status (one statement each).
    let was: HashMap<CouponId, LineStatus> = before
        .coupons
        .iter()
        .map(|l| (l.coupon_id, l.status))
        .collect();
    let mut moved: BTreeMap<&'static str, Vec<i64>> = BTreeMap::new();
    for l in &after.coupons {
        if was.get(&l.coupon_id) != Some(&l.status) {
            moved
                .entry(l.status.as_str())
                .or_default()
                .push(l.coupon_id.get());
        }
    }
    for (status, ids) in moved {
        let sql = format!(
            "UPDATE {} SET status = ? WHERE order_id = ? AND coupon_id IN ({})",
            shard.settlements_table(),
            marks(ids.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(status)
            .bind(after.order_id.clone());
        for id in ids {
            q = q.bind(id);
        }
        q.execute(&mut *conn).await.map_err(db_err)?;
    }

    let sql = format!(
        "UPDATE {} SET status = ?, locked_order_id = ?, used_at_ms = ? WHERE id = ? AND user_id = ?",
        shard.coupons_table()
    );
    let mut events = Vec::with_capacity(moves.len());
    for m in moves {
        // Matched rows count (FOUND_ROWS): 0 means the order's coupon is gone.
        let matched = sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(m.to.as_str())
            .bind(m.locked_order.clone())
            .bind(m.used_at.map(to_ms))
            .bind(m.coupon_id.get())
            .bind(user)
            .execute(&mut *conn)
            .await
            .map_err(db_err)?
            .rows_affected();
        if matched != 1 {
            return Err(StoreError::Corrupt(format!(
                "order {}: its coupon {} is not stored",
                after.order_id, m.coupon_id
            )));
        }
        events.push(coupon_move_event(kind, after, m, now).ok_or_else(|| {
            refused(format!(
                "coupon {} moved but not in order {}",
                m.coupon_id, after.order_id
            ))
        })?);
    }
    insert_records(conn, "INSERT IGNORE", &shard.outbox_table(), &events)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Inserts the order row and its lines inside the caller's transaction; the driver's error
/// is kept so a duplicate order id can be told apart.
async fn insert_settlement(
    conn: &mut MySqlConnection,
    shard: Shard,
    s: &Settlement,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "INSERT INTO {} ({ORDER_COLUMNS}) VALUES ({})",
        shard.orders_table(),
        placeholders(ORDER_COLUMNS)
    );
    bind_order(sqlx::query(AssertSqlSafe(sql)), s)
        .execute(&mut *conn)
        .await?;
    insert_rows(
        conn,
        "INSERT",
        &shard.settlements_table(),
        LINE_COLUMNS,
        &s.coupons,
        |q, l| bind_line(q, s, l),
    )
    .await?;
    Ok(())
}

impl MysqlStore {
    /// Files `order_id` under `user` in `order_directory`; `false` when it is filed under
    /// another user. `INSERT IGNORE` makes a retry harmless.
    async fn file_order(&self, order_id: &str, user: UserId) -> Result<bool, StoreError> {
        let inserted =
            sqlx::query("INSERT IGNORE INTO order_directory (order_id, user_id) VALUES (?, ?)")
                .bind(order_id.to_owned())
                .bind(user.get())
                .execute(self.global())
                .await
                .map_err(db_err)?
                .rows_affected();
        if inserted == 1 {
            return Ok(true);
        }
        match self.order_user(order_id).await? {
            Some(owner) => Ok(owner == user),
            // Rows are never deleted, so an ignored insert always leaves one to read.
            None => Err(gave_up(format!(
                "order {order_id:?}: neither filed nor found in the directory"
            ))),
        }
    }

    /// The user `order_id` is filed under, if any.
    async fn order_user(&self, order_id: &str) -> Result<Option<UserId>, StoreError> {
        let user: Option<i64> =
            sqlx::query_scalar("SELECT user_id FROM order_directory WHERE order_id = ?")
                .bind(order_id.to_owned())
                .fetch_optional(self.global())
                .await
                .map_err(db_err)?;
        user.map(|u| {
            UserId::new(u).ok_or_else(|| {
                StoreError::Corrupt(format!("order directory: {order_id}: bad user_id {u}"))
            })
        })
        .transpose()
    }

    /// The settlement of `order_id` of `user`, read outside any transaction.
    async fn read_settlement(
        &self,
        order_id: &str,
        user: UserId,
    ) -> Result<Option<Settlement>, StoreError> {
        let shard = self.router().route(user.get());
        let mut conn = self.pool(shard.database).acquire().await.map_err(db_err)?;
        select_settlement(&mut conn, shard, order_id, Some(user), false).await
    }

    /// The lock's transaction on the user's shard (the directory already says the order id
    /// is the user's). `ids` are the coupons in the caller's order, `s` is the stored form.
    async fn lock_on_shard(
        &self,
        s: &Settlement,
        ids: &[i64],
        events: &[OutboxEvent],
    ) -> Result<LockOutcome, StoreError> {
        let user = s.user_id;
        let shard = self.router().route(user.get());
        let mut tx = self.pool(shard.database).begin().await.map_err(db_err)?;
        if let Some(stored) = select_settlement(&mut tx, shard, &s.order_id, None, false).await? {
            tx.rollback().await.map_err(db_err)?;
            return Ok(existing(stored, user));
        }

        // By primary key: only the named coupons are locked, in id order.
        let sql = format!(
            "SELECT id, status, locked_order_id FROM {} FORCE INDEX (PRIMARY) \
             WHERE id IN ({}) AND user_id = ? FOR UPDATE",
            shard.coupons_table(),
            marks(ids.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for id in ids {
            q = q.bind(*id);
        }
        let rows = q
            .bind(user.get())
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        let mut found: HashMap<i64, (String, Option<String>)> = HashMap::new();
        for row in &rows {
            found.insert(
                row.int("id")?,
                (row.text("status")?, row.opt_text("locked_order_id")?),
            );
        }
        // In the caller's order, so the first unusable coupon it named is the one reported.
        for id in ids {
            match found.remove(id) {
                Some((status, _)) if status == CouponStatus::Unused.as_str() => {}
                other => {
                    tx.rollback().await.map_err(db_err)?;
                    return self.not_usable(s, *id, other).await;
                }
            }
        }

        let sql = format!(
            "UPDATE {} SET status = 'locked', locked_order_id = ? WHERE id IN ({}) AND user_id = ?",
            shard.coupons_table(),
            marks(ids.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(s.order_id.clone());
        for id in ids {
            q = q.bind(*id);
        }
        q.bind(user.get()).execute(&mut *tx).await.map_err(db_err)?;
        match insert_settlement(&mut tx, shard, s).await {
            Ok(()) => {}
            Err(e) if is_unique_violation(&e) => {
                // A concurrent lock of the same order id committed first: its settlement is
                // the answer. Rolled back before reading, so the read sees it.
                tx.rollback().await.map_err(db_err)?;
                return match self.read_settlement(&s.order_id, user).await? {
                    Some(stored) => Ok(LockOutcome::Exists(stored)),
                    None => Err(db_err(e)),
                };
            }
            Err(e) => return Err(db_err(e)),
        }
        insert_records(&mut tx, "INSERT IGNORE", &shard.outbox_table(), events)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(LockOutcome::Locked(s.clone()))
    }

    /// The answer to a lock that found coupon `id` unusable (`found`: its status and order),
    /// after its transaction is rolled back. A concurrent lock of the same order may have
    /// committed between this lock's first look and its coupons' row locks (then the coupons
    /// are locked by this very order): an order now stored is the answer instead.
    async fn not_usable(
        &self,
        s: &Settlement,
        id: i64,
        found: Option<(String, Option<String>)>,
    ) -> Result<LockOutcome, StoreError> {
        if let Some(stored) = self.read_settlement(&s.order_id, s.user_id).await? {
            return Ok(LockOutcome::Exists(stored));
        }
        let coupon_id =
            CouponId::new(id).ok_or_else(|| refused(format!("bad coupon id {id} in an order")))?;
        let Some((status, locked_by)) = found else {
            return Ok(LockOutcome::NotUsable {
                coupon_id,
                status: None,
                locked_by: None,
            });
        };
        let status = CouponStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("coupon {id}: bad status {status:?}")))?;
        Ok(LockOutcome::NotUsable {
            coupon_id,
            status: Some(status),
            locked_by,
        })
    }

    /// Orders of one database still locked at `now_ms`, oldest first, at most `limit`.
    async fn expired_locks_in(
        &self,
        database: usize,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<(i64, String, UserId)>, StoreError> {
        let tables = self.router().tables_per_database();
        // Table names come from the router; every value is bound.
        let sql = union((0..tables).map(|table| {
            format!(
                "(SELECT order_id, user_id, lock_expires_at_ms FROM {} \
                 WHERE status = 'locked' AND lock_expires_at_ms <= ? \
                 ORDER BY lock_expires_at_ms, order_id LIMIT ?)",
                Shard { database, table }.orders_table()
            )
        })) + " ORDER BY lock_expires_at_ms, order_id LIMIT ?";
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for _ in 0..tables {
            q = q.bind(now_ms).bind(limit);
        }
        let rows = q
            .bind(limit)
            .fetch_all(self.pool(database))
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                let (order, user) = read_order_owner(r)?;
                Ok((r.int("lock_expires_at_ms")?, order, user))
            })
            .collect()
    }
}

#[async_trait]
impl SettlementStore for MysqlStore {
    /// The settlement answered (`Locked`, `Exists`) is the one stored: times to the
    /// millisecond, lines by coupon id.
    async fn lock_coupons(
        &self,
        s: &Settlement,
        events: &[OutboxEvent],
    ) -> Result<LockOutcome, StoreError> {
        check_lock(s)?;
        if !self.file_order(&s.order_id, s.user_id).await? {
            return Ok(LockOutcome::OtherUser);
        }
        let ids: Vec<i64> = s.coupons.iter().map(|l| l.coupon_id.get()).collect();
        self.lock_on_shard(&s.stored_form(), &ids, events).await
    }

    async fn get_settlement(
        &self,
        order_id: &str,
        user: Option<UserId>,
    ) -> Result<Option<Settlement>, StoreError> {
        let user = match user {
            Some(u) => u,
            None => match self.order_user(order_id).await? {
                Some(u) => u,
                None => return Ok(None),
            },
        };
        self.read_settlement(order_id, user).await
    }

    /// `now` is taken to the millisecond, the precision of every stored time.
    async fn change_settlement(
        &self,
        order_id: &str,
        user: UserId,
        change: &OrderChange,
        now: Timestamp,
    ) -> Result<ChangeOutcome, StoreError> {
        let now = truncate_ms(now);
        let shard = self.router().route(user.get());
        let mut tx = self.pool(shard.database).begin().await.map_err(db_err)?;
        let Some(before) = select_settlement(&mut tx, shard, order_id, Some(user), true).await?
        else {
            tx.rollback().await.map_err(db_err)?;
            return Ok(ChangeOutcome::NotFound);
        };
        let kind = change.event_kind();
        match before.apply(change, now) {
            Applied::Unchanged => {
                tx.rollback().await.map_err(db_err)?;
                Ok(ChangeOutcome::Unchanged(before))
            }
            Applied::Changed { settlement, moves } => {
                write_change(&mut tx, shard, &before, &settlement, &moves, kind, now).await?;
                tx.commit().await.map_err(db_err)?;
                Ok(ChangeOutcome::Changed(settlement))
            }
            Applied::Refused { conflict, release } => match release.map(|r| *r) {
                // A lock found expired is released now, in this transaction. Its moves are
                // releases, recorded as such (not as the refused change's kind).
                Some(Applied::Changed { settlement, moves }) => {
                    let kind = OrderChange::Expire.event_kind();
                    write_change(&mut tx, shard, &before, &settlement, &moves, kind, now).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(ChangeOutcome::Refused {
                        conflict,
                        after: settlement,
                    })
                }
                _ => {
                    tx.rollback().await.map_err(db_err)?;
                    Ok(ChangeOutcome::Refused {
                        conflict,
                        after: before,
                    })
                }
            },
        }
    }

    /// One `UNION ALL` query per database, concurrently; merged by `lock_expires_at`, then
    /// order id.
    async fn expired_locks(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<(String, UserId)>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now_ms = to_ms(now);
        let parts = try_join_all(
            (0..self.router().databases()).map(|d| self.expired_locks_in(d, now_ms, limit)),
        )
        .await?;
        let mut all: Vec<(i64, String, UserId)> = parts.into_iter().flatten().collect();
        all.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        all.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(all
            .into_iter()
            .map(|(_, order, user)| (order, user))
            .collect())
    }

    async fn unused_coupons(
        &self,
        user: UserId,
        limit: u32,
    ) -> Result<Vec<UserCoupon>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let shard = self.router().route(user.get());
        let sql = format!(
            "SELECT {} FROM {} WHERE user_id = ? AND status = 'unused' \
             ORDER BY valid_until_ms, id LIMIT ?",
            CouponRecord::COLUMNS,
            shard.coupons_table()
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(user.get())
            .bind(limit)
            .fetch_all(self.pool(shard.database))
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| CouponRecord::read(r)?.into_coupon())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stampede_domain::ids::TemplateId;
    use stampede_domain::money::Money;
    use stampede_domain::order::SettlementLine;
    use stampede_domain::time::from_ms;

    fn settlement(ids: &[i64]) -> Settlement {
        let at = Timestamp::from_millisecond(1_900_000_000_123).unwrap_or(Timestamp::UNIX_EPOCH)
            + jiff::SignedDuration::from_nanos(456_789);
        Settlement {
            order_id: "o-1".to_owned(),
            user_id: UserId::new(7).unwrap_or_else(|| unreachable!()),
            status: OrderStatus::Locked,
            subtotal: Money::ZERO,
            discount: Money::ZERO,
            payable: Money::ZERO,
            lock_expires_at: at,
            coupons: ids
                .iter()
                .map(|id| SettlementLine {
                    coupon_id: CouponId::new(*id).unwrap_or_else(|| unreachable!()),
                    template_id: TemplateId::new(1).unwrap_or_else(|| unreachable!()),
                    discount: Money::ZERO,
                    status: LineStatus::Locked,
                    valid_until: at,
                })
                .collect(),
            created_at: at,
            updated_at: at,
        }
    }

    #[test]
    fn the_stored_form_has_whole_milliseconds_and_sorted_lines() {
        let s = settlement(&[3, 1, 2]).stored_form();
        let ids: Vec<i64> = s.coupons.iter().map(|l| l.coupon_id.get()).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(s.created_at, from_ms(1_900_000_000_123));
        assert_eq!(s.coupons[0].valid_until, s.lock_expires_at);
        assert_eq!(s.stored_form(), s);
    }

    #[test]
    fn only_well_formed_locks_are_written() {
        assert!(check_lock(&settlement(&[1, 2])).is_ok());
        let mut bad = vec![
            settlement(&[]),
            settlement(&[1, 1]),
            settlement(&(1..=MAX_ORDER_COUPONS as i64 + 1).collect::<Vec<_>>()),
            Settlement {
                order_id: "has space".to_owned(),
                ..settlement(&[1])
            },
            Settlement {
                status: OrderStatus::Redeemed,
                ..settlement(&[1])
            },
        ];
        let mut redeemed_line = settlement(&[1, 2]);
        redeemed_line.coupons[1].status = LineStatus::Redeemed;
        bad.push(redeemed_line);
        for s in bad {
            assert!(check_lock(&s).is_err(), "{s:?}");
        }
    }
}
