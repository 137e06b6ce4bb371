//! The bulk-insert ceiling of the database under a distribution: the same `user_coupons`
//! shape the server writes, inserted as fast as this machine's database takes it, with no
//! HTTP, file parsing, hot state or bookkeeping around it.
//!
//! - SQLite: a fresh file with the server's pragmas (WAL, `synchronous=FULL`, 64 MiB cache),
//!   the table and indexes of `store-sqlite`'s migration, one writer connection, transactions
//!   of 5,000 rows (a distribution batch) made of `INSERT OR IGNORE`s of 256 rows and the
//!   smaller fixed sizes for the tail, as the store cuts them.
//! - MySQL: a scratch database with 8 tables shaped like `store-mysql`'s `user_coupons_{t}`,
//!   rows routed to them by a hash of the user id, `INSERT IGNORE`s of 1,000 rows each in its
//!   own (autocommit) transaction, from 4 connections at once; the database is dropped after.
//!
//! The table definitions are read from the stores' migration files at compile time, so the
//! ceiling follows the schema (indexes included) when it changes.

use crate::round::{per_second, round3};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sqlx::mysql::MySqlConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor};
use stampede_core::records::COUPON_COLUMNS;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SQLITE_MIGRATION: &str = include_str!("../../store-sqlite/migrations/0003_coupons.sql");
const MYSQL_MIGRATION: &str = include_str!("../../store-mysql/migrations/0002_coupons.sharded.sql");

/// Rows per transaction on SQLite: the server's default distribution batch.
pub const SQLITE_TX_ROWS: usize = 5_000;
/// Rows per INSERT on SQLite, largest first (the store's fixed statement sizes).
const SQLITE_CHUNKS: [usize; 9] = [256, 128, 64, 32, 16, 8, 4, 2, 1];
/// Rows per INSERT IGNORE (and per transaction) on MySQL.
pub const MYSQL_STATEMENT_ROWS: usize = 1_000;
pub const MYSQL_TABLES: usize = 8;
pub const MYSQL_CONNECTIONS: usize = 4;

/// The template id every ceiling row carries (any positive id; there is no foreign key).
const TEMPLATE_ID: i64 = 1;
const SHOP_ID: i64 = 1;

/// Which database to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ceiling {
    /// A fresh SQLite file in this directory.
    Sqlite(PathBuf),
    /// A MySQL/MariaDB server URL (`mysql://user[:password]@host:port`).
    Mysql(String),
}

impl FromStr for Ceiling {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(dir) = s.strip_prefix("sqlite:") {
            if dir.is_empty() {
                return Err("sqlite: needs a directory, e.g. sqlite:/tmp/ceiling".into());
            }
            Ok(Ceiling::Sqlite(PathBuf::from(dir)))
        } else if let Some(url) = s.strip_prefix("mysql:") {
            if !url.starts_with("mysql://") {
                return Err("mysql: needs a URL, e.g. mysql:mysql://root@127.0.0.1:3306".into());
            }
            Ok(Ceiling::Mysql(url.to_owned()))
        } else {
            Err("expected sqlite:DIR or mysql:mysql://USER@HOST:PORT".into())
        }
    }
}

/// One ceiling measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CeilingReport {
    /// `sqlite` or `mysql`.
    pub backend: String,
    /// The file or the server (credentials left out).
    pub target: String,
    /// How the rows went in.
    pub shape: String,
    pub rows: u64,
    pub seconds: f64,
    pub rows_per_s: f64,
}

/// Inserts `rows` coupon rows into `ceiling`'s database and times it.
pub async fn run(ceiling: &Ceiling, rows: u64) -> anyhow::Result<CeilingReport> {
    if rows == 0 {
        bail!("the ceiling needs at least one row");
    }
    match ceiling {
        Ceiling::Sqlite(dir) => sqlite(dir, rows).await,
        Ceiling::Mysql(url) => mysql(url, rows).await,
    }
}

fn report(
    backend: &str,
    target: String,
    shape: String,
    rows: u64,
    took: Duration,
) -> CeilingReport {
    let seconds = took.as_secs_f64();
    CeilingReport {
        backend: backend.to_owned(),
        target,
        shape,
        rows,
        seconds: round3(seconds),
        rows_per_s: per_second(rows, seconds),
    }
}

