//! `ReminderStore`: atomic bit updates, due times, delivery partitions and their leases, and
//! the fenced recording of deliveries with their outbox events.

use crate::helpers::*;
use jiff::{SignedDuration, Timestamp};
use sqlx::mysql::MySqlPool;
use stampede_core::claim_ports::{CouponStore, OutboxEvent};
use stampede_core::reminder_ports::{
    DeliveryError, PartitionLease, REMINDER_DUE, ReminderRow, ReminderStore, RowUpdate,
};
use stampede_domain::ids::UserId;
use stampede_domain::reminder::{Channel, Reminder, ReminderSet};
use stampede_domain::time::to_ms;
use stampede_store_mysql::MysqlStore;
use std::collections::HashSet;

small_layouts!(
    set_is_idempotent_and_lowers_next_due,
    concurrent_sets_never_lose_a_bit,
    delete_then_set,
    due_reminders_are_ordered_and_limited,
    leases_go_to_one_owner_and_hand_over,
    a_stale_lease_records_nothing,
    recording_applies_updates_and_writes_events,
    partitions_cover_all_rows,
    purge_deletes_only_rows_whose_sale_started_before
);

fn mins(m: i64) -> SignedDuration {
    SignedDuration::from_mins(m)
}

fn rem(channel: Channel, minutes: i64) -> Reminder {
    Reminder::new(channel, minutes).unwrap()
}

fn set_of(rs: &[Reminder]) -> ReminderSet {
    rs.iter().fold(ReminderSet::EMPTY, |s, r| s.with(*r))
}

/// Every reminder there is (36).
fn all_reminders() -> Vec<Reminder> {
    Channel::ALL
        .into_iter()
        .flat_map(|c| (1..=12).map(move |s| rem(c, s * 5)))
        .collect()
}

/// The sale the reminders are for: two hours after `now()`.
fn start() -> Timestamp {
    now() + hours(2)
}

fn partition_of(store: &MysqlStore, user: i64) -> u32 {
    let s = store.router().route(user);
    (s.database * store.router().tables_per_database() + s.table) as u32
}

/// `n` user ids (from 1 up) whose rows are in partition `p`.
fn users_in(store: &MysqlStore, p: u32, n: usize) -> Vec<i64> {
    (1..)
        .filter(|u| partition_of(store, *u) == p)
        .take(n)
        .collect()
}

async fn row(store: &MysqlStore, user: i64, template: i64) -> Option<ReminderRow> {
    store
        .user_reminders(uid(user))
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.template_id == tid(template))
}

async fn set(store: &MysqlStore, user: i64, template: i64, r: Reminder) {
    store
        .set_reminder(uid(user), tid(template), start(), r)
        .await
        .unwrap();
}

async fn lease(store: &MysqlStore, p: u32, owner: &str, at: Timestamp) -> Option<PartitionLease> {
    store
        .lease_partition(p, owner, at, at + mins(1))
        .await
        .unwrap()
}

fn event(user: UserId, n: u32) -> OutboxEvent {
    OutboxEvent {
        id: format!("reminder:{user}:{n}"),
        kind: REMINDER_DUE.to_owned(),
        aggregate_id: user.get(),
        payload: format!("{{\"user_id\":\"{user}\"}}"),
        created_at_ms: to_ms(now()),
    }
}

/// The ids of the events of kind `REMINDER_DUE` in `outbox_{t}` of one database.
async fn outbox_ids(ctx: &Ctx, database: usize, table: usize) -> HashSet<String> {
    let pool = MySqlPool::connect(&ctx.cfg.databases[database])
        .await
        .unwrap();
    let ids: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT event_id FROM outbox_{table} WHERE kind = ?"
    )))
    .bind(REMINDER_DUE)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    ids.into_iter().collect()
}

