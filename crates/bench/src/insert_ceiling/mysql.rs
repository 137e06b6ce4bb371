//! The MySQL ceiling: a scratch database with 8 tables shaped like `store-mysql`'s
//! `user_coupons_{t}`, rows routed to them by a hash of the user id, `INSERT IGNORE`s of 1,000
//! rows each in its own (autocommit) transaction, from 4 connections at once; the database is
//! dropped after.

use super::{
    CeilingReport, bind_row, check_inserted, multi_insert, now_ms, report, row, statements,
};
use anyhow::Context;
use sqlx::mysql::MySqlConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor};
use stampede_core::records::CouponRecord;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const MYSQL_MIGRATION: &str =
    include_str!("../../../store-mysql/migrations/0002_coupons.sharded.sql");

/// Rows per INSERT IGNORE (and per transaction) on MySQL.
pub const MYSQL_STATEMENT_ROWS: usize = 1_000;
pub const MYSQL_TABLES: usize = 8;
pub const MYSQL_CONNECTIONS: usize = 4;

/// `CREATE TABLE user_coupons_{t}` from the MySQL migration (with `{t}` left in).
pub fn mysql_table_template() -> anyhow::Result<String> {
    statements(MYSQL_MIGRATION)
        .into_iter()
        .find(|s| s.starts_with("CREATE TABLE IF NOT EXISTS user_coupons_{t}"))
        .context("no user_coupons_{t} table in the MySQL migration")
}

/// SplitMix64's finalizer, like the server's shard router: sequential ids spread evenly.
fn route(user_id: i64, tables: usize) -> usize {
    let mut z = user_id as u64;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % tables as u64) as usize
}

/// `mysql://user:secret@host` → `mysql://user@host`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((cred, host)) => {
            let user = cred.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_owned(),
    }
}

/// A scratch database on the server at `url`, filled and dropped.
pub(super) async fn fill(url: &str, rows: u64) -> anyhow::Result<CeilingReport> {
    let admin_opts = MySqlConnectOptions::from_str(url)
        .with_context(|| format!("--ceiling mysql: bad URL {}", redact(url)))?;
    let mut admin = admin_opts
        .connect()
        .await
        .with_context(|| format!("connecting to {}", redact(url)))?;
    let db = format!("stampede_bench_ceiling_{:08x}", rand::random::<u32>());
    admin
        .execute(AssertSqlSafe(format!("CREATE DATABASE `{db}`")))
        .await
        .with_context(|| format!("creating database {db}"))?;
    let result = fill_tables(&admin_opts.clone().database(&db), rows).await;
    let dropped = admin
        .execute(AssertSqlSafe(format!("DROP DATABASE `{db}`")))
        .await;
    admin.close().await.ok();
    let (took, inserted) = result?;
    check_inserted(inserted, rows)?;
    dropped.with_context(|| format!("dropping database {db}"))?;
    Ok(report(
        "mysql",
        format!("{}/{db} (dropped)", redact(url).trim_end_matches('/')),
        format!(
            "{MYSQL_CONNECTIONS} connections, {MYSQL_TABLES} tables, {MYSQL_STATEMENT_ROWS}-row \
             INSERT IGNORE per transaction"
        ),
        rows,
        took,
    ))
}

