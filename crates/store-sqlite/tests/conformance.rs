//! The SQLite store against every storage port's conformance suite (`stampede-conformance`),
//! each scenario on a fresh file of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use stampede_conformance::{StoreFixture, SystemOfRecord};
use stampede_store_sqlite::{SqliteOptions, SqliteStore};
use std::path::PathBuf;
use std::sync::Arc;
use tempfile::TempDir;

struct Sqlite {
    _dir: TempDir,
    path: PathBuf,
    store: Arc<SqliteStore>,
}

#[async_trait]
impl StoreFixture for Sqlite {
    fn store(&self) -> Arc<dyn SystemOfRecord> {
        self.store.clone()
    }

    async fn reopen(&self) -> Arc<dyn SystemOfRecord> {
        Arc::new(
            SqliteStore::open(&self.path, SqliteOptions::default())
                .await
                .expect("reopen the store"),
        )
    }
}

async fn run(scenario: impl AsyncFnOnce(&dyn StoreFixture)) {
    let dir = tempfile::tempdir().unwrap();
    // A nested path also checks that `open` creates the parent directory.
    let path = dir.path().join("data/stampede.db");
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .expect("open the store");
    let fixture = Sqlite {
        _dir: dir,
        path,
        store: Arc::new(store),
    };
    scenario(&fixture).await;
}

stampede_conformance::system_of_record_suite!(run);