async fn set_is_idempotent_and_lowers_next_due(ctx: Ctx) {
    let store = &ctx.store;
    let email15 = rem(Channel::Email, 15);
    set(store, 7, 1, email15).await;
    let first = row(store, 7, 1).await.unwrap();
    assert_eq!(
        first,
        ReminderRow {
            user_id: uid(7),
            template_id: tid(1),
            claim_start: start(),
            bits: set_of(&[email15]),
            sent: ReminderSet::EMPTY,
            next_due: Some(start() - mins(15)),
        }
    );
    set(store, 7, 1, email15).await;
    assert_eq!(
        row(store, 7, 1).await.unwrap(),
        first,
        "setting again changes nothing"
    );

    // A longer lead time lowers next_due; a shorter one leaves it.
    let app60 = rem(Channel::App, 60);
    set(store, 7, 1, app60).await;
    let r = row(store, 7, 1).await.unwrap();
    assert_eq!(r.bits, set_of(&[email15, app60]));
    assert_eq!(r.next_due, Some(start() - mins(60)));
    set(store, 7, 1, rem(Channel::Webhook, 5)).await;
    let r = row(store, 7, 1).await.unwrap();
    assert_eq!(r.bits.len(), 3);
    assert_eq!(r.next_due, Some(start() - mins(60)));

    // Other users and templates are other rows.
    set(store, 7, 2, email15).await;
    set(store, 8, 1, email15).await;
    let mine = store.user_reminders(uid(7)).await.unwrap();
    assert_eq!(
        mine.iter().map(|r| r.template_id).collect::<Vec<_>>(),
        [tid(1), tid(2)]
    );
    assert_eq!(mine[1].bits, set_of(&[email15]));
    assert!(store.user_reminders(uid(9)).await.unwrap().is_empty());
}

