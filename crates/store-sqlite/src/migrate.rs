//! A small migration runner over SQL files embedded at compile time.
//!
//! sqlx's own `migrate!` macro would do this, but it needs sqlx's `macros` feature, which the
//! workspace keeps off for build time; the runner below is all we need from it. Each
//! migration runs in its own `BEGIN IMMEDIATE` transaction together with its
//! `schema_migrations` row, so a crash leaves either all of it or none, and two processes
//! opening the same file at once cannot both apply it.

use sqlx::SqlitePool;
use stampede_core::ports::StoreError;
use stampede_domain::time::to_ms;
use stampede_store_sql::db_err;

pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) description: &'static str,
    pub(crate) sql: &'static str,
}

/// In version order; append only (an applied migration is never edited).
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "templates, audit, idempotency keys",
        sql: include_str!("../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        description: "accounts, sessions, refresh tokens",
        sql: include_str!("../migrations/0002_auth.sql"),
    },
    Migration {
        version: 3,
        description: "user coupons, outbox",
        sql: include_str!("../migrations/0003_coupons.sql"),
    },
    Migration {
        version: 4,
        description: "distribution tasks, failures, files",
        sql: include_str!("../migrations/0004_distributions.sql"),
    },
    Migration {
        version: 5,
        description: "orders and settlement rows",
        sql: include_str!("../migrations/0005_settlements.sql"),
    },
    Migration {
        version: 6,
        description: "reminders and their delivery leases",
        sql: include_str!("../migrations/0006_reminders.sql"),
    },
    Migration {
        version: 7,
        description: "flow-control rules",
        sql: include_str!("../migrations/0007_flow_rules.sql"),
    },
    Migration {
        version: 8,
        description: "claim journal position",
        sql: include_str!("../migrations/0008_claim_journal.sql"),
    },
    Migration {
        version: 9,
        description: "user coupons: the claim guard serves per-template reads",
        sql: include_str!("../migrations/0009_coupon_indexes.sql"),
    },
    Migration {
        version: 10,
        description: "template goods index",
        sql: include_str!("../migrations/0010_template_goods.sql"),
    },
    Migration {
        version: 11,
        description: "outbox events' traceparent",
        sql: include_str!("../migrations/0011_outbox_trace.sql"),
    },
    Migration {
        version: 12,
        description: "outbox relay leases",
        sql: include_str!("../migrations/0012_outbox_leases.sql"),
    },
];

/// Applies every migration not yet recorded; returns how many it applied.
pub(crate) async fn run(writer: &SqlitePool) -> Result<usize, StoreError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
             version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at_ms INTEGER NOT NULL)",
    )
    .execute(writer)
    .await
    .map_err(db_err)?;

    let mut applied = 0;
    for m in MIGRATIONS {
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        // Checked under the write lock, so a concurrent opener cannot apply it twice.
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = ?")
                .bind(m.version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        if done.is_some() {
            tx.rollback().await.map_err(db_err)?;
            continue;
        }
        sqlx::raw_sql(m.sql)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, description, applied_at_ms) VALUES (?, ?, ?)",
        )
        .bind(m.version)
        .bind(m.description)
        .bind(to_ms(jiff::Timestamp::now()))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        tracing::info!(
            version = m.version,
            description = m.description,
            "applied migration"
        );
        applied += 1;
    }

    let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(writer)
        .await
        .map_err(db_err)?;
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if newest.is_some_and(|v| v > known) {
        // A rolled-back binary on a newer file: additive migrations keep working, so warn only.
        tracing::warn!(newest, known, "database schema is newer than this build");
    }
    Ok(applied)
}
