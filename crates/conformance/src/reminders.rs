//! `ReminderStore`: atomic bit updates, due times, delivery partitions and their leases, and
//! the fenced recording of deliveries with their outbox events.
//!
//! How many partitions there are, and which one holds a user's rows, is the adapter's
//! business: scenarios find the partition of a user's rows by looking, and rely only on the
//! port's promise that one user's rows share one partition.

use crate::fixtures::*;
use crate::{StoreFixture, SystemOfRecord};
use jiff::{SignedDuration, Timestamp};
use stampede_core::claim_ports::OutboxEvent;
use stampede_core::reminder_ports::{
    DeliveryError, PartitionLease, REMINDER_DUE, ReminderRow, RowUpdate,
};
use stampede_domain::reminder::{Channel, Reminder, ReminderSet};
use std::collections::{HashMap, HashSet};

/// Runs every `ReminderStore` scenario; see the crate docs.
#[macro_export]
macro_rules! reminder_store_suite {
    ($run:path) => {
        mod reminder_store {
            #[allow(unused_imports)]
            use super::*;
            $crate::__scenarios!($run; reminders;
                set_is_idempotent_and_lowers_next_due,
                delete_then_set,
                concurrent_sets_and_deletes_never_lose_a_bit,
                due_reminders_are_ordered_and_limited,
                leases_go_to_one_owner_and_hand_over,
                a_stale_lease_records_nothing,
                recording_applies_updates_and_writes_events,
                a_partial_batch_leaves_the_rest_due,
                partitions_cover_every_row_once,
                purge_deletes_only_rows_whose_sale_started_before,
            );
        }
    };
}

pub fn rem(channel: Channel, minutes: i64) -> Reminder {
    Reminder::new(channel, minutes).unwrap()
}

pub fn set_of(rs: &[Reminder]) -> ReminderSet {
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
pub fn start() -> Timestamp {
    now() + hours(2)
}

/// `start()` moved back by `m` minutes: when an `m`-minute reminder is due.
fn before(m: i64) -> Timestamp {
    start() - mins(m)
}

pub async fn set(store: &dyn SystemOfRecord, user: i64, template: i64, r: Reminder) {
    store
        .set_reminder(uid(user), tid(template), start(), r)
        .await
        .unwrap();
}

pub async fn row(store: &dyn SystemOfRecord, user: i64, template: i64) -> Option<ReminderRow> {
    store
        .user_reminders(uid(user))
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.template_id == tid(template))
}

/// The user's rows by template id (the port promises no order).
async fn rows_of(store: &dyn SystemOfRecord, user: i64) -> Vec<ReminderRow> {
    let mut rows = store.user_reminders(uid(user)).await.unwrap();
    rows.sort_by_key(|r| r.template_id);
    rows
}

/// A lease of partition `p` for `owner` from `at`, for a minute.
pub async fn lease(
    store: &dyn SystemOfRecord,
    p: u32,
    owner: &str,
    at: Timestamp,
) -> Option<PartitionLease> {
    store
        .lease_partition(p, owner, at, at + mins(1))
        .await
        .unwrap()
}

/// The `reminder.due` event of reminder `n` of a row.
pub fn event(user: i64, template: i64, n: u32) -> OutboxEvent {
    OutboxEvent {
        id: format!("reminder:{user}:{template}:{n}"),
        kind: REMINDER_DUE.to_owned(),
        aggregate_id: user,
        payload: format!("{{\"user_id\":\"{user}\"}}"),
        created_at_ms: now_ms(),
        traceparent: None,
    }
}

/// The partition holding `user`'s rows: the one listing a row of theirs due by `by`.
pub async fn partition_of(store: &dyn SystemOfRecord, user: i64, by: Timestamp) -> u32 {
    for p in 0..store.partitions() {
        let due = store.due_reminders(p, by, 100_000).await.unwrap();
        if due.iter().any(|r| r.user_id == uid(user)) {
            return p;
        }
    }
    panic!("no partition holds a row of user {user} due by {by}");
}

