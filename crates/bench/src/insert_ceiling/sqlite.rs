//! The SQLite ceiling: a fresh file with the server's pragmas (WAL, `synchronous=FULL`, 64 MiB
//! cache), the table and indexes of `store-sqlite`'s migration, one writer connection,
//! transactions of 5,000 rows (a distribution batch) made of `INSERT OR IGNORE`s of 256 rows
//! and the smaller fixed sizes for the tail, as the store cuts them.

use super::{
    CeilingReport, bind_row, check_inserted, multi_insert, now_ms, report, row, statements,
};
use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor};
use stampede_core::records::CouponRecord;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SQLITE_MIGRATION: &str = include_str!("../../../store-sqlite/migrations/0003_coupons.sql");

/// Rows per transaction on SQLite: the server's default distribution batch.
pub const SQLITE_TX_ROWS: usize = 5_000;
/// Rows per INSERT on SQLite, largest first (the store's fixed statement sizes).
const SQLITE_CHUNKS: [usize; 9] = [256, 128, 64, 32, 16, 8, 4, 2, 1];

/// The `user_coupons` table and its indexes, from the SQLite migration.
pub fn sqlite_schema() -> Vec<String> {
    statements(SQLITE_MIGRATION)
        .into_iter()
        .filter(|s| s.contains("user_coupons"))
        .collect()
}

/// A fresh `ceiling.db` in `dir`, filled and removed.
pub(super) async fn fill(dir: &Path, rows: u64) -> anyhow::Result<CeilingReport> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("ceiling.db");
    let remove = |p: &Path| {
        for suffix in ["", "-wal", "-shm"] {
            let mut s = p.as_os_str().to_owned();
            s.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(s));
        }
    };
    remove(&path);
    // The writer's options in `store-sqlite`'s `SqliteStore::open`.
    let opts = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true)
        .journal_mode(SqliteJournalMode::Wal)
        .pragma("cache_size", "-65536")
        .pragma("wal_autocheckpoint", "20000");
    let mut conn = opts
        .connect()
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    for stmt in sqlite_schema() {
        conn.execute(AssertSqlSafe(stmt))
            .await
            .context("creating the user_coupons table")?;
    }
    let inserts: Vec<(usize, String)> = SQLITE_CHUNKS
        .iter()
        .map(|&n| (n, multi_insert("INSERT OR IGNORE", "user_coupons", n)))
        .collect();

    let now = now_ms();
    let started = Instant::now();
    let mut inserted: u64 = 0;
    let mut next: u64 = 0;
    while next < rows {
        let end = (next + SQLITE_TX_ROWS as u64).min(rows);
        let batch: Vec<CouponRecord> = (next..end).map(|i| row(i, now)).collect();
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let mut rest = &batch[..];
        for (size, sql) in &inserts {
            while let Some((chunk, tail)) = rest.split_at_checked(*size) {
                let mut q = sqlx::query(AssertSqlSafe(sql.as_str()));
                for r in chunk {
                    q = bind_row(q, r);
                }
                inserted += q
                    .execute(&mut *tx)
                    .await
                    .context("inserting into SQLite")?
                    .rows_affected();
                rest = tail;
            }
        }
        tx.commit().await.context("committing to SQLite")?;
        next = end;
    }
    let took = started.elapsed();
    conn.close().await.ok();
    remove(&path);
    check_inserted(inserted, rows)?;
    Ok(report(
        "sqlite",
        path.display().to_string(),
        format!(
            "1 connection, WAL, synchronous=FULL, {SQLITE_TX_ROWS}-row transactions of \
             256-row INSERT OR IGNORE"
        ),
        rows,
        took,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insert_ceiling::Ceiling;

    #[test]
    fn the_schema_comes_from_the_migration() {
        let sqlite = sqlite_schema();
        assert_eq!(sqlite.len(), 5, "{sqlite:#?}");
        assert!(sqlite[0].starts_with("CREATE TABLE user_coupons ("));
        assert!(sqlite.iter().all(|s| !s.contains("outbox")));
        assert_eq!(
            sqlite.iter().filter(|s| s.contains("INDEX")).count(),
            4,
            "{sqlite:#?}"
        );
    }

    #[tokio::test]
    async fn sqlite_ceiling_inserts_every_row() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("bench-ceiling-{}", rand::random::<u32>()));
        let r = crate::insert_ceiling::run(&Ceiling::Sqlite(dir.clone()), 12_345).await?;
        assert_eq!(r.backend, "sqlite");
        assert_eq!(r.rows, 12_345);
        assert!(r.rows_per_s > 0.0);
        // The scratch file is removed afterwards.
        assert!(!dir.join("ceiling.db").exists());
        let _ = std::fs::remove_dir(&dir);
        Ok(())
    }
}
