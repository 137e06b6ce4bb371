//! The SQLite store's `ReminderStore`: atomic bit updates, the due scan, the partition lease
//! and fenced delivery records. Each test on its own temporary file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use jiff::{SignedDuration, Timestamp};
use stampede_core::claim_ports::{CouponStore, OutboxEvent};
use stampede_core::reminder_ports::{DeliveryError, REMINDER_DUE, ReminderStore, RowUpdate};
use stampede_domain::ids::{TemplateId, UserId};
use stampede_domain::reminder::{Channel, Reminder, ReminderSet};
use stampede_store_sqlite::{SqliteOptions, SqliteStore};
use std::sync::Arc;
use tempfile::TempDir;

fn start() -> Timestamp {
    Timestamp::from_second(1_900_000_000).unwrap()
}

fn user(n: i64) -> UserId {
    UserId::new(n).unwrap()
}

fn tpl(n: i64) -> TemplateId {
    TemplateId::new(n).unwrap()
}

fn rem(c: Channel, m: i64) -> Reminder {
    Reminder::new(c, m).unwrap()
}

async fn store() -> (TempDir, Arc<SqliteStore>) {
    let dir = TempDir::new().unwrap();
    let s = SqliteStore::open(
        &dir.path().join("s.db"),
        SqliteOptions {
            read_connections: 2,
            fsync_every_commit: false,
        },
    )
    .await
    .unwrap();
    (dir, Arc::new(s))
}

#[tokio::test]
async fn set_is_idempotent_delete_reports_missing_and_the_hint_only_goes_down() {
    let (_d, s) = store().await;
    let (u, t) = (user(7), tpl(9));
    let r15 = rem(Channel::Email, 15);
    s.set_reminder(u, t, start(), r15).await.unwrap();
    s.set_reminder(u, t, start(), r15).await.unwrap();
    let rows = s.user_reminders(u).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].bits, ReminderSet::EMPTY.with(r15));
    assert_eq!(rows[0].next_due, Some(r15.remind_at(start())));
    // A longer lead time is due earlier: the hint follows it; a shorter one leaves it.
    let r60 = rem(Channel::App, 60);
    s.set_reminder(u, t, start(), r60).await.unwrap();
    s.set_reminder(u, t, start(), rem(Channel::App, 5))
        .await
        .unwrap();
    let row = &s.user_reminders(u).await.unwrap()[0];
    assert_eq!(row.bits.len(), 3);
    assert_eq!(row.next_due, Some(r60.remind_at(start())));

    assert!(s.delete_reminder(u, t, r15).await.unwrap());
    assert!(!s.delete_reminder(u, t, r15).await.unwrap());
    assert!(!s.delete_reminder(u, tpl(10), r15).await.unwrap());
    assert!(!s.delete_reminder(user(8), t, r60).await.unwrap());
    let row = &s.user_reminders(u).await.unwrap()[0];
    assert!(!row.bits.contains(r15) && row.bits.contains(r60));
    // Other users see nothing of it.
    assert!(s.user_reminders(user(8)).await.unwrap().is_empty());
}