/// Sets `rs` on template 1 of users 1..=16, then on templates 2, 3, … of the users whose rows
/// share user 1's partition, until that partition holds `n` rows. Returns the partition and
/// the keys (user, template) of its rows, in the order set.
async fn fill_partition(
    store: &dyn SystemOfRecord,
    n: usize,
    rs: &[Reminder],
) -> (u32, Vec<(i64, i64)>) {
    let set_all = async |user, template| {
        for r in rs {
            set(store, user, template, *r).await;
        }
    };
    for u in 1..=16 {
        set_all(u, 1).await;
    }
    let p = partition_of(store, 1, start()).await;
    let mut mates: Vec<i64> = store
        .due_reminders(p, start(), 100_000)
        .await
        .unwrap()
        .iter()
        .map(|r| r.user_id.get())
        .collect();
    mates.sort_unstable();
    let mut keys: Vec<(i64, i64)> = mates.iter().map(|u| (*u, 1)).collect();
    for template in 2.. {
        for u in &mates {
            if keys.len() == n {
                return (p, keys);
            }
            set_all(*u, template).await;
            keys.push((*u, template));
        }
    }
    unreachable!()
}

pub async fn set_is_idempotent_and_lowers_next_due(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
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
            next_due: Some(before(15)),
        }
    );
    set(store, 7, 1, email15).await;
    assert_eq!(
        store.user_reminders(uid(7)).await.unwrap(),
        std::slice::from_ref(&first),
        "setting again changes nothing"
    );
    // Other users see nothing of it.
    assert!(store.user_reminders(uid(8)).await.unwrap().is_empty());

    // A longer lead time lowers next_due; a shorter one leaves it.
    let app60 = rem(Channel::App, 60);
    set(store, 7, 1, app60).await;
    let r = row(store, 7, 1).await.unwrap();
    assert_eq!(r.bits, set_of(&[email15, app60]));
    assert_eq!(r.next_due, Some(before(60)));
    set(store, 7, 1, rem(Channel::Webhook, 5)).await;
    let r = row(store, 7, 1).await.unwrap();
    assert_eq!(r.bits.len(), 3);
    assert_eq!(r.next_due, Some(before(60)));

    // Other users and templates are other rows.
    set(store, 7, 2, email15).await;
    set(store, 8, 1, email15).await;
    let mine = rows_of(store, 7).await;
    assert_eq!(
        mine.iter().map(|r| r.template_id).collect::<Vec<_>>(),
        [tid(1), tid(2)]
    );
    assert_eq!(mine[0], r);
    assert_eq!(mine[1].bits, set_of(&[email15]));
    assert_eq!(rows_of(store, 8).await[0].bits, set_of(&[email15]));
    assert!(store.user_reminders(uid(9)).await.unwrap().is_empty());
}

pub async fn delete_then_set(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let email15 = rem(Channel::Email, 15);
    let app30 = rem(Channel::App, 30);
    let delete = async |user, template, r| {
        store
            .delete_reminder(uid(user), tid(template), r)
            .await
            .unwrap()
    };
    assert!(!delete(5, 1, email15).await, "no row");
    set(store, 5, 1, email15).await;
    assert!(!delete(5, 1, app30).await, "a bit not set");
    assert!(!delete(5, 2, email15).await, "another template's row");
    assert!(!delete(6, 1, email15).await, "another user's row");
    set(store, 5, 1, app30).await;
    assert!(delete(5, 1, app30).await);
    assert!(!delete(5, 1, app30).await);
    let r = row(store, 5, 1).await.unwrap();
    assert_eq!(r.bits, set_of(&[email15]));
    // Deleting leaves the (now early) hint.
    assert_eq!(r.next_due, Some(before(30)));

    assert!(delete(5, 1, email15).await);
    assert!(
        store.user_reminders(uid(5)).await.unwrap().is_empty(),
        "an empty row is not listed"
    );
    set(store, 5, 1, email15).await;
    let r = row(store, 5, 1).await.unwrap();
    assert_eq!(r.bits, set_of(&[email15]));
    assert_eq!(r.next_due, Some(before(30)));

    // Setting a delivered reminder again clears its `sent` bit.
    let p = partition_of(store, 5, start()).await;
    let l = lease(store, p, "node-a", now()).await.unwrap();
    let delivered = [RowUpdate {
        user_id: uid(5),
        template_id: tid(1),
        read_bits: set_of(&[email15]),
        done: set_of(&[email15]),
        next_due: None,
    }];
    let events = [event(5, 1, 15)];
    store
        .record_deliveries(&l, at(1), &delivered, &events, now())
        .await
        .unwrap();
    let r = row(store, 5, 1).await.unwrap();
    assert_eq!((r.sent, r.next_due), (set_of(&[email15]), None));
    assert!(r.pending().is_empty());
    set(store, 5, 1, email15).await;
    let r = row(store, 5, 1).await.unwrap();
    assert_eq!(r.sent, ReminderSet::EMPTY);
    assert_eq!(r.pending(), set_of(&[email15]));
    assert_eq!(r.next_due, Some(before(15)));

    // Delivered again, under the same event id (receivers deduplicate): recorded, once.
    store
        .record_deliveries(&l, at(1), &delivered, &events, now())
        .await
        .unwrap();
    let r = row(store, 5, 1).await.unwrap();
    assert_eq!((r.sent, r.next_due), (set_of(&[email15]), None));
    let out = store.outbox_events(REMINDER_DUE, 100).await.unwrap();
    assert_eq!(out, events);
}

