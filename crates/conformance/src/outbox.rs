//! `OutboxStore`: the outbox as a relay drains it — per partition in write order, marked once
//! published, purged after a retention — never losing or reordering an unpublished event.

use crate::fixtures::*;
use crate::{StoreFixture, SystemOfRecord};
use stampede_core::claim_ports::OutboxEvent;
use stampede_core::claim_ports::{ClaimRecord, OutboxBacklog};
use stampede_core::events::{COUPON_CLAIMED, TEMPLATE_CREATED, TEMPLATE_TERMINATED};
use stampede_core::ports::ChangeOutcome;
use stampede_domain::template::{TemplateChange, TemplateStatus};
use std::collections::BTreeSet;

fn ms(n: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(1_800_000_000_000 + n).unwrap()
}

/// Runs every `OutboxStore` scenario; see the crate docs.
#[macro_export]
macro_rules! outbox_store_suite {
    ($run:path) => {
        mod outbox_store {
            #[allow(unused_imports)]
            use super::*;
            $crate::__scenarios!($run; outbox;
                every_event_is_read_once_per_partition_in_write_order,
                marking_is_idempotent_and_drains_the_backlog,
                purging_takes_only_published_events_older_than_the_cut,
                an_unknown_partition_is_an_error,
                one_relay_at_a_time_holds_a_partition,
                template_creation_and_termination_are_recorded_once,
            );
        }
    };
}

/// Marks every event written so far as published, at a time after every cut the scenarios
/// use, so the scenarios below see only the claims they make (not `template.created`).
pub(crate) async fn set_aside_earlier_events(s: &dyn SystemOfRecord) {
    for p in 0..s.outbox_partitions() {
        let seqs = unpublished_seqs(s, p).await;
        s.mark_published(p, &seqs, 1_000_000).await.unwrap();
    }
}

/// The write positions of partition `p`'s unpublished events, in order.
async fn unpublished_seqs(s: &dyn SystemOfRecord, p: u32) -> Vec<i64> {
    s.unpublished_events(p, 1_000)
        .await
        .unwrap()
        .iter()
        .map(|(seq, _)| *seq)
        .collect()
}

/// 60 claims by 60 users (spread over every shard), committed in three batches.
async fn sixty_claims(f: &dyn StoreFixture) -> Vec<ClaimRecord> {
    let s = f.store();
    let t = stocked(&*s, 71, 7, 1_000).await;
    set_aside_earlier_events(&*s).await;
    let claims: Vec<ClaimRecord> = (0..60)
        .map(|i| claim(&t, 7_100 + i, 700 + i, 1, i))
        .collect();
    for batch in claims.chunks(20) {
        s.commit_claims(batch).await.unwrap();
    }
    claims
}

pub async fn every_event_is_read_once_per_partition_in_write_order(f: &dyn StoreFixture) {
    let claims = sixty_claims(f).await;
    let s = f.store();
    let mut seen = BTreeSet::new();
    let backlogs = s.outbox_partition_backlogs().await.unwrap();
    assert_eq!(backlogs.len(), s.outbox_partitions() as usize);
    for p in 0..s.outbox_partitions() {
        let events = s.unpublished_events(p, 1_000).await.unwrap();
        // The partition's backlog gauge counts exactly what the relay will read.
        let b = backlogs[p as usize];
        assert_eq!(b.events, events.len() as u64, "partition {p}");
        assert_eq!(
            b.oldest_created_ms,
            events.first().map(|(_, e)| e.created_at_ms),
            "partition {p}"
        );
        let seqs: Vec<i64> = events.iter().map(|(seq, _)| *seq).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "partition {p}: {seqs:?}"
        );
        // Each user's claims are in their claim order (one user's events share a partition).
        let times: Vec<i64> = events.iter().map(|(_, e)| e.created_at_ms).collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "partition {p}: {times:?}"
        );
        for (_, e) in events {
            assert_eq!(e.kind, COUPON_CLAIMED);
            assert!(seen.insert(e.id.clone()), "{} read twice", e.id);
        }
        // A limit is a prefix of the partition's order.
        let first = s.unpublished_events(p, 1).await.unwrap();
        assert_eq!(first.first().map(|x| x.0), seqs.first().copied());
    }
    let expected: BTreeSet<String> = claims
        .iter()
        .map(|c| format!("{COUPON_CLAIMED}:{}", c.coupon.id))
        .collect();
    assert_eq!(seen, expected, "every event, on exactly one partition");
}