/// Fills the scratch database: (time taken, rows inserted).
async fn fill_tables(opts: &MySqlConnectOptions, rows: u64) -> anyhow::Result<(Duration, u64)> {
    let table = mysql_table_template()?;
    let mut conns = Vec::with_capacity(MYSQL_CONNECTIONS);
    for _ in 0..MYSQL_CONNECTIONS {
        conns.push(
            opts.connect()
                .await
                .context("connecting to the scratch database")?,
        );
    }
    for t in 0..MYSQL_TABLES {
        conns[0]
            .execute(AssertSqlSafe(table.replace("{t}", &t.to_string())))
            .await
            .with_context(|| format!("creating user_coupons_{t}"))?;
    }
    // Route every row first: the timed part is only the inserts.
    let now = now_ms();
    let mut by_table: Vec<Vec<CouponRecord>> = (0..MYSQL_TABLES).map(|_| Vec::new()).collect();
    for i in 0..rows {
        let r = row(i, now);
        by_table[route(r.user_id, MYSQL_TABLES)].push(r);
    }
    let mut work: Vec<(usize, Vec<CouponRecord>)> = Vec::new();
    for (t, table_rows) in by_table.into_iter().enumerate() {
        let mut rest = table_rows.into_iter().peekable();
        while rest.peek().is_some() {
            work.push((t, rest.by_ref().take(MYSQL_STATEMENT_ROWS).collect()));
        }
    }
    // Interleave the tables, as concurrent batches of many users would.
    work.sort_by_key(|(t, rows)| (rows.first().map_or(0, |r| r.user_id), *t));
    let work = Arc::new(work);
    let cursor = Arc::new(AtomicUsize::new(0));

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut conn in conns {
        let work = Arc::clone(&work);
        let cursor = Arc::clone(&cursor);
        tasks.spawn(async move {
            let mut inserted: u64 = 0;
            loop {
                let i = cursor.fetch_add(1, Ordering::Relaxed);
                let Some((t, chunk)) = work.get(i) else {
                    break;
                };
                let sql = multi_insert("INSERT IGNORE", &format!("user_coupons_{t}"), chunk.len());
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for r in chunk {
                    q = bind_row(q, r);
                }
                inserted += q
                    .execute(&mut conn)
                    .await
                    .with_context(|| format!("inserting into user_coupons_{t}"))?
                    .rows_affected();
            }
            conn.close().await.ok();
            anyhow::Ok(inserted)
        });
    }
    let mut inserted = 0;
    while let Some(done) = tasks.join_next().await {
        inserted += done.context("an insert task panicked")??;
    }
    Ok((started.elapsed(), inserted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insert_ceiling::Ceiling;

    #[test]
    fn the_table_comes_from_the_migration() -> anyhow::Result<()> {
        let mysql = mysql_table_template()?;
        assert!(mysql.contains("UNIQUE KEY uq_coupons_claim "), "{mysql}");
        assert!(mysql.trim_end().ends_with("utf8mb4_unicode_ci"), "{mysql}");
        assert!(!mysql.contains("outbox"));
        Ok(())
    }

    #[test]
    fn routing_spreads_sequential_users() {
        let mut counts = [0u32; MYSQL_TABLES];
        for u in 1..=80_000 {
            counts[route(u, MYSQL_TABLES)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn credentials_are_left_out() {
        assert_eq!(
            redact("mysql://root:pw@h:3306/db"),
            "mysql://root@h:3306/db"
        );
        assert_eq!(redact("mysql://root@h:3306"), "mysql://root@h:3306");
        assert_eq!(redact("mysql://h:3306"), "mysql://h:3306");
    }

    /// Runs only with `STAMPEDE_TEST_MYSQL=mysql://USER@HOST:PORT` (the store tests' variable).
    #[tokio::test]
    async fn mysql_ceiling_inserts_every_row_and_drops_its_database() -> anyhow::Result<()> {
        let Ok(url) = std::env::var("STAMPEDE_TEST_MYSQL") else {
            eprintln!("skipped: STAMPEDE_TEST_MYSQL is not set");
            return Ok(());
        };
        let r = crate::insert_ceiling::run(&Ceiling::Mysql(url.clone()), 12_345).await?;
        assert_eq!((r.backend.as_str(), r.rows), ("mysql", 12_345));
        let db = r
            .target
            .rsplit('/')
            .next()
            .and_then(|s| s.strip_suffix(" (dropped)"))
            .unwrap_or_default()
            .to_owned();
        assert!(db.starts_with("stampede_bench_ceiling_"), "{}", r.target);
        let mut conn = MySqlConnectOptions::from_str(&url)?.connect().await?;
        let left: Vec<(String,)> = sqlx::query_as("SHOW DATABASES")
            .fetch_all(&mut conn)
            .await?;
        assert!(left.iter().all(|(d,)| *d != db), "{db} was not dropped");
        Ok(())
    }
}