/// Races `set` (or `delete`, which must find its bit, for `doomed` ones) of each of `rs` on
/// one row.
async fn race_on_row(f: &dyn StoreFixture, user: i64, rs: &[Reminder], doomed: &[Reminder]) {
    race(rs.len(), |i| {
        let s = f.store();
        let (r, delete) = (rs[i], doomed.contains(&rs[i]));
        async move {
            if delete {
                assert!(s.delete_reminder(uid(user), tid(1), r).await.unwrap());
            } else {
                s.set_reminder(uid(user), tid(1), start(), r).await.unwrap();
            }
        }
    })
    .await;
}

pub async fn concurrent_sets_and_deletes_never_lose_a_bit(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let all = all_reminders();
    // Each reminder set three times, by tasks racing on one row that already holds one.
    set(store, 42, 1, rem(Channel::App, 5)).await;
    let thrice: Vec<Reminder> = (0..3).flat_map(|_| all.clone()).collect();
    race_on_row(f, 42, &thrice, &[]).await;
    let r = row(store, 42, 1).await.unwrap();
    assert_eq!(r.bits, set_of(&all));
    assert_eq!(r.bits.len(), 36);
    assert_eq!(r.next_due, Some(before(60)));

    // Concurrent deletes of half and sets of the rest: the deleted half is gone, nothing else.
    let (gone, kept): (Vec<Reminder>, Vec<Reminder>) =
        all.iter().partition(|r| r.minutes_before % 10 == 0);
    race_on_row(f, 42, &all, &gone).await;
    assert_eq!(row(store, 42, 1).await.unwrap().bits, set_of(&kept));

    // From a row holding only the ones deleted: deletes racing the first sets of the rest.
    let doomed: Vec<Reminder> = all.iter().copied().step_by(3).collect();
    for r in &doomed {
        set(store, 43, 1, *r).await;
    }
    race_on_row(f, 43, &all, &doomed).await;
    let rest: Vec<Reminder> = all
        .iter()
        .filter(|r| !doomed.contains(r))
        .copied()
        .collect();
    assert_eq!(row(store, 43, 1).await.unwrap().bits, set_of(&rest));
}