#[tokio::test]
async fn concurrent_sets_and_deletes_of_one_row_never_lose_a_bit() {
    let (_d, s) = store().await;
    let (u, t) = (user(1), tpl(1));
    let all: Vec<Reminder> = Channel::ALL
        .into_iter()
        .flat_map(|c| (1..=12).map(move |k| rem(c, k * 5)))
        .collect();
    // Pre-set the ones that will be deleted concurrently.
    let doomed: Vec<Reminder> = all.iter().copied().step_by(3).collect();
    for r in &doomed {
        s.set_reminder(u, t, start(), *r).await.unwrap();
    }
    let mut tasks = Vec::new();
    for r in all.iter().copied() {
        let s = s.clone();
        let delete = doomed.contains(&r);
        tasks.push(tokio::spawn(async move {
            if delete {
                assert!(s.delete_reminder(u, t, r).await.unwrap());
            } else {
                s.set_reminder(u, t, start(), r).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let row = &s.user_reminders(u).await.unwrap()[0];
    let want = all
        .iter()
        .filter(|r| !doomed.contains(r))
        .fold(ReminderSet::EMPTY, |acc, r| acc.with(*r));
    assert_eq!(row.bits, want);
}

#[tokio::test]
async fn leases_are_exclusive_and_fence_delivery_records() {
    let (_d, s) = store().await;
    let now = start() - SignedDuration::from_mins(30);
    let until = now + SignedDuration::from_secs(30);
    let a = s
        .lease_partition(0, "a", now, until)
        .await
        .unwrap()
        .unwrap();
    assert!(
        s.lease_partition(0, "b", now, until)
            .await
            .unwrap()
            .is_none()
    );
    // Renewal keeps the token.
    let again = s
        .lease_partition(0, "a", now, until)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.token, a.token);
    // Expired: b takes it over with a new token; a's records are refused.
    let later = until + SignedDuration::from_secs(1);
    let b = s
        .lease_partition(0, "b", later, later + SignedDuration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(b.token, a.token);
    let r = rem(Channel::Webhook, 30);
    s.set_reminder(user(1), tpl(1), start(), r).await.unwrap();
    let upd = RowUpdate {
        user_id: user(1),
        template_id: tpl(1),
        read_bits: ReminderSet::EMPTY.with(r),
        done: ReminderSet::EMPTY.with(r),
        next_due: None,
    };
    let err = s
        .record_deliveries(&a, until, std::slice::from_ref(&upd), &[], later)
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::LeaseLost));
    assert_eq!(
        s.user_reminders(user(1)).await.unwrap()[0].sent,
        ReminderSet::EMPTY
    );
    // Released early, a can take it back at once.
    s.release_partition(&b).await.unwrap();
    assert!(
        s.lease_partition(0, "a", later, until)
            .await
            .unwrap()
            .is_some()
    );
    assert!(s.lease_partition(1, "a", later, until).await.is_err());
}

#[tokio::test]
async fn due_scan_and_records_keep_reminders_set_meanwhile() {
    let (_d, s) = store().await;
    let r60 = rem(Channel::Webhook, 60);
    let r30 = rem(Channel::App, 30);
    for n in 1..=300 {
        s.set_reminder(user(n), tpl(1), start(), r60).await.unwrap();
    }
    let now = r60.remind_at(start());
    assert!(
        !s.any_due(0, now - SignedDuration::from_secs(1))
            .await
            .unwrap()
    );
    assert!(s.any_due(0, now).await.unwrap());
    let due = s.due_reminders(0, now, 200).await.unwrap();
    assert_eq!(due.len(), 200);
    // User 1 adds a reminder after the scheduler read its row.
    s.set_reminder(user(1), tpl(1), start(), r30).await.unwrap();
    let lease = s
        .lease_partition(0, "n", now, now + SignedDuration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let updates: Vec<RowUpdate> = due
        .iter()
        .map(|row| RowUpdate {
            user_id: row.user_id,
            template_id: row.template_id,
            read_bits: row.bits,
            done: row.pending(),
            next_due: None,
        })
        .collect();
    let events = vec![OutboxEvent {
        id: "reminder:1:1:app:30".into(),
        kind: REMINDER_DUE.into(),
        aggregate_id: 1,
        payload: "{}".into(),
        created_at_ms: 0,
    }];
    s.record_deliveries(
        &lease,
        now + SignedDuration::from_secs(30),
        &updates,
        &events,
        now,
    )
    .await
    .unwrap();
    // 100 rows left due, plus user 1, whose hint became `now` because its bits changed.
    let left = s.due_reminders(0, now, 1_000).await.unwrap();
    assert_eq!(left.len(), 101);
    let one = left.iter().find(|r| r.user_id == user(1)).unwrap();
    assert_eq!(one.sent, ReminderSet::EMPTY.with(r60));
    assert_eq!(one.pending(), ReminderSet::EMPTY.with(r30));
    let done = s.user_reminders(user(2)).await.unwrap();
    assert_eq!(done[0].next_due, None);
    assert_eq!(done[0].sent, done[0].bits);
    let out = s.outbox_events(REMINDER_DUE, 10).await.unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].id, "reminder:1:1:app:30");
}

#[tokio::test]
async fn purge_deletes_only_rows_whose_sale_started_before() {
    let (_d, s) = store().await;
    let later = start() + SignedDuration::from_hours(48);
    for n in 1..=30 {
        s.set_reminder(user(n), tpl(1), start(), rem(Channel::App, 5))
            .await
            .unwrap();
        s.set_reminder(user(n), tpl(2), later, rem(Channel::App, 5))
            .await
            .unwrap();
    }
    let cutoff = start() + SignedDuration::from_hours(1);
    assert_eq!(s.purge_reminders(0, cutoff, 20).await.unwrap(), 20);
    assert_eq!(s.purge_reminders(0, cutoff, 20).await.unwrap(), 10);
    assert_eq!(s.purge_reminders(0, cutoff, 20).await.unwrap(), 0);
    for n in 1..=30 {
        let rows = s.user_reminders(user(n)).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].template_id, tpl(2));
    }
}
