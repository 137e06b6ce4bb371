//! `stampede-store-sqlite`: the embedded system of record. It owns the SQLite file (WAL
//! mode), its schema and migrations, and implements the core's storage ports
//! (`TemplateStore`, `AccountStore`, `CouponStore`, `DistributionStore`,
//! `SettlementStore`, `ReminderStore`) on it.
//!
//! Layout:
//! - `lib.rs`: `SqliteStore`, opening the file and the two pools;
//! - `backup.rs`: online snapshots of the file (`VACUUM INTO`) and the integrity check a
//!   restore runs;
//! - `migrate.rs`: the embedded migrations (`migrations/*.sql`) and their runner;
//! - `templates.rs`: `TemplateStore` (templates, audit log, idempotency keys);
//! - `accounts.rs`: `AccountStore` (accounts, sessions, refresh-token rotation);
//! - `coupons.rs`: `CouponStore` (user coupons, the outbox, and `commit_claims`, the
//!   embedded group commit: one transaction per batch of claims);
//! - `distributions.rs`: `DistributionStore` (tasks, their files and failed rows; a batch's
//!   coupons, stock change, failures and checkpoint in one transaction);
//! - `settlements.rs`: `SettlementStore` (orders, settlement rows, coupon moves + events);
//! - `reminders.rs`: `ReminderStore` (one row of reminder bits per user and template, the
//!   delivery lease of its single partition);
//! - `write_queue.rs`: group commit of the write transactions (each body in a savepoint of one
//!   shared transaction, one commit for all).
//!
//! SQLite allows one writer at a time, so every write goes through a pool of exactly one
//! connection and opens its transaction with `BEGIN IMMEDIATE`: writers queue in the pool
//! instead of failing with `SQLITE_BUSY` when a read lock would have to be upgraded. Reads
//! use a separate pool; WAL lets them run alongside the writer. Row decoding is shared with
//! the MySQL adapter through `stampede_core::records`.

mod accounts;
pub mod backup;
mod coupons;
mod distributions;
mod flow;
mod leases;
mod migrate;
mod outbox;
mod reminders;
mod settlements;
mod templates;
mod write_queue;

use futures::future::BoxFuture;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqliteConnection, SqlitePool};
use stampede_core::ports::StoreError;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use write_queue::WriteQueue;

use stampede_store_sql::db_err;

/// How the store sizes its pools.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Connections in the read pool (at least 1 is used).
    pub read_connections: u32,
    /// `true`: every commit is fsynced (`synchronous=FULL`), so it survives power loss.
    /// `false`: `synchronous=NORMAL`; in WAL mode a commit is still in the OS once the call
    /// returns, so it survives the process being killed, but not the machine losing power.
    pub fsync_every_commit: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            read_connections: 4,
            fsync_every_commit: true,
        }
    }
}

/// The SQLite-backed store. Cloning is cheap: clones share the pools.
#[derive(Clone)]
pub struct SqliteStore {
    /// Exactly one connection: SQLite has a single writer anyway, and queueing here is
    /// cheaper and fairer than retrying on `SQLITE_BUSY`.
    writer: SqlitePool,
    reader: SqlitePool,
    /// Group commit of the write transactions that go through `in_write_tx`.
    writes: WriteQueue,
    /// Keeps the background checkpointer running while any clone of the store lives.
    _checkpointer: Arc<tokio::sync::watch::Sender<()>>,
}

impl SqliteStore {
    /// The writer's and the readers' pool occupancy, for `/metrics`.
    pub fn pool_stats(&self) -> Vec<stampede_core::telemetry::PoolGauge> {
        [
            ("sqlite_writer", &self.writer),
            ("sqlite_reader", &self.reader),
        ]
        .into_iter()
        .map(|(name, pool)| stampede_store_sql::pool_gauge(name.to_owned(), pool))
        .collect()
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the background checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Copies committed WAL frames into the database file from a connection of its own, every
/// `CHECKPOINT_EVERY`, so the writer's commits rarely pay for it: left to the writer, a
/// checkpoint of 20,000 pages stalled every write behind it for tens of milliseconds.
/// PASSIVE never blocks the writer or readers. The writer keeps its own autocheckpoint as a
/// backstop; by the time it fires, nearly every frame is already copied.
/// Stops once every clone of the store is dropped (the returned sender with them).
async fn spawn_checkpointer(
    opts: SqliteConnectOptions,
) -> Result<tokio::sync::watch::Sender<()>, StoreError> {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect_with(&opts)
        .await
        .map_err(db_err)?;
    let (alive, mut store_dropped) = tokio::sync::watch::channel(());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = store_dropped.changed() => break,
            }
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&mut conn)
                .await
            {
                tracing::warn!(error = %e, "background WAL checkpoint failed");
            }
        }
        let _ = conn.close().await;
    });
    Ok(alive)
}

impl SqliteStore {
    /// Creates the parent directory and the file if missing, sets WAL, synchronous=FULL,
    /// busy_timeout=5s, foreign_keys=ON, and applies pending migrations. One writer
    /// connection (pool of size 1) + a read pool.
    pub async fn open(path: &Path, opts: SqliteOptions) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| StoreError::Backend(Box::new(e)))?;
        }
        let base = SqliteConnectOptions::new()
            .filename(path)
            .synchronous(if opts.fsync_every_commit {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);

        // The writer opens first: it creates the file and switches it to WAL (a persistent
        // setting), so readers never need the exclusive lock that switch takes.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // The group commit inserts thousands of rows per transaction into several
                    // indexes; with SQLite's default 2 MB cache most index pages are re-read
                    // from the OS on every batch.
                    .pragma("cache_size", "-65536")
                    .pragma("wal_autocheckpoint", "20000"),
            )
            .await
            .map_err(db_err)?;
        let checkpointer = Arc::new(spawn_checkpointer(base.clone()).await?);
        let reader = SqlitePoolOptions::new()
            .max_connections(opts.read_connections.max(1))
            // A guard, not a permission system: a write sent to the read pool fails loudly
            // instead of racing the writer for the lock.
            .connect_with(base.pragma("query_only", "ON"))
            .await
            .map_err(db_err)?;

        let writes = WriteQueue::spawn(writer.clone())?;
        let store = SqliteStore {
            writer,
            reader,
            writes,
            _checkpointer: checkpointer,
        };
        let applied = store.migrate().await?;
        tracing::info!(path = %path.display(), applied, "opened sqlite store");
        Ok(store)
    }

    /// Runs `f` in a write transaction, group-committed with the others queued meanwhile
    /// (`write_queue.rs`); `f`'s error means nothing it wrote is stored.
    pub(crate) async fn in_write_tx<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
        T: Send + 'static,
    {
        self.writes.write(f).await
    }

    /// Applies pending migrations (idempotent; `open` already calls it). Returns how many
    /// were applied.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        migrate::run(&self.writer).await
    }
}