pub async fn due_reminders_are_ordered_and_limited(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    // Template i's reminder has a lead of 65 - 5i minutes: lower templates are due earlier.
    for i in 1..=12 {
        set(store, 3, i, rem(Channel::App, 65 - 5 * i)).await;
    }
    // Due with template 12's.
    set(store, 3, 13, rem(Channel::Webhook, 5)).await;
    let p = partition_of(store, 3, start()).await;
    let due = async |by, limit| store.due_reminders(p, by, limit).await.unwrap();

    assert!(!store.any_due(p, before(61)).await.unwrap());
    assert!(
        !store
            .any_due(p, before(60) - SignedDuration::from_millis(1))
            .await
            .unwrap()
    );
    assert!(due(before(61), 100).await.is_empty());
    assert!(store.any_due(p, before(60)).await.unwrap());

    let all = due(start(), 100).await;
    assert_eq!(all.len(), 13);
    let templates: Vec<i64> = all.iter().map(|r| r.template_id.get()).collect();
    assert_eq!(templates[..11], (1..=11).collect::<Vec<_>>());
    // The two due together, in either order: the port leaves ties to the adapter.
    let mut tied = templates[11..].to_vec();
    tied.sort_unstable();
    assert_eq!(tied, [12, 13]);
    assert!(all.iter().all(|r| r.user_id == uid(3)));
    assert_eq!(all[0].next_due, Some(before(60)));
    assert_eq!(all[11].next_due, Some(before(5)));
    assert_eq!(all[12].next_due, Some(before(5)));
    assert_eq!(all, rows_by_due(rows_of(store, 3).await, &templates));

    // Up to 30 minutes before: the 7 due earliest, in order; a limit keeps the first ones.
    assert_eq!(due(before(30), 100).await, all[..7].to_vec());
    assert_eq!(due(before(30), 3).await, all[..3].to_vec());
    assert!(due(start(), 0).await.is_empty());

    // Other partitions see none of them; a partition past the last is an error.
    for other in (0..store.partitions()).filter(|q| *q != p) {
        assert!(!store.any_due(other, start()).await.unwrap());
        assert!(
            store
                .due_reminders(other, start(), 100)
                .await
                .unwrap()
                .is_empty()
        );
    }
    assert!(store.any_due(store.partitions(), start()).await.is_err());
    assert!(
        store
            .due_reminders(store.partitions(), start(), 100)
            .await
            .is_err()
    );
}

/// `rows` in the order of `templates`.
fn rows_by_due(rows: Vec<ReminderRow>, templates: &[i64]) -> Vec<ReminderRow> {
    let mut by_template: HashMap<i64, ReminderRow> =
        rows.into_iter().map(|r| (r.template_id.get(), r)).collect();
    templates
        .iter()
        .map(|t| by_template.remove(t).unwrap())
        .collect()
}

