//! The outbox relay: publishes the outbox's events to the broker. Each node runs one; a
//! partition is published by the node holding its lease (renewed every step, taken over by
//! another node once a dead holder's lease expires). Per partition, unpublished
//! events go out in write order, each acknowledged before the next is sent, and are marked
//! published after. So a relay never reorders a partition, and relays racing on one partition
//! (or one retrying after a lost ack) store nothing twice: the broker drops a repeated event
//! id within its duplicate window, and an event is only ever first stored after every event
//! before it. While the broker is down a pass stops at the first failure and the next waits
//! out a backoff (doubling up to a cap): the outbox grows, nothing is lost, and claims, which
//! only write the outbox, do not slow down. Published events are purged after a retention.

use crate::runner::Job;
use async_trait::async_trait;
use stampede_core::AppError;
use stampede_core::clock::Clock;
use stampede_core::event_ports::{EventPublisher, OutboxStore, PublishError};
use stampede_domain::time::to_ms;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Events published (acknowledged by the broker), and publishes that failed by kind.
pub const OUTBOX_PUBLISHED: &str = "stampede_outbox_published_total";
pub const OUTBOX_PUBLISH_ERRORS: &str = "stampede_outbox_publish_errors_total";
/// Published events purged after their retention.
pub const OUTBOX_PURGED: &str = "stampede_outbox_purged_total";

/// Zero-registers the relay's counters, so a dashboard shows 0 before the first event.
pub fn register_metrics() {
    metrics::counter!(OUTBOX_PUBLISHED).absolute(0);
    metrics::counter!(OUTBOX_PURGED).absolute(0);
    for kind in ["unavailable", "rejected", "store"] {
        metrics::counter!(OUTBOX_PUBLISH_ERRORS, "kind" => kind).absolute(0);
    }
}

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Events read (and published) per partition per step.
    pub batch: u32,
    /// Pause between steps that found nothing to publish.
    pub interval: Duration,
    /// How long a published event stays in the outbox before it is purged.
    pub retention: Duration,
    /// First pause after a failed publish; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// This process's lease owner name (unique per process, 1–64 characters).
    pub owner: String,
    /// How long a partition lease lasts without a step renewing it: a dead node's partitions
    /// wait this long for another node.
    pub lease: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch: 256,
            interval: Duration::from_millis(200),
            retention: Duration::from_secs(24 * 3600),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            owner: "relay".into(),
            lease: Duration::from_secs(30),
        }
    }
}

pub struct OutboxRelay {
    outbox: Arc<dyn OutboxStore>,
    publisher: Arc<dyn EventPublisher>,
    clock: Arc<dyn Clock>,
    config: RelayConfig,
    /// The current backoff and the epoch ms before which no step publishes.
    backoff: Mutex<(Duration, i64)>,
    /// Epoch ms of the next step that visits every partition to purge (others skip the
    /// partitions with nothing to publish).
    next_purge: std::sync::atomic::AtomicI64,
}

/// How often a relay visits idle partitions to purge what their retention let go.
const PURGE_EVERY: Duration = Duration::from_secs(60);

impl OutboxRelay {
    pub fn new(
        outbox: Arc<dyn OutboxStore>,
        publisher: Arc<dyn EventPublisher>,
        clock: Arc<dyn Clock>,
        config: RelayConfig,
    ) -> Self {
        Self {
            outbox,
            publisher,
            clock,
            config,
            backoff: Mutex::new((Duration::ZERO, 0)),
            next_purge: std::sync::atomic::AtomicI64::new(0),
        }
    }

    fn waiting_until(&self) -> i64 {
        self.backoff.lock().map(|b| b.1).unwrap_or(0)
    }

    fn failed(&self, now_ms: i64) {
        if let Ok(mut b) = self.backoff.lock() {
            let next = if b.0.is_zero() {
                self.config.min_backoff
            } else {
                (b.0 * 2).min(self.config.max_backoff)
            };
            let ms = i64::try_from(next.as_millis()).unwrap_or(i64::MAX);
            *b = (next, now_ms.saturating_add(ms));
        }
    }

