//! A small versioned migration runner.
//!
//! sqlx's migrator applies a fixed script per database; it cannot create one table per shard
//! from a template, nor put the global tables in `databases[0]` only. So each migration here
//! is a pair of embedded `.sql` files: sharded statements with a `{t}` placeholder, expanded
//! for every table index of every database, and global statements run on `databases[0]`.
//! Each database records what it has applied in its own `schema_migrations`.
//!
//! MySQL DDL commits implicitly, so a migration cannot be rolled back: statements are written
//! to be idempotent (`CREATE TABLE IF NOT EXISTS`) and the version row is written last, so a
//! run that crashed midway simply reruns. A named lock per database keeps two nodes that start
//! together from migrating the same database at once (named by a digest of the database name,
//! as lock names are limited to 64 characters).

use crate::error::{error_number, gave_up};
use sqlx::mysql::{MySqlConnection, MySqlPool};
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, MySql};
use stampede_core::ports::StoreError;
use stampede_domain::time::to_ms;
use stampede_store_sql::{Columns, db_err};

struct Migration {
    version: i64,
    description: &'static str,
    /// Run once per table index, with `{t}` replaced by it.
    sharded: &'static str,
    /// Run on `databases[0]` only.
    global: &'static str,
}

/// In version order. Never edit one that has shipped; add a new one.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "templates, audit, idempotency keys; directory, accounts, sessions",
        sharded: include_str!("../migrations/0001_initial.sharded.sql"),
        global: include_str!("../migrations/0001_initial.global.sql"),
    },
    Migration {
        version: 2,
        description: "user coupons, outbox; templates' claim log position",
        sharded: include_str!("../migrations/0002_coupons.sharded.sql"),
        global: "",
    },
    Migration {
        version: 3,
        description: "distribution tasks, failures, file chunks; distribution directory",
        sharded: include_str!("../migrations/0003_distributions.sharded.sql"),
        global: include_str!("../migrations/0003_distributions.global.sql"),
    },
    Migration {
        version: 4,
        description: "orders, settlement rows; wider outbox event ids; order directory",
        sharded: include_str!("../migrations/0004_settlements.sharded.sql"),
        global: include_str!("../migrations/0004_settlements.global.sql"),
    },
    Migration {
        version: 5,
        description: "reminders; reminder delivery leases",
        sharded: include_str!("../migrations/0005_reminders.sharded.sql"),
        global: "",
    },
    Migration {
        version: 6,
        description: "flow-control rules",
        sharded: "",
        global: include_str!("../migrations/0006_flow_rules.global.sql"),
    },
    Migration {
        version: 7,
        description: "template goods index",
        sharded: include_str!("../migrations/0007_template_goods.sharded.sql"),
        global: "",
    },
    Migration {
        version: 8,
        description: "outbox events' traceparent",
        sharded: include_str!("../migrations/0008_outbox_trace.sharded.sql"),
        global: "",
    },
    Migration {
        version: 9,
        description: "outbox relay leases",
        sharded: include_str!("../migrations/0009_outbox_leases.sharded.sql"),
        global: "",
    },
];

/// "Duplicate column name": a column addition that already happened (MySQL, unlike MariaDB,
/// has no `ADD COLUMN IF NOT EXISTS`, so reruns are recognised by this error instead).
const ER_DUP_FIELDNAME: u16 = 1060;

/// Whether `stmt` only adds a column, so that `ER_DUP_FIELDNAME` means it is already applied.
fn adds_a_column(stmt: &str) -> bool {
    let s = stmt.to_ascii_uppercase();
    s.starts_with("ALTER TABLE ") && s.contains(" ADD COLUMN ") && !s.contains(',')
}

/// Whether `stmt` only redefines one column: running it again sets the same definition, so it
/// is idempotent as it stands (what the test of the embedded scripts accepts).
#[cfg(test)]
fn modifies_a_column(stmt: &str) -> bool {
    let s = stmt.to_ascii_uppercase();
    s.starts_with("ALTER TABLE ") && s.contains(" MODIFY COLUMN ") && !s.contains(',')
}

/// Seconds to wait for another node's migration of the same database.
const LOCK_WAIT_SECS: i64 = 120;