pub async fn leases_go_to_one_owner_and_hand_over(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let p = 0;
    // Many contenders at once: one owner wins.
    let granted: Vec<PartitionLease> = race(16, |i| {
        let s = f.store();
        async move {
            let owner = format!("node-{}", i % 4);
            lease(&*s, p, &owner, now()).await
        }
    })
    .await
    .into_iter()
    .flatten()
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
    let renewed = lease(store, p, &winner, at(1) - SignedDuration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(renewed, held);
    assert_eq!(lease(store, p, other, at(1)).await, None);
    // The lease now runs to now + 2 min - 1 ms; expired at its end.
    let until = at(2) - SignedDuration::from_millis(1);
    assert_eq!(
        lease(store, p, other, until - SignedDuration::from_millis(1)).await,
        None
    );
    let taken = lease(store, p, other, until).await.unwrap();
    assert_eq!(taken.owner, other);
    assert_ne!(taken.token, held.token);
    assert!(taken.token > held.token, "{taken:?} after {held:?}");

    // The old holder can neither renew nor release it.
    assert_eq!(lease(store, p, &winner, until).await, None);
    store.release_partition(&held).await.unwrap();
    assert_eq!(lease(store, p, &winner, until).await, None);
    // Its holder releases it: free at once, for a new token.
    store.release_partition(&taken).await.unwrap();
    let back = lease(store, p, &winner, until).await.unwrap();
    assert!(back.token > taken.token);

    // Partitions are leased independently; a partition past the last is an error.
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
}

pub async fn a_stale_lease_records_nothing(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let r = rem(Channel::App, 30);
    set(store, 1, 1, r).await;
    let p = partition_of(store, 1, start()).await;
    let before = row(store, 1, 1).await.unwrap();

    let a = lease(store, p, "node-a", now()).await.unwrap();
    let b = lease(store, p, "node-b", at(1)).await.unwrap();
    let update = RowUpdate {
        user_id: uid(1),
        template_id: tid(1),
        read_bits: before.bits,
        done: before.bits,
        next_due: None,
    };
    let stale = store
        .record_deliveries(
            &a,
            at(5),
            std::slice::from_ref(&update),
            &[event(1, 1, 30)],
            at(1),
        )
        .await;
    assert!(matches!(stale, Err(DeliveryError::LeaseLost)), "{stale:?}");
    // A forged lease with the holder's name but an old token is refused too.
    let forged = PartitionLease {
        token: a.token,
        ..b.clone()
    };
    let stale = store
        .record_deliveries(&forged, at(5), &[update], &[], at(1))
        .await;
    assert!(matches!(stale, Err(DeliveryError::LeaseLost)), "{stale:?}");

    assert_eq!(row(store, 1, 1).await.unwrap(), before);
    assert_eq!(before.sent, ReminderSet::EMPTY);
    assert!(
        store
            .outbox_events(REMINDER_DUE, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // The lease was not extended: it expires when B took it to.
    assert_eq!(
        lease(store, p, "node-c", at(2)).await.unwrap().owner,
        "node-c"
    );
}

pub async fn recording_applies_updates_and_writes_events(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let app30 = rem(Channel::App, 30);
    let email10 = rem(Channel::Email, 10);
    // More rows than a statement of either adapter takes, so the batch spans statements.
    let (p, keys) = fill_partition(store, 300, &[app30, email10]).await;
    let l = lease(store, p, "node-a", now()).await.unwrap();
    let read_at = before(30);
    let read = store.due_reminders(p, read_at, 1_000).await.unwrap();
    assert_eq!(read.len(), 300);
    let read_keys: HashSet<(i64, i64)> = read
        .iter()
        .map(|r| (r.user_id.get(), r.template_id.get()))
        .collect();
    assert_eq!(read_keys, keys.iter().copied().collect());

    // Meanwhile one user sets another reminder: its row's bits changed since the read.
    let changed = keys[0];
    set(store, changed.0, changed.1, rem(Channel::Webhook, 20)).await;

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
            next_due: (i % 2 == 0).then(|| before(10)),
        })
        .collect();
    let events: Vec<OutboxEvent> = read
        .iter()
        .map(|r| event(r.user_id.get(), r.template_id.get(), 30))
        .collect();
    store
        .record_deliveries(&l, read_at + mins(1), &updates, &events, read_at)
        .await
        .unwrap();

    let mut after: HashMap<(i64, i64), ReminderRow> = HashMap::new();
    let users: HashSet<i64> = keys.iter().map(|k| k.0).collect();
    for u in users {
        for r in store.user_reminders(uid(u)).await.unwrap() {
            after.insert((u, r.template_id.get()), r);
        }
    }
    for (i, r) in read.iter().enumerate() {
        let key = (r.user_id.get(), r.template_id.get());
        let row = &after[&key];
        assert_eq!(row.sent, set_of(&[app30]), "{key:?}");
        let expected = if key == changed {
            Some(read_at)
        } else if i % 2 == 0 {
            Some(before(10))
        } else {
            None
        };
        assert_eq!(row.next_due, expected, "{key:?}");
    }
    let changed_row = &after[&changed];
    assert_eq!(changed_row.bits.len(), 3);
    assert_eq!(changed_row.pending().len(), 2);
    // The changed row is looked at again at once, and only it.
    let again = store.due_reminders(p, read_at, 10).await.unwrap();
    assert_eq!(again, std::slice::from_ref(changed_row));

    let everywhere = store.outbox_events(REMINDER_DUE, 10_000).await.unwrap();
    assert_eq!(everywhere.len(), 300);
    let ids: HashSet<String> = everywhere.into_iter().map(|e| e.id).collect();
    assert_eq!(ids, events.iter().map(|e| e.id.clone()).collect());

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
}

pub async fn a_partial_batch_leaves_the_rest_due(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let r60 = rem(Channel::Webhook, 60);
    let r30 = rem(Channel::App, 30);
    let (p, _) = fill_partition(store, 300, &[r60]).await;
    let due_at = r60.remind_at(start());
    assert!(
        !store
            .any_due(p, due_at - SignedDuration::from_secs(1))
            .await
            .unwrap()
    );
    assert!(store.any_due(p, due_at).await.unwrap());
    let due = store.due_reminders(p, due_at, 200).await.unwrap();
    assert_eq!(due.len(), 200);
    // A user adds a reminder after the scheduler read their row.
    let (changed, done) = (&due[0], &due[1]);
    s.set_reminder(changed.user_id, changed.template_id, start(), r30)
        .await
        .unwrap();
    let lease = store
        .lease_partition(p, "n", due_at, due_at + SignedDuration::from_secs(30))
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
    let events = [event(changed.user_id.get(), changed.template_id.get(), 60)];
    store
        .record_deliveries(
            &lease,
            due_at + SignedDuration::from_secs(30),
            &updates,
            &events,
            due_at,
        )
        .await
        .unwrap();

    // 100 rows left due, plus the changed one, whose hint became `now` as its bits changed.
    let left = store.due_reminders(p, due_at, 1_000).await.unwrap();
    assert_eq!(left.len(), 101);
    let one = left
        .iter()
        .find(|r| (r.user_id, r.template_id) == (changed.user_id, changed.template_id))
        .unwrap();
    assert_eq!(one.sent, set_of(&[r60]));
    assert_eq!(one.pending(), set_of(&[r30]));
    assert_eq!(one.next_due, Some(due_at));
    let unread: HashSet<_> = left.iter().map(|r| (r.user_id, r.template_id)).collect();
    assert!(
        due.iter()
            .skip(1)
            .all(|r| !unread.contains(&(r.user_id, r.template_id))),
        "a recorded row is not due again"
    );
    let finished = row(store, done.user_id.get(), done.template_id.get())
        .await
        .unwrap();
    assert_eq!(finished.next_due, None);
    assert_eq!(finished.sent, finished.bits);
    let out = store.outbox_events(REMINDER_DUE, 10).await.unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].id, events[0].id);
}

