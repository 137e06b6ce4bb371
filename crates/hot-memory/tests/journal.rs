//! The claim journal against a real SQLite store: claims are acknowledged once journaled and
//! pending until applied; a node that stops with a backlog (the applier held back, as by a
//! `kill -9`) gets every acknowledged claim back on the next open, exactly once, torn tail or
//! not; a full backlog makes claims wait instead of growing without bound.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use stampede_core::claim_ports::{
    ClaimJournalStore, ClaimOutcome, ClaimRecord, CouponQuery, CouponStore, HotState,
};
use stampede_core::ports::{StoreError, TemplateStore};
use stampede_domain::audit::AuditEntry;
use stampede_domain::coupon::{ClaimRefusal, Origin, UserCoupon, new_claimed_coupon};
use stampede_domain::ids::{CouponId, ShopId, TemplateId, UserId};
use stampede_domain::template::{Kind, Template, TemplateDraft};
use stampede_hot_memory::{ClaimJournal, JournalOptions, MemoryHotState};
use stampede_store_sqlite::{SqliteOptions, SqliteStore};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

/// The SQLite store, with the journal's applies held back while `hold` is set: what a node
/// killed before its applier caught up leaves behind.
struct Held {
    inner: Arc<SqliteStore>,
    hold: AtomicBool,
}

#[async_trait]
impl ClaimJournalStore for Held {
    async fn journal_applied(&self) -> Result<u64, StoreError> {
        self.inner.journal_applied().await
    }
    async fn apply_journaled(
        &self,
        claims: &[ClaimRecord],
        through: u64,
    ) -> Result<(), StoreError> {
        if self.hold.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("held back by the test".into()));
        }
        self.inner.apply_journaled(claims, through).await
    }
}

fn start() -> Timestamp {
    Timestamp::from_second(1_900_000_000).unwrap()
}

fn now() -> Timestamp {
    start() + SignedDuration::from_mins(1)
}

static NEXT: AtomicI64 = AtomicI64::new(9_000);

fn coupon(t: &Template, user: i64) -> UserCoupon {
    let id = CouponId::new(NEXT.fetch_add(1, Ordering::Relaxed)).unwrap();
    new_claimed_coupon(t, id, UserId::new(user).unwrap(), 0, Origin::Claim, now())
}

async fn store_with_template(dir: &Path, stock: i64, limit: i64) -> (Arc<SqliteStore>, Template) {
    let store = Arc::new(
        SqliteStore::open(&dir.join("stampede.db"), SqliteOptions::default())
            .await
            .unwrap(),
    );
    let t = TemplateDraft {
        name: Some("journal".into()),
        kind: Some(Kind::Fixed),
        amount_off: Some(500),
        stock_total: Some(stock),
        claim_start: Some(start()),
        claim_end: Some(start() + SignedDuration::from_hours(24)),
        validity_hours: Some(24),
        per_user_limit: Some(limit),
        ..TemplateDraft::default()
    }
    .validate(
        TemplateId::new(1).unwrap(),
        ShopId::new(7).unwrap(),
        start() - SignedDuration::from_hours(1),
    )
    .unwrap();
    store
        .create_template(&t, &AuditEntry::created(&t, "merchant:7"), None)
        .await
        .unwrap();
    (store, t)
}

fn options(dir: &Path) -> JournalOptions {
    JournalOptions {
        apply_batch: 8,
        // Small segments, so a run spans several and trimming is exercised.
        segment_bytes: 1_024,
        ..JournalOptions::new(dir.join("claim-journal"))
    }
}

async fn open(
    store: &Arc<SqliteStore>,
    target: Arc<dyn ClaimJournalStore>,
    opts: JournalOptions,
) -> (MemoryHotState, Arc<ClaimJournal>) {
    let journal = Arc::new(ClaimJournal::open(target, opts).await.unwrap());
    let hot = MemoryHotState::with_journal(store.clone(), store.clone(), journal.clone());
    (hot, journal)
}