    fn succeeded(&self) {
        if let Ok(mut b) = self.backoff.lock() {
            *b = (Duration::ZERO, 0);
        }
    }

    /// One partition: publish its next batch in order, mark what was acknowledged. Returns
    /// how many were published and whether the broker failed.
    async fn drain(&self, partition: u32, now_ms: i64) -> Result<(usize, bool), AppError> {
        let events = self
            .outbox
            .unpublished_events(partition, self.config.batch)
            .await?;
        let mut done = Vec::with_capacity(events.len());
        let mut broke = false;
        for (seq, event) in &events {
            match self.publisher.publish(event).await {
                Ok(_) => done.push(*seq),
                Err(e) => {
                    let kind = match e {
                        PublishError::Unavailable(_) => "unavailable",
                        PublishError::Rejected(_) => "rejected",
                    };
                    metrics::counter!(OUTBOX_PUBLISH_ERRORS, "kind" => kind).increment(1);
                    tracing::warn!(partition, event = %event.id, error = %e, "outbox relay: publish failed; retrying after a backoff");
                    broke = true;
                    break;
                }
            }
        }
        if !done.is_empty() {
            // Marking may fail after the broker stored them: they are published again later
            // and the broker drops the repeats.
            if let Err(e) = self.outbox.mark_published(partition, &done, now_ms).await {
                metrics::counter!(OUTBOX_PUBLISH_ERRORS, "kind" => "store").increment(1);
                return Err(e.into());
            }
            metrics::counter!(OUTBOX_PUBLISHED).increment(done.len() as u64);
        }
        Ok((done.len(), broke))
    }
}

#[async_trait]
impl Job for OutboxRelay {
    fn name(&self) -> &'static str {
        "outbox_relay"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    fn batch(&self) -> usize {
        usize::try_from(self.config.batch).unwrap_or(usize::MAX)
    }

