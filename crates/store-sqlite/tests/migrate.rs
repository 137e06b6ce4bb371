//! Migrations of the SQLite file: applied once, a no-op when run again or on reopening.
//! What the store does with its data is in the conformance suite (`conformance.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use stampede_conformance::fixtures::{create, template};
use stampede_core::ports::TemplateStore;
use stampede_store_sqlite::{SqliteOptions, SqliteStore};

#[tokio::test]
async fn migrate_twice_is_a_no_op_and_reopening_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stampede.db");
    let options = SqliteOptions {
        read_connections: 1,
        fsync_every_commit: true,
    };
    let store = SqliteStore::open(&path, options).await.unwrap();
    assert_eq!(store.migrate().await.unwrap(), 0);
    assert_eq!(store.migrate().await.unwrap(), 0);
    let t = template(1, 1, "kept");
    create(&store, &t).await;
    drop(store);

    let reopened = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    assert_eq!(reopened.migrate().await.unwrap(), 0);
    assert_eq!(reopened.get_template(t.id).await.unwrap(), Some(t));
}