/// A claim that must succeed; its coupon.
async fn claimed(hot: &MemoryHotState, t: &Template, user: i64, key: &str) -> UserCoupon {
    match hot
        .claim(t, coupon(t, user), Some(key), now())
        .await
        .unwrap()
    {
        ClaimOutcome::Claimed(c) => c,
        other => panic!("user {user}, key {key}: {other:?}"),
    }
}

/// The store, with the journal's applies held back while `hold` is set.
fn held(store: &Arc<SqliteStore>, hold: bool) -> Arc<Held> {
    Arc::new(Held {
        inner: store.clone(),
        hold: AtomicBool::new(hold),
    })
}

async fn stored(store: &SqliteStore, user: i64) -> Vec<UserCoupon> {
    store
        .list_coupons(&CouponQuery {
            user_id: UserId::new(user).unwrap(),
            status: None,
            limit: 1_000,
            after: None,
            now: now(),
        })
        .await
        .unwrap()
}

fn segments(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("claim-journal"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "log"))
        })
        .count()
}

#[tokio::test]
async fn an_acknowledged_claim_is_pending_until_applied_then_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (store, t) = store_with_template(dir.path(), 10, 2).await;
    let held = held(&store, true);
    let (hot, journal) = open(&store, held.clone(), options(dir.path())).await;

    let got = claimed(&hot, &t, 1, "k1").await;
    let c = got.clone();
    // Acknowledged, not in SQLite yet: pending, found by its key, replayed by its key.
    assert!(stored(&store, 1).await.is_empty());
    assert_eq!(
        hot.pending_coupons(c.user_id).await.unwrap(),
        vec![got.clone()]
    );
    assert_eq!(
        hot.find_claim(&t, c.user_id, "k1").await.unwrap(),
        Some(got.clone())
    );
    let again = hot
        .claim(&t, coupon(&t, 1), Some("k1"), now())
        .await
        .unwrap();
    assert!(
        matches!(again, ClaimOutcome::Replayed(ref r) if r.id == got.id),
        "{again:?}"
    );
    assert_eq!(journal.stats().backlog(), 1);

    held.hold.store(false, Ordering::SeqCst);
    journal.wait_applied().await;
    assert_eq!(stored(&store, 1).await, vec![got]);
    assert!(hot.pending_coupons(c.user_id).await.unwrap().is_empty());
    assert_eq!(journal.stats().backlog(), 0);
    assert_eq!(
        store.get_template(t.id).await.unwrap().unwrap().stock,
        9,
        "the applied claim took its stock off the template row"
    );
}

/// What `kill -9` with a backlog leaves: acknowledged claims only in the journal (plus a torn
/// frame a cut write left at the tail). The next open replays them all, once.
#[tokio::test]
async fn a_restart_replays_every_acknowledged_claim_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, t) = store_with_template(dir.path(), 100, 2).await;
    let held = held(&store, false);
    let (hot, journal) = open(&store, held.clone(), options(dir.path())).await;
    // Some applied before the "crash", the rest held back.
    let mut acked = Vec::new();
    for user in 1..=40 {
        if user == 11 {
            journal.wait_applied().await;
            held.hold.store(true, Ordering::SeqCst);
        }
        acked.push(claimed(&hot, &t, user, &format!("k{user}")).await);
    }
    assert_eq!(journal.stats().backlog(), 30);
    assert!(segments(dir.path()) > 1, "the run spans several segments");
    drop(hot);
    drop(journal);
    // A write cut short by the crash: never acknowledged, must be ignored.
    let mut last = std::fs::read_dir(dir.path().join("claim-journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect::<Vec<_>>();
    last.sort();
    let tail = last.last().unwrap();
    let mut bytes = std::fs::read(tail).unwrap();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3]);
    std::fs::write(tail, bytes).unwrap();

    // Restart twice: the second open must find nothing left to do.
    for round in 0..2 {
        let (hot, journal) = open(&store, store.clone(), options(dir.path())).await;
        assert_eq!(
            journal.stats().replayed.load(Ordering::SeqCst),
            if round == 0 { 30 } else { 0 }
        );
        assert_eq!(segments(dir.path()), 1, "replayed segments are deleted");
        let mut total = 0;
        for user in 1..=40 {
            let mine = stored(&store, user).await;
            for c in acked.iter().filter(|c| c.user_id.get() == user) {
                assert!(mine.contains(c), "user {user} lost {}", c.id);
            }
            total += mine.len();
        }
        assert_eq!(total, acked.len(), "nothing stored twice");
        let stock = store.get_template(t.id).await.unwrap().unwrap().stock;
        assert_eq!(stock, 100 - acked.len() as i64);
        assert_eq!(hot.stock(&t).await.unwrap(), None, "not loaded yet");
        // The rebuilt state knows the keys and the seqs: a replay, then the user's second.
        let again = hot
            .claim(&t, coupon(&t, 5), Some("k5"), now())
            .await
            .unwrap();
        assert!(
            matches!(again, ClaimOutcome::Replayed(ref r) if r.id == acked[4].id),
            "{again:?}"
        );
        if round == 0 {
            let second = claimed(&hot, &t, 5, "k5-second").await;
            assert_eq!(second.seq, 2);
            acked.push(second);
            journal.wait_applied().await;
        }
        let third = hot
            .claim(&t, coupon(&t, 5), Some("k5-third"), now())
            .await
            .unwrap();
        assert_eq!(third, ClaimOutcome::Refused(ClaimRefusal::LimitReached));
    }
}

