//! Partition leases, one row per partition in a lease table (`reminder_leases`,
//! `outbox_leases`): granted when free, expired or already the owner's; `token` changes with
//! every change of holder and fences the holder's writes.

use jiff::Timestamp;
use sqlx::{AssertSqlSafe, SqlitePool};
use stampede_core::ports::StoreError;
use stampede_core::reminder_ports::PartitionLease;
use stampede_domain::time::to_ms;
use stampede_store_sql::db_err;
pub(crate) use stampede_store_sql::leases::{LeaseTable, check_owner};

/// Takes or renews `partition`'s lease in `table` until `until`.
pub(crate) async fn take(
    writer: &SqlitePool,
    table: LeaseTable,
    partition: u32,
    owner: &str,
    now: Timestamp,
    until: Timestamp,
) -> Result<Option<PartitionLease>, StoreError> {
    check_owner(owner)?;
    let t = table.name();
    let sql = format!(
        "INSERT INTO {t} (part, owner, token, until_ms) VALUES (?1, ?2, 1, ?3) \
         ON CONFLICT (part) DO UPDATE SET \
         token = CASE WHEN owner = excluded.owner THEN token ELSE token + 1 END, \
         owner = excluded.owner, until_ms = excluded.until_ms \
         WHERE {t}.owner = excluded.owner OR {t}.until_ms <= ?4 \
         RETURNING token"
    );
    let token: Option<i64> = sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(i64::from(partition))
        .bind(owner)
        .bind(to_ms(until))
        .bind(to_ms(now))
        .fetch_optional(writer)
        .await
        .map_err(db_err)?;
    Ok(token.map(|token| PartitionLease {
        partition,
        owner: owner.to_owned(),
        token,
    }))
}

/// Gives `lease` up early, only if it is still the holder's.
pub(crate) async fn release(
    writer: &SqlitePool,
    table: LeaseTable,
    lease: &PartitionLease,
) -> Result<(), StoreError> {
    let sql = format!(
        "UPDATE {} SET until_ms = 0 WHERE part = ? AND owner = ? AND token = ?",
        table.name()
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(i64::from(lease.partition))
        .bind(lease.owner.as_str())
        .bind(lease.token)
        .execute(writer)
        .await
        .map_err(db_err)?;
    Ok(())
}