pub async fn partitions_cover_every_row_once(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    assert!(store.partitions() >= 1);
    let mut expected = HashSet::new();
    for u in 1..=120 {
        // Every user one template, the first 30 a second one.
        let mut templates = vec![1 + u % 3];
        if u <= 30 {
            templates.push(10);
        }
        for template in templates {
            set(
                store,
                u,
                template,
                rem(Channel::ALL[(u % 3) as usize], 5 * (1 + u % 12)),
            )
            .await;
            expected.insert((u, template));
        }
    }
    let mut seen = HashSet::new();
    let mut partition_of_user: HashMap<i64, u32> = HashMap::new();
    for p in 0..store.partitions() {
        for r in store.due_reminders(p, start(), 1_000).await.unwrap() {
            let key = (r.user_id.get(), r.template_id.get());
            assert!(seen.insert(key), "{r:?} twice");
            // A user's rows share one partition.
            assert_eq!(*partition_of_user.entry(key.0).or_insert(p), p, "{r:?}");
        }
    }
    assert_eq!(seen, expected);
}

pub async fn purge_deletes_only_rows_whose_sale_started_before(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let later = start() + hours(48);
    let cutoff = start() + hours(1);
    let purge = async |p, limit| store.purge_reminders(p, cutoff, limit).await.unwrap();

    // One user's 30 rows of a started sale, 30 of a later one: deleted a batch at a time.
    for template in 1..=30 {
        set(store, 100, template, rem(Channel::App, 5)).await;
        store
            .set_reminder(uid(100), tid(100 + template), later, rem(Channel::App, 5))
            .await
            .unwrap();
    }
    let p = partition_of(store, 100, later).await;
    assert_eq!(purge(p, 20).await, 20);
    assert_eq!(purge(p, 20).await, 10);
    assert_eq!(purge(p, 20).await, 0);
    let left: Vec<i64> = rows_of(store, 100)
        .await
        .iter()
        .map(|r| r.template_id.get())
        .collect();
    assert_eq!(left, (101..=130).collect::<Vec<_>>());

    // Many users over every partition.
    for u in 1..=40 {
        set(store, u, 1, rem(Channel::App, 5)).await;
        store
            .set_reminder(uid(u), tid(2), later, rem(Channel::Email, 10))
            .await
            .unwrap();
    }
    let mut purged = 0;
    for p in 0..store.partitions() {
        // A small limit: the job repeats until a step deletes less than a full batch.
        loop {
            let n = purge(p, 3).await;
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
    assert_eq!(rows_of(store, 100).await.len(), 30);
    assert!(
        store
            .purge_reminders(store.partitions(), cutoff, 3)
            .await
            .is_err()
    );
}