#[tokio::test]
async fn a_full_backlog_makes_claims_wait_until_the_applier_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let (store, t) = store_with_template(dir.path(), 10, 1).await;
    let held = held(&store, true);
    let opts = JournalOptions {
        max_backlog: 2,
        ..options(dir.path())
    };
    let (hot, journal) = open(&store, held.clone(), opts).await;
    let hot = Arc::new(hot);
    for user in 1..=2 {
        let out = hot.claim(&t, coupon(&t, user), None, now()).await.unwrap();
        assert!(matches!(out, ClaimOutcome::Claimed(_)), "{out:?}");
    }
    let waiting = {
        let (hot, t) = (hot.clone(), t.clone());
        tokio::spawn(async move { hot.claim(&t, coupon(&t, 3), None, now()).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "a third claim must wait for room");
    held.hold.store(false, Ordering::SeqCst);
    let out = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the claim proceeds once the backlog drains")
        .unwrap()
        .unwrap();
    assert!(matches!(out, ClaimOutcome::Claimed(_)), "{out:?}");
    journal.wait_applied().await;
    assert_eq!(store.get_template(t.id).await.unwrap().unwrap().stock, 7);
}

/// The store's half of exactly-once: records at or below the recorded position are skipped,
/// also when a replay cuts the records into other batches than the applier did.
#[tokio::test]
async fn applying_records_twice_stores_them_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, t) = store_with_template(dir.path(), 10, 1).await;
    // Journal records 1..=6: one coupon each, for users 1..=6.
    let records: Vec<ClaimRecord> = (1..=6)
        .map(|user| {
            let mut c = coupon(&t, user);
            c.seq = 1;
            ClaimRecord {
                coupon: c,
                claim_key: Some(format!("k{user}")),
                traceparent: None,
            }
        })
        .collect();
    assert_eq!(store.journal_applied().await.unwrap(), 0);
    store.apply_journaled(&records[..3], 3).await.unwrap();
    // The same batch again, then an overlapping one (records 2..=5), then an older one.
    store.apply_journaled(&records[..3], 3).await.unwrap();
    store.apply_journaled(&records[1..5], 5).await.unwrap();
    store.apply_journaled(&records[..2], 2).await.unwrap();
    assert_eq!(store.journal_applied().await.unwrap(), 5);
    for (i, r) in records.iter().enumerate() {
        let user = i as i64 + 1;
        let expected = if user <= 5 {
            vec![r.coupon.clone()]
        } else {
            vec![]
        };
        assert_eq!(stored(&store, user).await, expected, "user {user}");
    }
    assert_eq!(store.get_template(t.id).await.unwrap().unwrap().stock, 5);
    // An empty batch only moves the position (how a refused record is stepped over).
    store.apply_journaled(&[], 6).await.unwrap();
    assert_eq!(store.journal_applied().await.unwrap(), 6);
    assert!(stored(&store, 6).await.is_empty());
}