/// The statements of a script: `--` comment lines dropped, split on `;`. Scripts therefore
/// must not put `;` inside string literals (ours hold only DDL).
fn statements(sql: &str) -> Vec<String> {
    let code: Vec<&str> = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect();
    code.join("\n")
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Applies the pending migrations to one database; returns how many it applied.
pub(crate) async fn migrate_database(
    pool: &MySqlPool,
    index: usize,
    tables: usize,
) -> Result<usize, StoreError> {
    // The named lock belongs to the session, so everything runs on this one connection.
    let mut conn = pool.acquire().await.map_err(db_err)?;
    let locked: Option<i64> =
        sqlx::query_scalar("SELECT GET_LOCK(CONCAT('stampede_migrate:', MD5(DATABASE())), ?)")
            .bind(LOCK_WAIT_SECS)
            .fetch_one(&mut *conn)
            .await
            .map_err(db_err)?;
    if locked != Some(1) {
        return Err(gave_up("timed out waiting for another node's migration"));
    }
    let result = apply_pending(&mut conn, index, tables).await;
    release(conn).await;
    result
}

async fn release(mut conn: PoolConnection<MySql>) {
    let released = sqlx::query("DO RELEASE_LOCK(CONCAT('stampede_migrate:', MD5(DATABASE())))")
        .execute(&mut *conn)
        .await;
    if let Err(e) = released {
        // Closing the session is the other way to free the lock; keep it out of the pool.
        tracing::warn!(error = %e, "could not release the migration lock; dropping the connection");
        drop(conn.detach());
    }
}

async fn apply_pending(
    conn: &mut MySqlConnection,
    index: usize,
    tables: usize,
) -> Result<usize, StoreError> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT NOT NULL PRIMARY KEY,
            description VARCHAR(255) NOT NULL,
            applied_at_ms BIGINT NOT NULL
        ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4",
    )
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    let rows = sqlx::query("SELECT version FROM schema_migrations")
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
    let applied = rows
        .iter()
        .map(|r| r.int("version"))
        .collect::<Result<Vec<_>, _>>()?;

    let mut count = 0;
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        for t in 0..tables {
            for stmt in statements(m.sharded) {
                run(conn, stmt.replace("{t}", &t.to_string())).await?;
            }
        }
        if index == 0 {
            for stmt in statements(m.global) {
                run(conn, stmt).await?;
            }
        }
        sqlx::query(
            "INSERT INTO schema_migrations (version, description, applied_at_ms) VALUES (?, ?, ?)",
        )
        .bind(m.version)
        .bind(m.description)
        .bind(to_ms(jiff::Timestamp::now()))
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
        tracing::info!(database = index, version = m.version, "applied migration");
        count += 1;
    }
    Ok(count)
}

async fn run(conn: &mut MySqlConnection, stmt: String) -> Result<(), StoreError> {
    let idempotent_add = adds_a_column(&stmt);
    // Embedded scripts only; the sole substitution is a table index.
    match sqlx::raw_sql(AssertSqlSafe(stmt)).execute(conn).await {
        Ok(_) => Ok(()),
        Err(e) if idempotent_add && error_number(&e) == Some(ER_DUP_FIELDNAME) => Ok(()),
        Err(e) => Err(db_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_scripts_and_drops_comments() {
        let s = statements(
            "-- a; comment\nCREATE TABLE a_{t} (x INT);\n\n  -- another\nCREATE TABLE b (y INT);\n",
        );
        assert_eq!(
            s,
            vec!["CREATE TABLE a_{t} (x INT)", "CREATE TABLE b (y INT)"]
        );
    }

    #[test]
    fn recognises_single_column_additions_only() {
        assert!(adds_a_column(
            "ALTER TABLE templates_{t} ADD COLUMN x VARCHAR(8) NOT NULL DEFAULT 'a'"
        ));
        assert!(!adds_a_column(
            "ALTER TABLE t ADD COLUMN a INT, DROP COLUMN b"
        ));
        assert!(!adds_a_column("ALTER TABLE t DROP COLUMN b"));
        assert!(!adds_a_column("CREATE TABLE IF NOT EXISTS t (x INT)"));
        assert!(modifies_a_column(
            "ALTER TABLE outbox_{t} MODIFY COLUMN event_id VARCHAR(160) NOT NULL"
        ));
        assert!(!modifies_a_column(
            "ALTER TABLE t MODIFY COLUMN a INT, DROP COLUMN b"
        ));
    }

    #[test]
    fn embedded_scripts_are_idempotent_and_templated() {
        for m in MIGRATIONS {
            let sharded = statements(m.sharded);
            assert!(!sharded.is_empty() || !statements(m.global).is_empty());
            for s in sharded.iter().chain(statements(m.global).iter()) {
                assert!(
                    s.contains("IF NOT EXISTS")
                        || s.contains("IF EXISTS")
                        // A backfill whose rows have a unique key: a rerun adds nothing.
                        || s.starts_with("INSERT IGNORE INTO ")
                        || adds_a_column(s)
                        || modifies_a_column(s),
                    "not idempotent: {s}"
                );
            }
            // A per-database table (one, not one per index) may be created from the sharded
            // script: IF NOT EXISTS makes its repeats no-ops.
            assert!(
                sharded
                    .iter()
                    .all(|s| s.contains("{t}") || s.starts_with("CREATE TABLE IF NOT EXISTS ")),
                "a sharded statement without {{t}}"
            );
            assert!(!m.global.contains("{t}"));
        }
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
    }
}
