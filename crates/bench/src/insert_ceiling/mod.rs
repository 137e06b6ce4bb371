//! The bulk-insert ceiling of the database under a distribution: the same `user_coupons`
//! shape the server writes, inserted as fast as this machine's database takes it, with no
//! HTTP, file parsing, hot state or bookkeeping around it.
//!
//! This module holds what both databases share: the `--ceiling` flag, the report, the rows
//! and how they are bound. [`sqlite`] (a fresh file, one writer, 5,000-row transactions) and
//! [`mysql`] (a scratch database of 8 tables, 4 connections) fill theirs as the stores would.
//!
//! The table definitions are read from the stores' migration files at compile time, so the
//! ceiling follows the schema (indexes included) when it changes.

pub mod mysql;
pub mod sqlite;

use crate::render::dash;
use crate::round::{per_second, ratio, round3};
use anyhow::bail;
use serde::{Deserialize, Serialize};
use stampede_core::records::CouponRecord;
use stampede_store_sql::SqlRow;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// The template id every ceiling row carries (any positive id; there is no foreign key).
pub(crate) const TEMPLATE_ID: i64 = 1;
pub(crate) const SHOP_ID: i64 = 1;

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

impl CeilingReport {
    /// The heading of a run/ceiling table's ceiling column.
    pub fn title(&self) -> String {
        format!("{} insert ceiling", self.backend)
    }

    /// The rows only the ceiling has in a run/ceiling table.
    pub fn own_rows(&self) -> [(&'static str, String, String); 2] {
        [
            ("ceiling shape", dash(), self.shape.clone()),
            ("ceiling target", dash(), self.target.clone()),
        ]
    }
}

/// Inserts `rows` coupon rows into `ceiling`'s database and times it.
pub async fn run(ceiling: &Ceiling, rows: u64) -> anyhow::Result<CeilingReport> {
    if rows == 0 {
        bail!("the ceiling needs at least one row");
    }
    match ceiling {
        Ceiling::Sqlite(dir) => sqlite::fill(dir, rows).await,
        Ceiling::Mysql(url) => mysql::fill(url, rows).await,
    }
}

/// Measures the ceiling with `rows` rows (at least one) after a run whose rate was `rate`
/// rows/s: the report and `rate` as a fraction of the ceiling's.
pub async fn compare(
    ceiling: &Ceiling,
    rows: u64,
    rate: Option<f64>,
) -> anyhow::Result<(CeilingReport, Option<f64>)> {
    eprintln!("ceiling: inserting {rows} rows into {ceiling:?} ...");
    let report = run(ceiling, rows.max(1)).await?;
    let fraction = rate.and_then(|r| ratio(r, report.rows_per_s));
    Ok((report, fraction))
}

pub(crate) fn report(
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
pub(crate) fn statements(sql: &str) -> Vec<String> {
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

/// `VERB INTO table (…) VALUES (?, …), …` with `rows` rows of the server's own coupon row
/// layout, so the ceiling writes exactly what the server writes.
pub fn multi_insert(verb: &str, table: &str, rows: usize) -> String {
    stampede_store_sql::text::multi_insert(verb, table, CouponRecord::COLUMNS, rows)
}

/// Ceiling row `i` (0-based): a distribution coupon of user `i + 1`, made at `now` (ms).
pub(crate) fn row(i: u64, now: i64) -> CouponRecord {
    let n = i64::try_from(i).unwrap_or(i64::MAX - 1);
    CouponRecord {
        // Far from any id the server makes, unique per row.
        id: (1_i64 << 40) + n,
        user_id: n + 1,
        template_id: TEMPLATE_ID,
        shop_id: SHOP_ID,
        seq: 1,
        origin: "distribution".to_owned(),
        status: "unused".to_owned(),
        valid_from_ms: now,
        valid_until_ms: now + 86_400_000,
        claimed_at_ms: now,
        locked_order_id: None,
        used_at_ms: None,
        claim_key: Some(format!("dist 1 {}", n + 1)),
    }
}

/// Binds `r` in its columns' order, as the server's adapters do.
pub(crate) fn bind_row<B: stampede_store_sql::Binder>(q: B, r: &CouponRecord) -> B {
    r.bind(q)
}

pub(crate) fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Every row must have gone in: an ignored row would flatter the ceiling.
pub(crate) fn check_inserted(inserted: u64, rows: u64) -> anyhow::Result<()> {
    if inserted != rows {
        bail!("the ceiling inserted {inserted} of {rows} rows");
    }
    Ok(())
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
    fn inserts_bind_every_column() {
        let sql = multi_insert("INSERT IGNORE", "user_coupons_3", 1_000);
        assert!(sql.starts_with("INSERT IGNORE INTO user_coupons_3 (id, user_id,"));
        assert_eq!(sql.matches('?').count(), 13_000);
    }
}