/// The migration's statements without its comment lines.
fn statements(sql: &str) -> Vec<String> {
    let code: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .map(|l| format!("{l}\n"))
        .collect();
    code.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The `user_coupons` table and its indexes, from the SQLite migration.
pub fn sqlite_schema() -> Vec<String> {
    statements(SQLITE_MIGRATION)
        .into_iter()
        .filter(|s| s.contains("user_coupons"))
        .collect()
}

/// `CREATE TABLE user_coupons_{t}` from the MySQL migration (with `{t}` left in).
pub fn mysql_table_template() -> anyhow::Result<String> {
    statements(MYSQL_MIGRATION)
        .into_iter()
        .find(|s| s.starts_with("CREATE TABLE IF NOT EXISTS user_coupons_{t}"))
        .context("no user_coupons_{t} table in the MySQL migration")
}

/// `VERB INTO table (COUPON_COLUMNS) VALUES (?, …), …` with `rows` rows.
pub fn multi_insert(verb: &str, table: &str, rows: usize) -> String {
    let one = format!(
        "({})",
        vec!["?"; COUPON_COLUMNS.split(',').count()].join(", ")
    );
    format!(
        "{verb} INTO {table} ({COUPON_COLUMNS}) VALUES {}",
        vec![one.as_str(); rows].join(", ")
    )
}

/// The values of ceiling row `i` (0-based): a distribution coupon of user `i + 1`.
struct Row {
    id: i64,
    user_id: i64,
    claim_key: String,
}

impl Row {
    fn new(i: u64) -> Self {
        let n = i64::try_from(i).unwrap_or(i64::MAX - 1);
        Row {
            // Far from any id the server makes, unique per row.
            id: (1_i64 << 40) + n,
            user_id: n + 1,
            claim_key: format!("dist 1 {}", n + 1),
        }
    }
}

/// Binds a row in `COUPON_COLUMNS` order, with the values a distribution coupon has.
macro_rules! bind_row {
    ($q:expr, $r:expr, $now:expr) => {
        $q.bind($r.id)
            .bind($r.user_id)
            .bind(TEMPLATE_ID)
            .bind(SHOP_ID)
            .bind(1_i64)
            .bind("distribution")
            .bind("unused")
            .bind($now)
            .bind($now + 86_400_000)
            .bind($now)
            .bind(None::<String>)
            .bind(None::<i64>)
            .bind($r.claim_key.as_str())
    };
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

async fn sqlite(dir: &Path, rows: u64) -> anyhow::Result<CeilingReport> {
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
        let batch: Vec<Row> = (next..end).map(Row::new).collect();
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let mut rest = &batch[..];
        for (size, sql) in &inserts {
            while let Some((chunk, tail)) = rest.split_at_checked(*size) {
                let mut q = sqlx::query(AssertSqlSafe(sql.as_str()));
                for r in chunk {
                    q = bind_row!(q, r, now);
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

async fn mysql(url: &str, rows: u64) -> anyhow::Result<CeilingReport> {
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
    let result = mysql_fill(&admin_opts.clone().database(&db), rows).await;
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

/// Every row must have gone in: an ignored row would flatter the ceiling.
fn check_inserted(inserted: u64, rows: u64) -> anyhow::Result<()> {
    if inserted != rows {
        bail!("the ceiling inserted {inserted} of {rows} rows");
    }
    Ok(())
}

/// Fills the scratch database: (time taken, rows inserted).
async fn mysql_fill(opts: &MySqlConnectOptions, rows: u64) -> anyhow::Result<(Duration, u64)> {
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
    let mut by_table: Vec<Vec<Row>> = (0..MYSQL_TABLES).map(|_| Vec::new()).collect();
    for i in 0..rows {
        let r = Row::new(i);
        by_table[route(r.user_id, MYSQL_TABLES)].push(r);
    }
    let mut work: Vec<(usize, Vec<Row>)> = Vec::new();
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
    let now = now_ms();

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
                    q = bind_row!(q, r, now);
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

    #[test]
    fn parses_the_ceiling_flag() {
        assert_eq!(
            "sqlite:/tmp/x".parse::<Ceiling>(),
            Ok(Ceiling::Sqlite("/tmp/x".into()))
        );
        assert_eq!(
            "mysql:mysql://root@127.0.0.1:3306".parse::<Ceiling>(),
            Ok(Ceiling::Mysql("mysql://root@127.0.0.1:3306".into()))
        );
        assert!("sqlite:".parse::<Ceiling>().is_err());
        assert!("mysql:127.0.0.1".parse::<Ceiling>().is_err());
        assert!("postgres://x".parse::<Ceiling>().is_err());
    }

    #[test]
    fn schemas_come_from_the_migrations() -> anyhow::Result<()> {
        let sqlite = sqlite_schema();
        assert_eq!(sqlite.len(), 5, "{sqlite:#?}");
        assert!(sqlite[0].starts_with("CREATE TABLE user_coupons ("));
        assert!(sqlite.iter().all(|s| !s.contains("outbox")));
        assert_eq!(
            sqlite.iter().filter(|s| s.contains("INDEX")).count(),
            4,
            "{sqlite:#?}"
        );
        let mysql = mysql_table_template()?;
        assert!(mysql.contains("UNIQUE KEY uq_coupons_claim "), "{mysql}");
        assert!(mysql.trim_end().ends_with("utf8mb4_unicode_ci"), "{mysql}");
        assert!(!mysql.contains("outbox"));
        Ok(())
    }

    #[test]
    fn inserts_bind_every_column() {
        let sql = multi_insert("INSERT IGNORE", "user_coupons_3", 1_000);
        assert!(sql.starts_with("INSERT IGNORE INTO user_coupons_3 (id, user_id,"));
        assert_eq!(sql.matches('?').count(), 13_000);
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

    #[tokio::test]
    async fn sqlite_ceiling_inserts_every_row() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("bench-ceiling-{}", rand::random::<u32>()));
        let r = run(&Ceiling::Sqlite(dir.clone()), 12_345).await?;
        assert_eq!(r.backend, "sqlite");
        assert_eq!(r.rows, 12_345);
        assert!(r.rows_per_s > 0.0);
        // The scratch file is removed afterwards.
        assert!(!dir.join("ceiling.db").exists());
        let _ = std::fs::remove_dir(&dir);
        Ok(())
    }

    /// Runs only with `STAMPEDE_TEST_MYSQL=mysql://USER@HOST:PORT` (the store tests' variable).
    #[tokio::test]
    async fn mysql_ceiling_inserts_every_row_and_drops_its_database() -> anyhow::Result<()> {
        let Ok(url) = std::env::var("STAMPEDE_TEST_MYSQL") else {
            eprintln!("skipped: STAMPEDE_TEST_MYSQL is not set");
            return Ok(());
        };
        let r = run(&Ceiling::Mysql(url.clone()), 12_345).await?;
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
