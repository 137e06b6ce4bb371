//! Partition leases, one row per partition of a database in a lease table (`reminder_leases`,
//! `outbox_leases`): granted when free, expired or already the owner's; `token` changes with
//! every change of holder and fences the holder's writes.

use jiff::Timestamp;
use sqlx::{AssertSqlSafe, MySqlPool};
use stampede_core::ports::StoreError;
use stampede_core::reminder_ports::PartitionLease;
use stampede_domain::time::to_ms;
use stampede_store_sql::db_err;
pub(crate) use stampede_store_sql::leases::{LeaseTable, check_owner};

/// Takes or renews the lease of `partition` (row `part` of `table` in `pool`'s database)
/// until `until`.
pub(crate) async fn take(
    pool: &MySqlPool,
    table: LeaseTable,
    part: i64,
    partition: u32,
    owner: &str,
    now: Timestamp,
    until: Timestamp,
) -> Result<Option<PartitionLease>, StoreError> {
    check_owner(owner)?;
    let t = table.name();
    // The row is made outside the transaction: an ignored duplicate insert holds a shared
    // lock, and two contenders upgrading theirs would deadlock.
    sqlx::query(AssertSqlSafe(format!(
        "INSERT IGNORE INTO {t} (part, owner, token, until_ms) VALUES (?, '', 0, 0)"
    )))
    .bind(part)
    .execute(pool)
    .await
    .map_err(db_err)?;
    let mut tx = pool.begin().await.map_err(db_err)?;
    // One conditional write decides: a contender waits for the row lock, then finds the
    // condition false. `token` is assigned before `owner`, so it sees the previous holder.
    let granted = sqlx::query(AssertSqlSafe(format!(
        "UPDATE {t} SET token = IF(owner = ?, token, token + 1), owner = ?, \
         until_ms = ? WHERE part = ? AND (owner = ? OR until_ms <= ?)"
    )))
    .bind(owner)
    .bind(owner)
    .bind(to_ms(until))
    .bind(part)
    .bind(owner)
    .bind(to_ms(now))
    .execute(&mut *tx)
    .await
    .map_err(db_err)?
    .rows_affected();
    if granted != 1 {
        tx.rollback().await.map_err(db_err)?;
        return Ok(None);
    }
    // Still under this transaction's row lock: the token just written.
    let token: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT token FROM {t} WHERE part = ?"
    )))
    .bind(part)
    .fetch_one(&mut *tx)
    .await
    .map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    Ok(Some(PartitionLease {
        partition,
        owner: owner.to_owned(),
        token,
    }))
}

/// Gives `lease` (row `part` of `table` in `pool`'s database) up early, only if it is still
/// the holder's.
pub(crate) async fn release(
    pool: &MySqlPool,
    table: LeaseTable,
    part: i64,
    lease: &PartitionLease,
) -> Result<(), StoreError> {
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE {} SET until_ms = 0 WHERE part = ? AND owner = ? AND token = ?",
        table.name()
    )))
    .bind(part)
    .bind(lease.owner.as_str())
    .bind(lease.token)
    .execute(pool)
    .await
    .map_err(db_err)?;
    Ok(())
}