pub async fn marking_is_idempotent_and_drains_the_backlog(f: &dyn StoreFixture) {
    sixty_claims(f).await;
    let s = f.store();
    assert_eq!(s.outbox_backlog().await.unwrap().events, 60);
    let mut marked = 0;
    for p in 0..s.outbox_partitions() {
        let seqs = unpublished_seqs(&*s, p).await;
        // The first half, then all of it: the first half is not marked twice.
        let half = &seqs[..seqs.len() / 2];
        marked += s.mark_published(p, half, 1_000).await.unwrap();
        let rest = s.unpublished_events(p, 1_000).await.unwrap();
        assert_eq!(rest.len(), seqs.len() - half.len());
        assert_eq!(rest.first().map(|x| x.0), seqs.get(half.len()).copied());
        marked += s.mark_published(p, &seqs, 2_000).await.unwrap();
        assert!(s.unpublished_events(p, 1_000).await.unwrap().is_empty());
        assert_eq!(s.mark_published(p, &seqs, 3_000).await.unwrap(), 0);
        assert_eq!(s.mark_published(p, &[], 3_000).await.unwrap(), 0);
    }
    assert_eq!(marked, 60);
    assert_eq!(s.outbox_backlog().await.unwrap(), OutboxBacklog::default());
    // Published events stay queryable until they are purged.
    assert_eq!(
        s.outbox_events(COUPON_CLAIMED, 1_000).await.unwrap().len(),
        60
    );
}

pub async fn purging_takes_only_published_events_older_than_the_cut(f: &dyn StoreFixture) {
    sixty_claims(f).await;
    let s = f.store();
    let mut published = 0;
    for p in 0..s.outbox_partitions() {
        let seqs = unpublished_seqs(&*s, p).await;
        // Two thirds published: the first third long ago, the second third just now.
        let third = seqs.len() / 3;
        s.mark_published(p, &seqs[..third], 1_000).await.unwrap();
        s.mark_published(p, &seqs[third..2 * third], 9_000)
            .await
            .unwrap();
        published += 2 * third;
        // The cut is between them; a limit of 1 takes one at a time.
        let mut purged = 0;
        loop {
            let n = s.purge_published(p, 5_000, 1).await.unwrap();
            if n == 0 {
                break;
            }
            assert_eq!(n, 1);
            purged += 1;
        }
        assert_eq!(purged, third, "partition {p}");
        let left = s.unpublished_events(p, 1_000).await.unwrap();
        assert_eq!(
            left.len(),
            seqs.len() - 2 * third,
            "unpublished events stay"
        );
    }
    let remaining = s.outbox_events(COUPON_CLAIMED, 1_000).await.unwrap().len();
    assert!(published > 0);
    assert_eq!(
        remaining,
        60 - published / 2,
        "only events published before the cut are gone"
    );
}

pub async fn an_unknown_partition_is_an_error(f: &dyn StoreFixture) {
    let s = f.store();
    let n = s.outbox_partitions();
    assert!(n >= 1);
    assert!(s.unpublished_events(n, 10).await.is_err());
    assert!(s.mark_published(n, &[1], 1).await.is_err());
    assert!(s.purge_published(n, 1, 1).await.is_err());
}