    async fn run_once(&self) -> Result<usize, AppError> {
        let now = self.clock.now();
        let now_ms = to_ms(now);
        if now_ms < self.waiting_until() {
            return Ok(0);
        }
        let until = now
            .checked_add(jiff::SignedDuration::try_from(self.config.lease).unwrap_or_default())
            .unwrap_or(now);
        // An idle partition costs one read, not a lease write, except on a purge step.
        let every = PURGE_EVERY.min(self.config.retention.max(Duration::from_secs(1)));
        let purge_due = now_ms >= self.next_purge.load(std::sync::atomic::Ordering::Relaxed);
        if purge_due {
            let next = now_ms.saturating_add(i64::try_from(every.as_millis()).unwrap_or(i64::MAX));
            self.next_purge
                .store(next, std::sync::atomic::Ordering::Relaxed);
        }
        // The step counts the busiest partition: a full batch anywhere runs the next at once.
        let mut busiest = 0;
        for partition in 0..self.outbox.outbox_partitions() {
            if !purge_due
                && self
                    .outbox
                    .unpublished_events(partition, 1)
                    .await?
                    .is_empty()
            {
                continue;
            }
            // Another node's partition is its to publish.
            let leased = self
                .outbox
                .lease_outbox_partition(partition, &self.config.owner, now, until)
                .await?;
            if leased.is_none() {
                continue;
            }
            let (published, broke) = self.drain(partition, now_ms).await?;
            busiest = busiest.max(published);
            if broke {
                self.failed(now_ms);
                return Ok(0);
            }
            let retention = i64::try_from(self.config.retention.as_millis()).unwrap_or(i64::MAX);
            let purged = self
                .outbox
                .purge_published(
                    partition,
                    now_ms.saturating_sub(retention),
                    self.config.batch,
                )
                .await?;
            metrics::counter!(OUTBOX_PURGED).increment(purged);
        }
        self.succeeded();
        Ok(busiest)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use stampede_core::claim_ports::OutboxEvent;
    use stampede_core::event_ports::Published;
    use stampede_core::ports::StoreError;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// One stored event: `(seq, event, published_at_ms)`.
    type Row = (i64, OutboxEvent, Option<i64>);

    /// Partitions of rows, and who holds which partition until when.
    #[derive(Default)]
    struct Outbox(
        Mutex<Vec<Vec<Row>>>,
        Mutex<std::collections::HashMap<u32, (String, jiff::Timestamp)>>,
        /// Lease calls (writes in a real store).
        std::sync::atomic::AtomicUsize,
    );

    impl Outbox {
        fn with(partitions: usize, per: i64) -> Self {
            let parts = (0..partitions)
                .map(|p| {
                    (1..=per)
                        .map(|seq| {
                            let id = format!("e{p}-{seq}");
                            let e = OutboxEvent {
                                id,
                                kind: "coupon.claimed".into(),
                                aggregate_id: seq,
                                payload: "{}".into(),
                                created_at_ms: seq,
                                traceparent: None,
                            };
                            (seq, e, None)
                        })
                        .collect()
                })
                .collect();
            Self(Mutex::new(parts), Mutex::default(), Default::default())
        }

        fn unpublished(&self) -> usize {
            let parts = self.0.lock().unwrap();
            parts.iter().flatten().filter(|r| r.2.is_none()).count()
        }
    }

    #[async_trait]
    impl OutboxStore for Outbox {
        fn outbox_partitions(&self) -> u32 {
            self.0.lock().unwrap().len() as u32
        }
        async fn unpublished_events(
            &self,
            p: u32,
            limit: u32,
        ) -> Result<Vec<(i64, OutboxEvent)>, StoreError> {
            let parts = self.0.lock().unwrap();
            Ok(parts[p as usize]
                .iter()
                .filter(|r| r.2.is_none())
                .take(limit as usize)
                .map(|r| (r.0, r.1.clone()))
                .collect())
        }
        async fn mark_published(&self, p: u32, seqs: &[i64], at: i64) -> Result<u64, StoreError> {
            let mut parts = self.0.lock().unwrap();
            let mut n = 0;
            for r in parts[p as usize].iter_mut() {
                if seqs.contains(&r.0) && r.2.is_none() {
                    r.2 = Some(at);
                    n += 1;
                }
            }
            Ok(n)
        }
        async fn lease_outbox_partition(
            &self,
            p: u32,
            owner: &str,
            now: jiff::Timestamp,
            until: jiff::Timestamp,
        ) -> Result<Option<stampede_core::event_ports::PartitionLease>, StoreError> {
            self.2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut held = self.1.lock().unwrap();
            let free = match held.get(&p) {
                Some((o, u)) => o == owner || *u <= now,
                None => true,
            };
            if !free {
                return Ok(None);
            }
            held.insert(p, (owner.to_owned(), until));
            Ok(Some(stampede_core::event_ports::PartitionLease {
                partition: p,
                owner: owner.to_owned(),
                token: 1,
            }))
        }
        async fn release_outbox_partition(
            &self,
            _: &stampede_core::event_ports::PartitionLease,
        ) -> Result<(), StoreError> {
            Ok(())
        }
        async fn purge_published(
            &self,
            p: u32,
            before: i64,
            limit: u32,
        ) -> Result<u64, StoreError> {
            let mut parts = self.0.lock().unwrap();
            let part = &mut parts[p as usize];
            let before_len = part.len();
            let mut left = limit;
            part.retain(|r| {
                let go = left > 0 && r.2.is_some_and(|t| t < before);
                if go {
                    left -= 1;
                }
                !go
            });
            Ok((before_len - part.len()) as u64)
        }
    }

    /// A broker that stores by id (dropping repeats) and can be taken down.
    #[derive(Default)]
    struct Broker {
        stored: Mutex<Vec<String>>,
        down: AtomicBool,
        /// Fail after this many more publishes (then stay down).
        fail_after: Mutex<Option<usize>>,
    }

    #[async_trait]
    impl EventPublisher for Broker {
        async fn publish(&self, e: &OutboxEvent) -> Result<Published, PublishError> {
            {
                let mut f = self.fail_after.lock().unwrap();
                if let Some(n) = f.as_mut() {
                    if *n == 0 {
                        self.down.store(true, Ordering::SeqCst);
                    } else {
                        *n -= 1;
                    }
                }
            }
            if self.down.load(Ordering::SeqCst) {
                return Err(PublishError::Unavailable("down".into()));
            }
            let mut s = self.stored.lock().unwrap();
            let duplicate = s.contains(&e.id);
            if !duplicate {
                s.push(e.id.clone());
            }
            Ok(Published {
                sequence: s.len() as u64,
                duplicate,
            })
        }
    }

    struct FixedClock(Mutex<jiff::Timestamp>);
    impl Clock for FixedClock {
        fn now(&self) -> jiff::Timestamp {
            *self.0.lock().unwrap()
        }
    }
    impl FixedClock {
        fn at_ms(ms: i64) -> Arc<Self> {
            Arc::new(Self(Mutex::new(
                jiff::Timestamp::from_millisecond(ms).unwrap(),
            )))
        }
        fn advance_ms(&self, ms: i64) {
            let mut t = self.0.lock().unwrap();
            *t = t
                .checked_add(jiff::SignedDuration::from_millis(ms))
                .unwrap();
        }
    }

    fn relay(outbox: Arc<Outbox>, broker: Arc<Broker>, clock: Arc<FixedClock>) -> OutboxRelay {
        OutboxRelay::new(
            outbox,
            broker,
            clock,
            RelayConfig {
                batch: 10,
                interval: Duration::from_millis(1),
                retention: Duration::from_secs(60),
                min_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(400),
                owner: "node-1".into(),
                lease: Duration::from_secs(30),
            },
        )
    }

    #[tokio::test]
    async fn every_event_is_published_once_in_partition_order() {
        let outbox = Arc::new(Outbox::with(3, 25));
        let broker = Arc::new(Broker::default());
        let r = relay(outbox.clone(), broker.clone(), FixedClock::at_ms(1_000_000));
        // Full batches run again at once; the last, partial one ends the drain.
        assert_eq!(r.run_once().await.unwrap(), 10);
        while r.run_once().await.unwrap() > 0 {}
        assert_eq!(outbox.unpublished(), 0);
        let stored = broker.stored.lock().unwrap().clone();
        assert_eq!(stored.len(), 75);
        for p in 0..3 {
            let order: Vec<i64> = stored
                .iter()
                .filter_map(|id| id.strip_prefix(&format!("e{p}-")))
                .map(|s| s.parse().unwrap())
                .collect();
            assert_eq!(order, (1..=25).collect::<Vec<_>>(), "partition {p}");
        }
    }

    #[tokio::test]
    async fn a_broker_outage_loses_nothing_and_backs_off() {
        let outbox = Arc::new(Outbox::with(2, 20));
        let broker = Arc::new(Broker::default());
        *broker.fail_after.lock().unwrap() = Some(5);
        let clock = FixedClock::at_ms(1_000_000);
        let r = relay(outbox.clone(), broker.clone(), clock.clone());
        assert_eq!(
            r.run_once().await.unwrap(),
            0,
            "the pass stops at the failure"
        );
        assert_eq!(outbox.unpublished(), 35, "what was acknowledged is marked");
        // Within the backoff nothing is tried; the waits double up to the cap.
        broker.down.store(false, Ordering::SeqCst);
        *broker.fail_after.lock().unwrap() = None;
        assert_eq!(r.run_once().await.unwrap(), 0);
        assert_eq!(broker.stored.lock().unwrap().len(), 5);
        clock.advance_ms(100);
        while r.run_once().await.unwrap() > 0 {}
        assert_eq!(outbox.unpublished(), 0);
        assert_eq!(broker.stored.lock().unwrap().len(), 40, "each once");
        // The backoff doubles while the broker stays down, and resets once it answers.
        broker.down.store(true, Ordering::SeqCst);
        let more = Arc::new(Outbox::with(1, 3));
        let r = relay(more.clone(), broker.clone(), clock.clone());
        for wait in [100, 200, 400, 400] {
            r.run_once().await.unwrap();
            assert_eq!(r.waiting_until(), to_ms(clock.now()) + wait);
            clock.advance_ms(wait);
        }
        broker.down.store(false, Ordering::SeqCst);
        r.run_once().await.unwrap();
        assert_eq!(r.waiting_until(), 0);
        assert_eq!(more.unpublished(), 0);
    }

    #[tokio::test]
    async fn a_lost_ack_republishes_and_the_broker_drops_the_repeat() {
        let outbox = Arc::new(Outbox::with(1, 4));
        let broker = Arc::new(Broker::default());
        // The broker stored e0-1 but the relay never heard: it is still unpublished here.
        broker.stored.lock().unwrap().push("e0-1".into());
        let r = relay(outbox.clone(), broker.clone(), FixedClock::at_ms(1_000_000));
        r.run_once().await.unwrap();
        assert_eq!(
            broker.stored.lock().unwrap().clone(),
            vec!["e0-1", "e0-2", "e0-3", "e0-4"]
        );
    }

    #[tokio::test]
    async fn idle_partitions_cost_a_read_not_a_lease_until_a_purge_step() {
        let outbox = Arc::new(Outbox::with(3, 2));
        let broker = Arc::new(Broker::default());
        let clock = FixedClock::at_ms(1_000_000);
        let r = relay(outbox.clone(), broker.clone(), clock.clone());
        r.run_once().await.unwrap();
        assert_eq!(outbox.unpublished(), 0);
        let leases = |o: &Outbox| o.2.load(Ordering::Relaxed);
        let after_first = leases(&outbox);
        assert_eq!(after_first, 3, "the first step visits every partition");
        for _ in 0..10 {
            clock.advance_ms(1_000);
            r.run_once().await.unwrap();
        }
        assert_eq!(
            leases(&outbox),
            after_first,
            "nothing to publish: no lease taken"
        );
        // New events on one partition: that one is leased and published.
        outbox.0.lock().unwrap()[1].push((
            3,
            OutboxEvent {
                id: "e1-3".into(),
                kind: "coupon.claimed".into(),
                aggregate_id: 3,
                payload: "{}".into(),
                created_at_ms: 3,
                traceparent: None,
            },
            None,
        ));
        r.run_once().await.unwrap();
        assert_eq!(leases(&outbox), after_first + 1);
        assert_eq!(outbox.unpublished(), 0);
        // A minute on, a purge step visits them all again.
        clock.advance_ms(60_000);
        r.run_once().await.unwrap();
        assert_eq!(leases(&outbox), after_first + 4);
    }

    #[tokio::test]
    async fn published_events_are_purged_after_their_retention() {
        let outbox = Arc::new(Outbox::with(1, 5));
        let broker = Arc::new(Broker::default());
        let clock = FixedClock::at_ms(1_000_000);
        let r = relay(outbox.clone(), broker.clone(), clock.clone());
        r.run_once().await.unwrap();
        assert_eq!(
            outbox.0.lock().unwrap()[0].len(),
            5,
            "kept for the retention"
        );
        clock.advance_ms(60_001);
        r.run_once().await.unwrap();
        assert!(outbox.0.lock().unwrap()[0].is_empty());
    }

    #[tokio::test]
    async fn a_partition_another_node_holds_is_left_to_it_until_its_lease_expires() {
        let outbox = Arc::new(Outbox::with(2, 5));
        let clock = FixedClock::at_ms(1_000_000);
        let other_until = clock
            .now()
            .checked_add(jiff::SignedDuration::from_secs(30))
            .unwrap();
        outbox
            .1
            .lock()
            .unwrap()
            .insert(1, ("node-2".into(), other_until));
        let broker = Arc::new(Broker::default());
        let r = relay(outbox.clone(), broker.clone(), clock.clone());
        r.run_once().await.unwrap();
        assert_eq!(outbox.unpublished(), 5, "partition 1 is node-2's");
        assert!(
            broker
                .stored
                .lock()
                .unwrap()
                .iter()
                .all(|id| id.starts_with("e0-"))
        );
        // node-2 died: once its lease runs out, this node takes the partition over.
        clock.advance_ms(30_000);
        r.run_once().await.unwrap();
        assert_eq!(outbox.unpublished(), 0);
    }
}