async fn concurrent_sets_never_lose_a_bit(ctx: Ctx) {
    let store = &ctx.store;
    let all = all_reminders();
    // Each reminder set three times, by tasks racing on one row, also with deletes of a
    // reminder nobody else sets.
    set(store, 42, 1, rem(Channel::App, 5)).await;
    let tasks: Vec<_> = (0..3)
        .flat_map(|_| all.clone())
        .map(|r| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .set_reminder(uid(42), tid(1), start(), r)
                    .await
                    .unwrap();
            })
        })
        .collect();
    for t in futures::future::join_all(tasks).await {
        t.unwrap();
    }
    let r = row(store, 42, 1).await.unwrap();
    assert_eq!(r.bits, set_of(&all));
    assert_eq!(r.bits.len(), 36);
    assert_eq!(r.next_due, Some(start() - mins(60)));

    // Concurrent deletes of half and sets of the rest: the deleted half is gone, nothing else.
    let (gone, kept): (Vec<Reminder>, Vec<Reminder>) =
        all.iter().partition(|r| r.minutes_before % 10 == 0);
    let tasks: Vec<_> = all
        .iter()
        .map(|r| {
            let store = store.clone();
            let (r, delete) = (*r, gone.contains(r));
            tokio::spawn(async move {
                if delete {
                    assert!(store.delete_reminder(uid(42), tid(1), r).await.unwrap());
                } else {
                    store
                        .set_reminder(uid(42), tid(1), start(), r)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in futures::future::join_all(tasks).await {
        t.unwrap();
    }
    assert_eq!(row(store, 42, 1).await.unwrap().bits, set_of(&kept));
}

async fn delete_then_set(ctx: Ctx) {
    let store = &ctx.store;
    let email15 = rem(Channel::Email, 15);
    let app30 = rem(Channel::App, 30);
    assert!(
        !store
            .delete_reminder(uid(5), tid(1), email15)
            .await
            .unwrap(),
        "no row"
    );
    set(store, 5, 1, email15).await;
    assert!(
        !store.delete_reminder(uid(5), tid(1), app30).await.unwrap(),
        "a bit not set"
    );
    set(store, 5, 1, app30).await;
    assert!(store.delete_reminder(uid(5), tid(1), app30).await.unwrap());
    assert!(!store.delete_reminder(uid(5), tid(1), app30).await.unwrap());
    let r = row(store, 5, 1).await.unwrap();
    assert_eq!(r.bits, set_of(&[email15]));
    // Deleting leaves the (now early) hint.
    assert_eq!(r.next_due, Some(start() - mins(30)));

    assert!(
        store
            .delete_reminder(uid(5), tid(1), email15)
            .await
            .unwrap()
    );
    assert!(
        store.user_reminders(uid(5)).await.unwrap().is_empty(),
        "an empty row is not listed"
    );
    set(store, 5, 1, email15).await;
    let r = row(store, 5, 1).await.unwrap();
    assert_eq!(r.bits, set_of(&[email15]));
    assert_eq!(r.next_due, Some(start() - mins(30)));

    // Setting a delivered reminder again clears its `sent` bit.
    let p = partition_of(store, 5);
    let l = lease(store, p, "node-a", now()).await.unwrap();
    store
        .record_deliveries(
            &l,
            now() + mins(1),
            &[RowUpdate {
                user_id: uid(5),
                template_id: tid(1),
                read_bits: set_of(&[email15]),
                done: set_of(&[email15]),
                next_due: None,
            }],
            &[],
            now(),
        )
        .await
        .unwrap();
    let r = row(store, 5, 1).await.unwrap();
    assert_eq!((r.sent, r.next_due), (set_of(&[email15]), None));
    assert!(r.pending().is_empty());
    set(store, 5, 1, email15).await;
    let r = row(store, 5, 1).await.unwrap();
    assert_eq!(r.sent, ReminderSet::EMPTY);
    assert_eq!(r.pending(), set_of(&[email15]));
    assert_eq!(r.next_due, Some(start() - mins(15)));
}

async fn due_reminders_are_ordered_and_limited(ctx: Ctx) {
    let store = &ctx.store;
    let p = store.partitions() - 1;
    let users = users_in(store, p, 12);
    // User i's reminder has a lead of 60 - 5i minutes: earlier users are due earlier.
    for (i, u) in users.iter().enumerate() {
        set(store, *u, 1, rem(Channel::App, 60 - 5 * i as i64)).await;
    }
    // Due with the last user's: ties go by user, then template.
    set(store, users[0], 2, rem(Channel::App, 5)).await;

    let at = |m: i64| start() - mins(m);
    assert!(!store.any_due(p, at(61)).await.unwrap());
    assert!(
        store
            .due_reminders(p, at(61), 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.any_due(p, at(60)).await.unwrap());

    let all = store.due_reminders(p, start(), 100).await.unwrap();
    let order: Vec<(i64, i64)> = all
        .iter()
        .map(|r| (r.user_id.get(), r.template_id.get()))
        .collect();
    let mut expected: Vec<(i64, i64)> = users[..11].iter().map(|u| (*u, 1)).collect();
    expected.extend([(users[0], 2), (users[11], 1)]);
    assert_eq!(order, expected);
    assert_eq!(all[0].next_due, Some(at(60)));
    assert_eq!(all[12].next_due, Some(at(5)));

    // Up to 30 minutes before: the 7 due earliest, in order; a limit keeps the first ones.
    let some = store.due_reminders(p, at(30), 100).await.unwrap();
    assert_eq!(some.len(), 7);
    assert_eq!(some, all[..7].to_vec());
    assert_eq!(
        store.due_reminders(p, at(30), 3).await.unwrap(),
        all[..3].to_vec()
    );
    assert!(store.due_reminders(p, start(), 0).await.unwrap().is_empty());

    // Other partitions see none of them; a partition past the last is an error.
    for other in (0..store.partitions()).filter(|q| *q != p) {
        assert!(!store.any_due(other, start()).await.unwrap());
    }
    assert!(store.any_due(store.partitions(), start()).await.is_err());
}

async fn leases_go_to_one_owner_and_hand_over(ctx: Ctx) {
    let store = &ctx.store;
    let p = 0;
    // Many contenders at once: one owner wins.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let owner = format!("node-{}", i % 4);
                lease(&store, p, &owner, now()).await
            })
        })
        .collect();
    let granted: Vec<PartitionLease> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .filter_map(|t| t.unwrap())
        .collect();
    let owners: HashSet<&str> = granted.iter().map(|l| l.owner.as_str()).collect();
    assert_eq!(owners.len(), 1, "{granted:?}");
    let tokens: HashSet<i64> = granted.iter().map(|l| l.token).collect();
    assert_eq!(
        tokens.len(),
        1,
        "the winner's renewals keep its token: {granted:?}"
    );
    let held = granted[0].clone();
    assert_eq!(held.partition, p);
    let winner = held.owner.clone();
    let other = if winner == "node-0" {
        "node-1"
    } else {
        "node-0"
    };

    // Renewing keeps the token; another owner is refused until the lease expires.
    let renewed = lease(
        store,
        p,
        &winner,
        now() + mins(1) - SignedDuration::from_millis(1),
    )
    .await
    .unwrap();
    assert_eq!(renewed, held);
    assert_eq!(lease(store, p, other, now() + mins(1)).await, None);
    // The lease now runs to now + 2 min - 1 ms; expired at its end.
    let until = now() + mins(2) - SignedDuration::from_millis(1);
    assert_eq!(
        lease(store, p, other, until - SignedDuration::from_millis(1)).await,
        None
    );
    let taken = lease(store, p, other, until).await.unwrap();
    assert_eq!(taken.owner, other);
    assert!(taken.token > held.token, "{taken:?} after {held:?}");

    // The old holder can neither renew nor release it.
    assert_eq!(lease(store, p, &winner, until).await, None);
    store.release_partition(&held).await.unwrap();
    assert_eq!(lease(store, p, &winner, until).await, None);
    // Its holder releases it: free at once, for a new token.
    store.release_partition(&taken).await.unwrap();
    let back = lease(store, p, &winner, until).await.unwrap();
    assert!(back.token > taken.token);

    // Partitions are leased independently.
    for q in 1..store.partitions() {
        let l = lease(store, q, other, until).await.unwrap();
        assert_eq!((l.partition, l.owner.as_str()), (q, other));
    }
    assert!(
        store
            .lease_partition(store.partitions(), "x", now(), now())
            .await
            .is_err()
    );
    assert!(store.lease_partition(p, "", now(), now()).await.is_err());
}

async fn a_stale_lease_records_nothing(ctx: Ctx) {
    let store = &ctx.store;
    let p = store.partitions() - 1;
    let user = users_in(store, p, 1)[0];
    let r = rem(Channel::App, 30);
    set(store, user, 1, r).await;
    let before = row(store, user, 1).await.unwrap();

    let a = lease(store, p, "node-a", now()).await.unwrap();
    let b = lease(store, p, "node-b", now() + mins(1)).await.unwrap();
    let update = RowUpdate {
        user_id: uid(user),
        template_id: tid(1),
        read_bits: before.bits,
        done: before.bits,
        next_due: None,
    };
    let stale = store
        .record_deliveries(
            &a,
            now() + mins(5),
            std::slice::from_ref(&update),
            &[event(uid(user), 1)],
            now() + mins(1),
        )
        .await;
    assert!(matches!(stale, Err(DeliveryError::LeaseLost)), "{stale:?}");
    // A forged lease with the holder's name but an old token is refused too.
    let forged = PartitionLease {
        token: a.token,
        ..b.clone()
    };
    let stale = store
        .record_deliveries(&forged, now() + mins(5), &[update], &[], now() + mins(1))
        .await;
    assert!(matches!(stale, Err(DeliveryError::LeaseLost)), "{stale:?}");

    assert_eq!(row(store, user, 1).await.unwrap(), before);
    assert!(
        store
            .outbox_events(REMINDER_DUE, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // The lease was not extended: it expires when B took it to.
    assert_eq!(
        lease(store, p, "node-c", now() + mins(2))
            .await
            .unwrap()
            .owner,
        "node-c"
    );
}

async fn recording_applies_updates_and_writes_events(ctx: Ctx) {
    let store = &ctx.store;
    let p = store.partitions() - 1;
    // More rows than the largest statement chunk (256), so the batch spans statements.
    let users = users_in(store, p, 300);
    let app30 = rem(Channel::App, 30);
    let email10 = rem(Channel::Email, 10);
    for u in &users {
        set(store, *u, 1, app30).await;
        set(store, *u, 1, email10).await;
    }
    let l = lease(store, p, "node-a", now()).await.unwrap();
    let read_at = start() - mins(30);
    let read = store.due_reminders(p, read_at, 1_000).await.unwrap();
    assert_eq!(read.len(), 300);

    // Meanwhile the first user sets another reminder: its row's bits changed since the read.
    let changed = users[0];
    set(store, changed, 1, rem(Channel::Webhook, 20)).await;

    // Deliver app30; email10 is next (due 10 minutes before the start). Half are given no
    // next due, as if email10 had been cancelled too.
    let updates: Vec<RowUpdate> = read
        .iter()
        .enumerate()
        .map(|(i, r)| RowUpdate {
            user_id: r.user_id,
            template_id: r.template_id,
            read_bits: r.bits,
            done: set_of(&[app30]),
            next_due: (i % 2 == 0).then(|| start() - mins(10)),
        })
        .collect();
    let events: Vec<OutboxEvent> = read.iter().map(|r| event(r.user_id, 30)).collect();
    store
        .record_deliveries(&l, read_at + mins(1), &updates, &events, read_at)
        .await
        .unwrap();

    for (i, r) in read.iter().enumerate() {
        let after = row(store, r.user_id.get(), 1).await.unwrap();
        assert_eq!(after.sent, set_of(&[app30]), "user {}", r.user_id);
        let expected = if r.user_id.get() == changed {
            Some(read_at)
        } else if i % 2 == 0 {
            Some(start() - mins(10))
        } else {
            None
        };
        assert_eq!(after.next_due, expected, "user {}", r.user_id);
    }
    let changed_row = row(store, changed, 1).await.unwrap();
    assert_eq!(changed_row.bits.len(), 3);
    assert_eq!(changed_row.pending().len(), 2);
    // The changed row is looked at again at once.
    assert_eq!(
        store.due_reminders(p, read_at, 1).await.unwrap()[0].user_id,
        uid(changed)
    );

    // The events are in the outbox of the users' own shard table, and only there.
    let shard = store.router().route(users[0]);
    let expected: HashSet<String> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(
        outbox_ids(&ctx, shard.database, shard.table).await,
        expected
    );
    let everywhere = store.outbox_events(REMINDER_DUE, 10_000).await.unwrap();
    assert_eq!(everywhere.len(), 300);

    // Recording the same events again (a retried batch) does not duplicate them.
    store
        .record_deliveries(&l, read_at + mins(1), &[], &events[..10], read_at)
        .await
        .unwrap();
    assert_eq!(
        store
            .outbox_events(REMINDER_DUE, 10_000)
            .await
            .unwrap()
            .len(),
        300
    );

    // The lease was extended to read_at + 1 min.
    assert_eq!(lease(store, p, "node-b", read_at).await, None);
    assert_eq!(
        lease(store, p, "node-b", read_at + mins(1))
            .await
            .unwrap()
            .owner,
        "node-b"
    );

    // A row of another partition is refused, writing nothing.
    if store.partitions() > 1 {
        let l0 = lease(store, 0, "node-a", now()).await.unwrap();
        let wrong = store
            .record_deliveries(&l0, now(), &updates[..1], &[], now())
            .await;
        assert!(matches!(wrong, Err(DeliveryError::Store(_))), "{wrong:?}");
    }
}

async fn partitions_cover_all_rows(ctx: Ctx) {
    let store = &ctx.store;
    let layout = ctx.cfg.databases.len() as u32 * ctx.cfg.tables_per_database;
    assert_eq!(store.partitions(), layout);
    let mut expected = HashSet::new();
    for u in 1..=120 {
        let template = 1 + u % 3;
        set(
            store,
            u,
            template,
            rem(Channel::ALL[(u % 3) as usize], 5 * (1 + u % 12)),
        )
        .await;
        expected.insert((u, template));
    }
    let mut seen = HashSet::new();
    let mut used = HashSet::new();
    for p in 0..store.partitions() {
        for r in store.due_reminders(p, start(), 1_000).await.unwrap() {
            assert_eq!(partition_of(store, r.user_id.get()), p);
            assert!(
                seen.insert((r.user_id.get(), r.template_id.get())),
                "{r:?} twice"
            );
            used.insert(p);
        }
    }
    assert_eq!(seen, expected);
    assert_eq!(used.len() as u32, layout, "every partition holds some rows");
}

async fn purge_deletes_only_rows_whose_sale_started_before(ctx: Ctx) {
    let store = &ctx.store;
    let later = start() + SignedDuration::from_hours(48);
    for u in 1..=40 {
        set(store, u, 1, rem(Channel::App, 5)).await;
        store
            .set_reminder(uid(u), tid(2), later, rem(Channel::Email, 10))
            .await
            .unwrap();
    }
    let cutoff = start() + SignedDuration::from_hours(1);
    let mut purged = 0;
    for p in 0..store.partitions() {
        // A small limit: the job repeats until a step deletes less than a full batch.
        loop {
            let n = store.purge_reminders(p, cutoff, 3).await.unwrap();
            purged += n;
            if n < 3 {
                break;
            }
        }
    }
    assert_eq!(purged, 40);
    for u in 1..=40 {
        assert!(row(store, u, 1).await.is_none());
        assert!(row(store, u, 2).await.is_some());
    }
    assert!(
        store
            .purge_reminders(store.partitions(), cutoff, 3)
            .await
            .is_err()
    );
}