pub async fn one_relay_at_a_time_holds_a_partition(f: &dyn StoreFixture) {
    let s = f.store();
    for p in 0..s.outbox_partitions() {
        let a = s
            .lease_outbox_partition(p, "node-a", ms(0), ms(1_000))
            .await
            .unwrap()
            .expect("a free partition is granted");
        assert_eq!((a.partition, a.owner.as_str()), (p, "node-a"));
        assert!(
            s.lease_outbox_partition(p, "node-b", ms(10), ms(1_010))
                .await
                .unwrap()
                .is_none(),
            "held until it expires"
        );
        let renewed = s
            .lease_outbox_partition(p, "node-a", ms(500), ms(1_500))
            .await
            .unwrap()
            .expect("its holder renews it");
        assert_eq!(renewed.token, a.token, "renewing keeps the token");
        // Expired: another node takes it, with a new token; the old holder cannot renew.
        let b = s
            .lease_outbox_partition(p, "node-b", ms(1_500), ms(2_500))
            .await
            .unwrap()
            .expect("an expired lease is taken over");
        assert!(b.token > a.token);
        assert!(
            s.lease_outbox_partition(p, "node-a", ms(1_600), ms(2_600))
                .await
                .unwrap()
                .is_none()
        );
        // A stale release does nothing; the holder's frees it at once.
        s.release_outbox_partition(&a).await.unwrap();
        assert!(
            s.lease_outbox_partition(p, "node-a", ms(1_700), ms(2_700))
                .await
                .unwrap()
                .is_none()
        );
        s.release_outbox_partition(&b).await.unwrap();
        let again = s
            .lease_outbox_partition(p, "node-a", ms(1_800), ms(2_800))
            .await
            .unwrap()
            .expect("released: free again");
        assert!(again.token > b.token);
    }
    // Partitions are leased independently, and owners are checked.
    if s.outbox_partitions() > 1 {
        assert!(
            s.lease_outbox_partition(1, "node-z", ms(1_900), ms(2_900))
                .await
                .unwrap()
                .is_none(),
            "partition 1 is node-a's"
        );
    }
    assert!(s.lease_outbox_partition(0, "", ms(0), ms(1)).await.is_err());
    assert!(
        s.lease_outbox_partition(0, &"x".repeat(65), ms(0), ms(1))
            .await
            .is_err()
    );
}

/// Every unpublished event, over all partitions.
async fn unpublished(s: &dyn SystemOfRecord) -> Vec<OutboxEvent> {
    let mut all = Vec::new();
    for p in 0..s.outbox_partitions() {
        all.extend(
            s.unpublished_events(p, 1_000)
                .await
                .unwrap()
                .into_iter()
                .map(|(_, e)| e),
        );
    }
    all
}

pub async fn template_creation_and_termination_are_recorded_once(f: &dyn StoreFixture) {
    let s = f.store();
    let t = stocked(&*s, 72, 7, 100).await;
    let events = unpublished(&*s).await;
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        [format!("{TEMPLATE_CREATED}:{}", t.id)],
        "written with the template"
    );
    let created = &events[0];
    assert_eq!(
        (created.kind.as_str(), created.aggregate_id),
        (TEMPLATE_CREATED, t.id.get())
    );
    let payload: serde_json::Value = serde_json::from_str(&created.payload).unwrap();
    assert_eq!(payload["id"], t.id.to_string());
    assert_eq!(payload["status"], "active");
    assert_eq!(payload["stock_total"], 100);
    set_aside_earlier_events(&*s).await;

    // Stock changes record nothing; terminating records one event, and terminating again
    // (a retry) records none.
    let now = jiff::Timestamp::now();
    let ChangeOutcome::Changed(_) = s
        .change_template(t.id, TemplateChange::AddStock(5), "merchant:7", now)
        .await
        .unwrap()
    else {
        panic!("stock added");
    };
    assert!(unpublished(&*s).await.is_empty());
    let ChangeOutcome::Changed(done) = s
        .change_template(t.id, TemplateChange::Terminate, "merchant:7", now)
        .await
        .unwrap()
    else {
        panic!("terminated");
    };
    assert_eq!(done.status, TemplateStatus::Terminated);
    let ChangeOutcome::Unchanged(_) = s
        .change_template(t.id, TemplateChange::Terminate, "merchant:7", now)
        .await
        .unwrap()
    else {
        panic!("terminating twice changes nothing");
    };
    let events = unpublished(&*s).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].id, format!("{TEMPLATE_TERMINATED}:{}", t.id));
    let payload: serde_json::Value = serde_json::from_str(&events[0].payload).unwrap();
    assert_eq!(payload["status"], "terminated");
    assert_eq!(payload["stock_total"], 105);
}
