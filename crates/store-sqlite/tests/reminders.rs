//! What only the SQLite store shows about reminders: one delivery partition, 0, holding every
//! row. Everything the port answers is in the conformance suite (`conformance.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use stampede_conformance::fixtures::{now, uid};
use stampede_conformance::reminders::{rem, set, start};
use stampede_core::reminder_ports::ReminderStore;
use stampede_domain::reminder::Channel;
use stampede_store_sqlite::{SqliteOptions, SqliteStore};

#[tokio::test]
async fn one_partition_holds_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("s.db"), SqliteOptions::default())
        .await
        .unwrap();
    assert_eq!(s.partitions(), 1);
    for user in 1..=20 {
        set(&s, user, 1 + user % 3, rem(Channel::App, 5)).await;
    }
    let due = s.due_reminders(0, start(), 100).await.unwrap();
    assert_eq!(due.len(), 20);
    assert!((1..=20).all(|u| due.iter().any(|r| r.user_id == uid(u))));

    // Partition 1 does not exist.
    assert!(s.any_due(1, start()).await.is_err());
    assert!(s.due_reminders(1, start(), 100).await.is_err());
    assert!(s.lease_partition(1, "a", now(), start()).await.is_err());
    assert!(s.purge_reminders(1, start(), 100).await.is_err());
}
