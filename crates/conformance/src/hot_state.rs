//! `HotState`: the claim engine's request path. Claims (window edges, status, stock, the
//! per-user limit, idempotency keys, loading from the system of record, a flash-sale race,
//! durability and read-your-writes), and distribution batches (file order, refusals, replay
//! only, returned stock, races with claims).
//!
//! Where the adapters are documented to differ (a stored batch answer and what
//! `abandon_batch` gives back, Redis's key layout, pub/sub and persister, the embedded group
//! commit), the behaviour stays in that adapter's own tests.

use crate::SystemOfRecord;
use crate::fixtures::*;
use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use stampede_core::claim_ports::{
    ClaimOutcome, ClaimRecord, ClaimState, CouponQuery, CouponStore, HotState, OutboxEvent,
    Reservation, RowReservation, Standing,
};
use stampede_core::distribution_ports::row_key;
use stampede_core::ports::{ChangeOutcome, StoreError};
use stampede_domain::coupon::{ClaimRefusal, Origin, UserCoupon, new_claimed_coupon};
use stampede_domain::ids::{CouponId, TemplateId, UserId};
use stampede_domain::template::{Template, TemplateChange, TemplateDraft};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Runs every `HotState` scenario; `$run` takes `impl AsyncFnOnce(&dyn HotFixture)`.
#[macro_export]
macro_rules! hot_state_suite {
    ($run:path) => {
        mod hot_state {
            #[allow(unused_imports)]
            use super::*;
            $crate::__scenarios!($run; hot_state;
                loads_on_first_claim_with_counts_and_keys_from_the_system_of_record,
                a_large_claim_history_loads_whole,
                window_edges,
                terminated_and_ended_templates_refuse,
                sold_out_until_stock_is_added,
                per_user_limit,
                a_repeated_key_replays_the_same_coupon_and_takes_no_stock,
                a_keyed_claim_is_found_by_its_key,
                flash_sale_race_neither_oversells_nor_breaks_the_limit,
                an_acknowledged_claim_is_visible_to_its_user_at_once,
                acknowledged_claims_survive_a_restart,
                reserves_in_file_order_with_seqs_and_limits,
                an_empty_batch_reserves_nothing,
                a_template_not_loaded_is_loaded_from_the_system_of_record,
                sold_out_part_way_in_file_order,
                status_and_end_refuse_the_whole_batch_but_the_start_does_not,
                replay_only_without_a_stored_answer_reserves_nothing,
                refused_stock_goes_back_once_per_batch,
                returning_stock_to_a_template_not_loaded_changes_nothing,
                a_full_size_batch_in_one_call,
                batches_and_claims_racing_never_oversell,
                batches_and_claims_racing_never_break_the_limit,
                standing_is_stock_and_the_users_count,
            );
        }
    };
}

/// What a hot-state scenario runs against: a fresh hot state over a fresh system of record.
#[async_trait]
pub trait HotFixture: Send + Sync {
    /// The system of record the hot state loads templates and claim histories from. Scenarios
    /// create and change templates and store coupons here, as the back-office and the
    /// distribution runner do.
    fn store(&self) -> Arc<dyn SystemOfRecord>;

    /// The hot state under test.
    fn hot(&self) -> Arc<dyn HotState>;

    /// A new hot state, as a restarted node opens it: over the same system of record and,
    /// for a hot state that outlives its process, the same data.
    async fn restart(&self) -> Arc<dyn HotState>;

    /// How many claim histories the hot states read from the system of record (loads).
    fn loads(&self) -> u64;

    /// The claims of `t` the hot states made durable, in any order: embedded, what they
    /// committed to the system of record; distributed, what is in the claim log.
    async fn durable_claims(&self, t: &Template) -> Vec<ClaimRecord>;
}

/// A `CouponStore` that passes every call through and notes what hot states did with it:
/// the claim histories they loaded and the claims they committed. Adapters give it to their
/// hot states to implement `HotFixture::loads` (and `durable_claims` where claims are
/// committed here).
pub struct ObservedCoupons {
    inner: Arc<dyn CouponStore>,
    loads: AtomicU64,
    committed: Mutex<Vec<ClaimRecord>>,
}

impl ObservedCoupons {
    pub fn new(inner: Arc<dyn CouponStore>) -> Self {
        Self {
            inner,
            loads: AtomicU64::new(0),
            committed: Mutex::new(Vec::new()),
        }
    }

    /// Calls of `claim_state`.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::SeqCst)
    }

    /// The claims of `t` that `commit_claims` committed.
    pub fn committed(&self, t: TemplateId) -> Vec<ClaimRecord> {
        let all = self.committed.lock().unwrap();
        all.iter()
            .filter(|r| r.coupon.template_id == t)
            .cloned()
            .collect()
    }
}

#[async_trait]
impl CouponStore for ObservedCoupons {
    async fn commit_claims(&self, claims: &[ClaimRecord]) -> Result<(), StoreError> {
        self.inner.commit_claims(claims).await?;
        // Noted once committed, before the caller hears of it.
        self.committed.lock().unwrap().extend_from_slice(claims);
        Ok(())
    }

    async fn claim_state(&self, template: TemplateId) -> Result<ClaimState, StoreError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.inner.claim_state(template).await
    }

    async fn get_coupon(
        &self,
        user: UserId,
        id: CouponId,
    ) -> Result<Option<UserCoupon>, StoreError> {
        self.inner.get_coupon(user, id).await
    }

    async fn list_coupons(&self, q: &CouponQuery) -> Result<Vec<UserCoupon>, StoreError> {
        self.inner.list_coupons(q).await
    }

    async fn outbox_events(&self, kind: &str, limit: u32) -> Result<Vec<OutboxEvent>, StoreError> {
        self.inner.outbox_events(kind, limit).await
    }

    async fn outbox_backlog(
        &self,
    ) -> Result<stampede_core::claim_ports::OutboxBacklog, StoreError> {
        self.inner.outbox_backlog().await
    }
}

// ---- Building blocks -------------------------------------------------------------------

/// A moment inside every scenario template's claim window (`now()` to ten days later).
fn open() -> Timestamp {
    at(60)
}

fn ms(n: i64) -> SignedDuration {
    SignedDuration::from_millis(n)
}

/// A stored fixed-amount template of shop 7: `stock` coupons, at most `limit` per user,
/// claimable for ten days from `now()`.
async fn limited(f: &dyn HotFixture, id: i64, stock: i64, limit: i64) -> Template {
    let t = build(
        TemplateDraft {
            stock_total: Some(stock),
            per_user_limit: Some(limit),
            ..draft(&format!("hot {id}"))
        },
        id,
        7,
    );
    create(&*f.store(), &t).await;
    t
}

/// `t` as stored now: what a caller passes the hot state after coupons went in behind it.
async fn reread(f: &dyn HotFixture, t: &Template) -> Template {
    f.store().get_template(t.id).await.unwrap().unwrap()
}

/// Applies `change` in the system of record and tells the hot state, as the back-office does.
async fn change(
    f: &dyn HotFixture,
    t: &Template,
    change: TemplateChange,
    when: Timestamp,
) -> Template {
    let changed = match f
        .store()
        .change_template(t.id, change, ACTOR, when)
        .await
        .unwrap()
    {
        ChangeOutcome::Changed(c) => c,
        other => panic!("expected Changed, got {other:?}"),
    };
    f.hot().template_changed(&changed).await.unwrap();
    changed
}

static NEXT_COUPON: AtomicI64 = AtomicI64::new(1);

/// A new coupon of `t` for `user` (seq 0: the hot state assigns it).
fn coupon(t: &Template, user: i64, origin: Origin, when: Timestamp) -> UserCoupon {
    let id = cid(NEXT_COUPON.fetch_add(1, Ordering::Relaxed));
    new_claimed_coupon(t, id, uid(user), 0, origin, when)
}

/// `coupon` already held as the user's `seq`-th, stored under `key`.
fn prior(t: &Template, user: i64, seq: u32, origin: Origin, key: Option<String>) -> ClaimRecord {
    let mut c = coupon(t, user, origin, open());
    c.seq = seq;
    ClaimRecord {
        coupon: c,
        claim_key: key,
        traceparent: None,
    }
}

async fn claim_with(
    hot: &dyn HotState,
    t: &Template,
    user: i64,
    key: Option<&str>,
    when: Timestamp,
) -> ClaimOutcome {
    hot.claim(t, coupon(t, user, Origin::Claim, when), key, when)
        .await
        .expect("claim")
}

/// A claim of `t` by `user` without a key.
async fn claim(hot: &dyn HotState, t: &Template, user: i64, when: Timestamp) -> ClaimOutcome {
    claim_with(hot, t, user, None, when).await
}

fn claimed(o: ClaimOutcome) -> UserCoupon {
    match o {
        ClaimOutcome::Claimed(c) => c,
        other => panic!("expected Claimed, got {other:?}"),
    }
}

fn refused(r: ClaimRefusal) -> ClaimOutcome {
    ClaimOutcome::Refused(r)
}

/// The durable record of claim `c`, made with `key`.
fn record(c: &UserCoupon, key: Option<&str>) -> ClaimRecord {
    ClaimRecord {
        coupon: c.clone(),
        claim_key: key.map(str::to_owned),
        traceparent: None,
    }
}

/// The durable claims of `t` are exactly `want`.
async fn assert_durable(f: &dyn HotFixture, t: &Template, mut want: Vec<ClaimRecord>) {
    let mut got = f.durable_claims(t).await;
    got.sort_by_key(|r| r.coupon.id);
    want.sort_by_key(|r| r.coupon.id);
    assert_eq!(got, want, "durable claims of template {}", t.id);
}

async fn stock(hot: &dyn HotState, t: &Template) -> Option<i64> {
    hot.stock(t).await.unwrap()
}

fn users(ids: impl IntoIterator<Item = i64>) -> Vec<UserId> {
    ids.into_iter().map(uid).collect()
}

fn batch(task: i64, first_row: u64, users: &[UserId]) -> Reservation<'_> {
    Reservation {
        task: did(task),
        first_row,
        users,
        replay_only: false,
    }
}

fn replay(task: i64, first_row: u64, users: &[UserId]) -> Reservation<'_> {
    Reservation {
        replay_only: true,
        ..batch(task, first_row, users)
    }
}

/// A batch's answer (the scenario expects one).
async fn reserve(
    hot: &dyn HotState,
    t: &Template,
    r: &Reservation<'_>,
    when: Timestamp,
) -> Vec<RowReservation> {
    hot.reserve_batch(t, r, when)
        .await
        .expect("reserve_batch")
        .expect("an answer")
}

fn ok(seq: u32) -> RowReservation {
    RowReservation::Reserved { seq }
}

fn no(r: ClaimRefusal) -> RowReservation {
    RowReservation::Refused(r)
}

fn reserved(rows: &[RowReservation]) -> usize {
    rows.iter()
        .filter(|r| matches!(r, RowReservation::Reserved { .. }))
        .count()
}

// ---- Claims ----------------------------------------------------------------------------

pub async fn loads_on_first_claim_with_counts_and_keys_from_the_system_of_record(
    f: &dyn HotFixture,
) {
    let hot = f.hot();
    let t = limited(f, 1, 10, 1).await;
    // Stored before the hot state saw the template: user 5's claim, and user 6's keyed one.
    let old = prior(&t, 6, 1, Origin::Claim, Some("k-old".into()));
    f.store()
        .commit_claims(&[prior(&t, 5, 1, Origin::Claim, None), old.clone()])
        .await
        .unwrap();
    let t = reread(f, &t).await;
    assert_eq!(t.stock, 8);

    assert_eq!(
        stock(&*hot, &t).await,
        None,
        "not loaded before the first claim"
    );
    assert_eq!(
        claim(&*hot, &t, 5, open()).await,
        refused(ClaimRefusal::LimitReached)
    );
    assert_eq!(stock(&*hot, &t).await, Some(8));
    assert_eq!(
        claim_with(&*hot, &t, 6, Some("k-old"), open()).await,
        ClaimOutcome::Replayed(old.coupon)
    );
    let c = claimed(claim(&*hot, &t, 7, open()).await);
    assert_eq!((c.seq, c.template_id, c.user_id), (1, t.id, uid(7)));
    assert_eq!(stock(&*hot, &t).await, Some(7));
    assert_eq!(f.loads(), 1, "loaded once");
    assert_durable(f, &t, vec![record(&c, None)]).await;
}

/// What discovery reads: stock and a user's count, loading a template only for a user.
pub async fn standing_is_stock_and_the_users_count(f: &dyn HotFixture) {
    let hot = f.hot();
    let t = limited(f, 40, 10, 3).await;
    let u = limited(f, 41, 5, 1).await;
    f.store()
        .commit_claims(&[
            prior(&t, 5, 1, Origin::Claim, None),
            prior(&t, 5, 2, Origin::Distribution, None),
        ])
        .await
        .unwrap();
    let t = reread(f, &t).await;
    let none = Standing::default();
    assert_eq!(
        hot.standing(&[&t, &u], None).await.unwrap(),
        vec![none, none],
        "nothing loaded for an anonymous read"
    );
    assert_eq!(f.loads(), 0);
    let got = hot.standing(&[&t, &u], Some(uid(5))).await.unwrap();
    assert_eq!(
        got,
        vec![
            Standing {
                stock: Some(8),
                held: Some(2)
            },
            Standing {
                stock: Some(5),
                held: Some(0)
            },
        ]
    );
    claimed(claim(&*hot, &t, 5, open()).await);
    claimed(claim(&*hot, &t, 6, open()).await);
    assert_eq!(
        hot.standing(&[&t], Some(uid(5))).await.unwrap(),
        vec![Standing {
            stock: Some(6),
            held: Some(3)
        }]
    );
    assert_eq!(
        hot.standing(&[&t, &u], None).await.unwrap(),
        vec![
            Standing {
                stock: Some(6),
                held: None
            },
            Standing {
                stock: Some(5),
                held: None
            },
        ]
    );
    assert_eq!(hot.standing(&[], Some(uid(5))).await.unwrap(), vec![]);
}

pub async fn a_large_claim_history_loads_whole(f: &dyn HotFixture) {
    let hot = f.hot();
    let t = limited(f, 11, 6_000, 2).await;
    // Users 1..=1500 hold two coupons (the first made with key `key-<user>`), users
    // 1501..=2500 one: 4,000 coupons, far more than one round trip of loading carries.
    let keyed: Vec<ClaimRecord> = (1..=1_500)
        .map(|u| prior(&t, u, 1, Origin::Claim, Some(format!("key-{u}"))))
        .collect();
    let mut history = keyed.clone();
    history.extend((1..=1_500).map(|u| prior(&t, u, 2, Origin::Claim, None)));
    history.extend((1_501..=2_500).map(|u| prior(&t, u, 1, Origin::Claim, None)));
    f.store().commit_claims(&history).await.unwrap();
    let t = reread(f, &t).await;

    assert_eq!(
        claim(&*hot, &t, 1_499, open()).await,
        refused(ClaimRefusal::LimitReached)
    );
    assert_eq!(
        claim_with(&*hot, &t, 1_500, Some("key-1500"), open()).await,
        ClaimOutcome::Replayed(keyed[1_499].coupon.clone())
    );
    assert_eq!(claimed(claim(&*hot, &t, 2_500, open()).await).seq, 2);
    assert_eq!(
        claim(&*hot, &t, 2_500, open()).await,
        refused(ClaimRefusal::LimitReached)
    );
    assert_eq!(claimed(claim(&*hot, &t, 2_501, open()).await).seq, 1);
    assert_eq!(stock(&*hot, &t).await, Some(1_998));

    // Every key and every count came in, not just the first chunk's.
    for r in &keyed {
        let key = r.claim_key.as_deref();
        assert_eq!(
            claim_with(&*hot, &t, r.coupon.user_id.get(), key, open()).await,
            ClaimOutcome::Replayed(r.coupon.clone())
        );
    }
    let everyone = users(1..=2_501);
    let rows = reserve(&*hot, &t, &batch(1, 1, &everyone), open()).await;
    for (user, row) in everyone.iter().zip(&rows) {
        let want = match user.get() {
            1..=1_500 | 2_500 => no(ClaimRefusal::LimitReached),
            _ => ok(2),
        };
        assert_eq!(*row, want, "user {user}");
    }
    assert_eq!(stock(&*hot, &t).await, Some(998));
}

pub async fn window_edges(f: &dyn HotFixture) {
    let hot = f.hot();
    let t = limited(f, 2, 100, 5).await;
    let (start, end) = (t.claim_start, t.claim_end);
    assert_eq!(
        claim(&*hot, &t, 1, start - ms(1)).await,
        refused(ClaimRefusal::NotStarted)
    );
    let first = claimed(claim(&*hot, &t, 1, start).await);
    assert_eq!(first.seq, 1);
    let last = claimed(claim(&*hot, &t, 1, end - ms(1)).await);
    assert_eq!(last.seq, 2);
    assert_eq!(claim(&*hot, &t, 1, end).await, refused(ClaimRefusal::Ended));
    assert_eq!(stock(&*hot, &t).await, Some(98));
    assert_durable(f, &t, vec![record(&first, None), record(&last, None)]).await;
}

pub async fn terminated_and_ended_templates_refuse(f: &dyn HotFixture) {
    let hot = f.hot();

    let t = limited(f, 3, 100, 5).await;
    claimed(claim(&*hot, &t, 1, open()).await);
    change(f, &t, TemplateChange::Terminate, open()).await;
    // The hot state decides by its own status, whatever copy the caller holds.
    assert_eq!(
        claim(&*hot, &t, 2, open()).await,
        refused(ClaimRefusal::Terminated)
    );
    assert_eq!(stock(&*hot, &t).await, Some(99));
    // A late, reordered notification of the older active copy never reopens it.
    hot.template_changed(&t).await.unwrap();
    assert_eq!(
        claim(&*hot, &t, 2, open()).await,
        refused(ClaimRefusal::Terminated)
    );
    assert_eq!(stock(&*hot, &t).await, Some(99));

    let t = limited(f, 4, 100, 5).await;
    claimed(claim(&*hot, &t, 1, open()).await);
    change(f, &t, TemplateChange::End, t.claim_end + ms(1)).await;
    assert_eq!(
        claim(&*hot, &t, 2, open()).await,
        refused(ClaimRefusal::Ended)
    );

    // Terminated before it was ever loaded: loads as terminated.
    let t = limited(f, 5, 100, 5).await;
    let terminated = change(f, &t, TemplateChange::Terminate, open()).await;
    assert_eq!(
        claim(&*hot, &terminated, 2, open()).await,
        refused(ClaimRefusal::Terminated)
    );
    assert_durable(f, &terminated, Vec::new()).await;
}

pub async fn sold_out_until_stock_is_added(f: &dyn HotFixture) {
    let hot = f.hot();
    let t = limited(f, 6, 2, 5).await;
    let mut won = vec![
        claimed(claim(&*hot, &t, 1, open()).await),
        claimed(claim(&*hot, &t, 2, open()).await),
    ];
    assert_eq!(
        claim(&*hot, &t, 3, open()).await,
        refused(ClaimRefusal::SoldOut)
    );
    assert_eq!(stock(&*hot, &t).await, Some(0));

    let more = change(f, &t, TemplateChange::AddStock(3), open()).await;
    assert_eq!(stock(&*hot, &t).await, Some(3));
    won.push(claimed(claim(&*hot, &t, 3, open()).await));
    assert_eq!(stock(&*hot, &t).await, Some(2));
    // A repeated or late notification adds nothing twice.
    hot.template_changed(&more).await.unwrap();
    hot.template_changed(&t).await.unwrap();
    assert_eq!(stock(&*hot, &t).await, Some(2));
    assert_durable(f, &t, won.iter().map(|c| record(c, None)).collect()).await;
}

pub async fn per_user_limit(f: &dyn HotFixture) {
    let hot = f.hot();
    let t = limited(f, 7, 100, 2).await;
    assert_eq!(claimed(claim(&*hot, &t, 1, open()).await).seq, 1);
    assert_eq!(claimed(claim(&*hot, &t, 1, open()).await).seq, 2);
    assert_eq!(
        claim(&*hot, &t, 1, open()).await,
        refused(ClaimRefusal::LimitReached)
    );
    assert_eq!(claimed(claim(&*hot, &t, 2, open()).await).seq, 1);
    assert_eq!(stock(&*hot, &t).await, Some(97));
}

pub async fn a_repeated_key_replays_the_same_coupon_and_takes_no_stock(f: &dyn HotFixture) {
    let hot = f.hot();
    let t = limited(f, 8, 100, 3).await;
    let first = claimed(claim_with(&*hot, &t, 1, Some("key-1"), open()).await);
    for _ in 0..3 {
        assert_eq!(
            claim_with(&*hot, &t, 1, Some("key-1"), open() + ms(10)).await,
            ClaimOutcome::Replayed(first.clone())
        );
    }
    // Even after the window closed.
    assert_eq!(
        claim_with(&*hot, &t, 1, Some("key-1"), t.claim_end).await,
        ClaimOutcome::Replayed(first.clone())
    );
    assert_eq!(stock(&*hot, &t).await, Some(99));
    // Keys are per user: the same key from another user is another claim.
    let other = claimed(claim_with(&*hot, &t, 2, Some("key-1"), open()).await);
    assert_ne!(other.id, first.id);
    // A new key of the same user is a new claim.
    let second = claimed(claim_with(&*hot, &t, 1, Some("key-2"), open()).await);
    assert_eq!(second.seq, 2);
    assert_eq!(stock(&*hot, &t).await, Some(97));
    assert_durable(
        f,
        &t,
        vec![
            record(&first, Some("key-1")),
            record(&other, Some("key-1")),
            record(&second, Some("key-2")),
        ],
    )
    .await;
}

/// How a claim whose answer was lost learns its outcome: `find_claim` sees exactly the
/// claims made with that (user, key), across a restart too.
pub async fn a_keyed_claim_is_found_by_its_key(f: &dyn HotFixture) {
    let hot = f.hot();
    let t = limited(f, 9, 100, 3).await;
    let u = UserId::new(1).unwrap();
    assert_eq!(hot.find_claim(&t, u, "key-1").await.unwrap(), None);
    let first = claimed(claim_with(&*hot, &t, 1, Some("key-1"), open()).await);
    assert_eq!(
        hot.find_claim(&t, u, "key-1").await.unwrap().map(|c| c.id),
        Some(first.id)
    );
    assert_eq!(hot.find_claim(&t, u, "key-2").await.unwrap(), None);
    let other = UserId::new(2).unwrap();
    assert_eq!(hot.find_claim(&t, other, "key-1").await.unwrap(), None);
    let restarted = f.restart().await;
    assert_eq!(
        restarted
            .find_claim(&t, u, "key-1")
            .await
            .unwrap()
            .map(|c| c.id),
        Some(first.id)
    );
}

pub async fn flash_sale_race_neither_oversells_nor_breaks_the_limit(f: &dyn HotFixture) {
    const CLAIMS: usize = 5_000;
    const USERS: i64 = 1_000;
    let hot = f.hot();
    let t = Arc::new(limited(f, 10, 300, 2).await);

    let outcomes = race(CLAIMS, |i| {
        let (hot, t) = (hot.clone(), t.clone());
        async move {
            let user = 1 + (i as i64 * 7919) % USERS;
            claim(&*hot, &t, user, open()).await
        }
    })
    .await;
    let mut won: Vec<UserCoupon> = Vec::new();
    let (mut sold_out, mut limit) = (0, 0);
    for o in outcomes {
        match o {
            ClaimOutcome::Claimed(c) => won.push(c),
            ClaimOutcome::Refused(ClaimRefusal::SoldOut) => sold_out += 1,
            ClaimOutcome::Refused(ClaimRefusal::LimitReached) => limit += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(won.len(), 300, "exactly the stock is claimed");
    assert_eq!(won.len() + sold_out + limit, CLAIMS);
    let mut per_user: HashMap<_, Vec<u32>> = HashMap::new();
    for c in &won {
        per_user.entry(c.user_id).or_default().push(c.seq);
    }
    for (user, mut seqs) in per_user {
        seqs.sort_unstable();
        assert!(seqs.len() <= 2, "user {user} holds {seqs:?}");
        assert_eq!(
            seqs,
            (1..=seqs.len() as u32).collect::<Vec<_>>(),
            "user {user} seqs"
        );
    }
    let ids: HashSet<_> = won.iter().map(|c| c.id).collect();
    assert_eq!(ids.len(), 300, "unique coupon ids");
    assert_eq!(stock(&*hot, &t).await, Some(0));
    assert!(f.loads() >= 1);
    assert_durable(f, &t, won.iter().map(|c| record(c, None)).collect()).await;
}

/// Read-your-writes: an acknowledged coupon is pending or already in the system of record.
pub async fn an_acknowledged_claim_is_visible_to_its_user_at_once(f: &dyn HotFixture) {
    let (hot, store) = (f.hot(), f.store());
    let t = limited(f, 26, 50, 1).await;
    let other = limited(f, 27, 50, 2).await;
    let c1 = claimed(claim(&*hot, &t, 1, open()).await);
    let c2 = claimed(claim_with(&*hot, &other, 1, Some("k"), open()).await);
    claimed(claim(&*hot, &t, 2, open()).await);
    assert_eq!(
        claim(&*hot, &t, 1, open()).await,
        refused(ClaimRefusal::LimitReached)
    );

    let pending = hot.pending_coupons(uid(1)).await.unwrap();
    for c in [&c1, &c2] {
        let stored = store.get_coupon(c.user_id, c.id).await.unwrap();
        assert!(
            pending.contains(c) || stored.as_ref() == Some(c),
            "coupon {} is neither pending ({pending:?}) nor stored ({stored:?})",
            c.id
        );
    }
    assert!(
        pending.iter().all(|p| *p == c1 || *p == c2),
        "only user 1's acknowledged coupons: {pending:?}"
    );
    assert_eq!(hot.pending_coupons(uid(3)).await.unwrap(), vec![]);
}

pub async fn acknowledged_claims_survive_a_restart(f: &dyn HotFixture) {
    let hot = f.hot();
    let t = limited(f, 12, 10, 2).await;
    let keyed = claimed(claim_with(&*hot, &t, 1, Some("k1"), open()).await);
    assert_eq!(claimed(claim(&*hot, &t, 1, open()).await).seq, 2);
    assert_eq!(claimed(claim(&*hot, &t, 2, open()).await).seq, 1);

    let restarted = f.restart().await;
    assert_eq!(
        claim(&*restarted, &t, 1, open()).await,
        refused(ClaimRefusal::LimitReached)
    );
    assert_eq!(
        claim_with(&*restarted, &t, 1, Some("k1"), open()).await,
        ClaimOutcome::Replayed(keyed)
    );
    assert_eq!(claimed(claim(&*restarted, &t, 2, open()).await).seq, 2);
    assert_eq!(stock(&*restarted, &t).await, Some(6));
}

// ---- Distribution batches --------------------------------------------------------------

pub async fn reserves_in_file_order_with_seqs_and_limits(f: &dyn HotFixture) {
    let hot = f.hot();
    let t = limited(f, 21, 100, 2).await;
    // User 1 is at the limit from earlier claims.
    let mut won = Vec::new();
    for seq in 1..=2 {
        let c = claimed(claim(&*hot, &t, 1, open()).await);
        assert_eq!(c.seq, seq);
        won.push(c);
    }
    assert_eq!(stock(&*hot, &t).await, Some(98));

    let u = users([1, 2, 3, 2, 2, 4, 1]);
    assert_eq!(
        reserve(&*hot, &t, &batch(1, 1, &u), open()).await,
        [
            no(ClaimRefusal::LimitReached),
            ok(1),
            ok(1),
            ok(2),
            no(ClaimRefusal::LimitReached), // user 2 repeated beyond the limit
            ok(1),
            no(ClaimRefusal::LimitReached),
        ]
    );
    assert_eq!(stock(&*hot, &t).await, Some(94));

    // Claims see the batch's counts: seqs continue, limits hold.
    let c = claimed(claim(&*hot, &t, 3, open()).await);
    assert_eq!(c.seq, 2);
    won.push(c);
    assert_eq!(
        claim(&*hot, &t, 2, open()).await,
        refused(ClaimRefusal::LimitReached)
    );
    assert_eq!(stock(&*hot, &t).await, Some(93));
    assert_eq!(
        claim(&*hot, &t, 1, open()).await,
        refused(ClaimRefusal::LimitReached)
    );
    let c = claimed(claim(&*hot, &t, 4, open()).await);
    assert_eq!(c.seq, 2);
    won.push(c);
    assert_eq!(stock(&*hot, &t).await, Some(92));
    // A reservation makes nothing durable (its runner commits the batch); the claims do.
    assert_durable(f, &t, won.iter().map(|c| record(c, None)).collect()).await;

    // An empty batch reserves nothing.
    assert_eq!(reserve(&*hot, &t, &batch(1, 8, &[]), open()).await, []);
    assert_eq!(stock(&*hot, &t).await, Some(92));
}

pub async fn an_empty_batch_reserves_nothing(f: &dyn HotFixture) {
    let hot = f.hot();
    let t = limited(f, 31, 10, 1).await;
    assert_eq!(reserve(&*hot, &t, &batch(1, 1, &[]), open()).await, []);
    // It loads the template all the same.
    assert_eq!(stock(&*hot, &t).await, Some(10));
}

pub async fn a_template_not_loaded_is_loaded_from_the_system_of_record(f: &dyn HotFixture) {
    let hot = f.hot();
    let t = limited(f, 22, 50, 2).await;
    // Stored before the hot state ever saw the template: user 5 holds two (a claim and a
    // distribution coupon), user 6 one distribution coupon.
    f.store()
        .commit_claims(&[
            prior(&t, 5, 1, Origin::Claim, Some("k".into())),
            prior(&t, 5, 2, Origin::Distribution, Some(row_key(did(1), 2))),
            prior(&t, 6, 1, Origin::Distribution, Some(row_key(did(1), 3))),
        ])
        .await
        .unwrap();
    let t = reread(f, &t).await;
    assert_eq!(stock(&*hot, &t).await, None);
    assert_eq!(f.loads(), 0);

    let u = users([5, 6, 6, 7]);
    assert_eq!(
        reserve(&*hot, &t, &batch(2, 1, &u), open()).await,
        [
            no(ClaimRefusal::LimitReached),
            ok(2),
            no(ClaimRefusal::LimitReached),
            ok(1)
        ]
    );
    assert_eq!(stock(&*hot, &t).await, Some(47 - 2));
    assert_eq!(f.loads(), 1);
}

pub async fn sold_out_part_way_in_file_order(f: &dyn HotFixture) {
    let hot = f.hot();
    let t = limited(f, 23, 3, 1).await;
    claimed(claim(&*hot, &t, 9, open()).await);

    let u = users([1, 2, 9, 3, 4, 5, 9]);
    assert_eq!(
        reserve(&*hot, &t, &batch(1, 1, &u), open()).await,
        [
            ok(1),
            ok(1),
            no(ClaimRefusal::LimitReached),
            no(ClaimRefusal::SoldOut),
            no(ClaimRefusal::SoldOut),
            no(ClaimRefusal::SoldOut),
            // The limit is checked before stock, also once sold out.
            no(ClaimRefusal::LimitReached),
        ]
    );
    assert_eq!(stock(&*hot, &t).await, Some(0));
    assert_eq!(
        claim(&*hot, &t, 7, open()).await,
        refused(ClaimRefusal::SoldOut)
    );

    // The sold-out rows took no user slot: after a restock they get their first coupon.
    let t = change(f, &t, TemplateChange::AddStock(2), open()).await;
    assert_eq!(stock(&*hot, &t).await, Some(2));
    assert_eq!(
        reserve(&*hot, &t, &batch(1, 8, &users([3, 1, 4, 5])), open()).await,
        [
            ok(1),
            no(ClaimRefusal::LimitReached),
            ok(1),
            no(ClaimRefusal::SoldOut)
        ]
    );
    assert_eq!(stock(&*hot, &t).await, Some(0));
}

pub async fn status_and_end_refuse_the_whole_batch_but_the_start_does_not(f: &dyn HotFixture) {
    let hot = f.hot();
    let u = users([1, 2, 2]);

    // Terminated while loaded.
    let t = limited(f, 25, 100, 5).await;
    claimed(claim(&*hot, &t, 1, open()).await);
    let terminated = change(f, &t, TemplateChange::Terminate, open()).await;
    assert_eq!(
        reserve(&*hot, &terminated, &batch(1, 1, &u), open()).await,
        [no(ClaimRefusal::Terminated); 3]
    );
    assert_eq!(stock(&*hot, &t).await, Some(99));

    // Terminated before it was ever loaded, the notification lost: loads as terminated.
    let t = limited(f, 26, 100, 5).await;
    let terminated = match f
        .store()
        .change_template(t.id, TemplateChange::Terminate, ACTOR, open())
        .await
        .unwrap()
    {
        ChangeOutcome::Changed(c) => c,
        other => panic!("expected Changed, got {other:?}"),
    };
    assert_eq!(stock(&*hot, &t).await, None);
    assert_eq!(
        reserve(&*hot, &terminated, &batch(1, 1, &u), open()).await,
        [no(ClaimRefusal::Terminated); 3]
    );
    assert_eq!(stock(&*hot, &t).await, Some(100));

    // Ended by the back-office (status), asked with a time still inside the window.
    let t = limited(f, 27, 100, 5).await;
    claimed(claim(&*hot, &t, 1, open()).await);
    let ended = change(f, &t, TemplateChange::End, t.claim_end + ms(1)).await;
    assert_eq!(
        reserve(&*hot, &ended, &batch(1, 1, &u), open()).await,
        [no(ClaimRefusal::Ended); 3]
    );
    assert_eq!(stock(&*hot, &t).await, Some(99));

    // claim_end passed (end exclusive, as for claims); one millisecond earlier reserves.
    let t = limited(f, 28, 100, 5).await;
    assert_eq!(
        reserve(&*hot, &t, &batch(1, 1, &u), t.claim_end).await,
        [no(ClaimRefusal::Ended); 3]
    );
    assert_eq!(
        reserve(&*hot, &t, &batch(1, 1, &u), t.claim_end + hours(1)).await,
        [no(ClaimRefusal::Ended); 3]
    );
    assert_eq!(stock(&*hot, &t).await, Some(100));
    assert_eq!(
        reserve(&*hot, &t, &batch(1, 4, &u), t.claim_end - ms(1)).await,
        [ok(1), ok(1), ok(2)]
    );
    assert_eq!(stock(&*hot, &t).await, Some(97));

    // claim_start in the future: distributions may push before the sale opens.
    let t = limited(f, 29, 100, 5).await;
    let before = t.claim_start - hours(48);
    assert_eq!(
        reserve(&*hot, &t, &batch(1, 1, &u), before).await,
        [ok(1), ok(1), ok(2)]
    );
    assert_eq!(stock(&*hot, &t).await, Some(97));
    assert_eq!(
        claim(&*hot, &t, 3, before).await,
        refused(ClaimRefusal::NotStarted),
        "claims still wait for the start"
    );
}

pub async fn replay_only_without_a_stored_answer_reserves_nothing(f: &dyn HotFixture) {
    let hot = f.hot();
    let t = limited(f, 30, 10, 1).await;
    let u = users([1, 2]);
    // A batch never reserved: no answer, and the template is not even loaded.
    assert_eq!(
        hot.reserve_batch(&t, &replay(1, 1, &u), open())
            .await
            .unwrap(),
        None
    );
    assert_eq!(stock(&*hot, &t).await, None, "not even loaded");
    assert_eq!(f.loads(), 0);

    // Other batches (another first row, another task, an empty one) find nothing either.
    assert_eq!(
        reserve(&*hot, &t, &batch(1, 1, &u), open()).await,
        [ok(1), ok(1)]
    );
    for r in [replay(1, 3, &u), replay(2, 1, &u), replay(1, 5, &[])] {
        assert_eq!(hot.reserve_batch(&t, &r, open()).await.unwrap(), None);
    }
    assert_eq!(stock(&*hot, &t).await, Some(8));
    assert_eq!(
        claim(&*hot, &t, 1, open()).await,
        refused(ClaimRefusal::LimitReached)
    );
    // A miss stores nothing: the batch reserves for real afterwards.
    let late = users([3, 4]);
    assert_eq!(
        reserve(&*hot, &t, &batch(1, 3, &late), open()).await,
        [ok(1), ok(1)]
    );
    assert_eq!(stock(&*hot, &t).await, Some(6));
}

pub async fn refused_stock_goes_back_once_per_batch(f: &dyn HotFixture) {
    let hot = f.hot();
    let t = limited(f, 33, 10, 1).await;
    let u = users(1..=6);
    let rows = reserve(&*hot, &t, &batch(3, 1, &u), open()).await;
    assert_eq!(reserved(&rows), 6);
    assert_eq!(stock(&*hot, &t).await, Some(4));

    hot.return_stock(&t, did(3), 1, 2).await.unwrap();
    assert_eq!(stock(&*hot, &t).await, Some(6));
    for _ in 0..2 {
        hot.return_stock(&t, did(3), 1, 2).await.unwrap();
    }
    assert_eq!(stock(&*hot, &t).await, Some(6), "once per batch");
    // Another batch (or task) is another guard; zero changes nothing and guards nothing.
    hot.return_stock(&t, did(3), 7, 1).await.unwrap();
    hot.return_stock(&t, did(4), 1, 1).await.unwrap();
    hot.return_stock(&t, did(5), 1, 0).await.unwrap();
    assert_eq!(stock(&*hot, &t).await, Some(8));
    hot.return_stock(&t, did(5), 1, 1).await.unwrap();
    assert_eq!(stock(&*hot, &t).await, Some(9));
}

pub async fn returning_stock_to_a_template_not_loaded_changes_nothing(f: &dyn HotFixture) {
    let hot = f.hot();
    let t = limited(f, 35, 10, 1).await;
    hot.return_stock(&t, did(1), 1, 3).await.unwrap();
    assert_eq!(stock(&*hot, &t).await, None, "not loaded by a return");
    // The load reads the stock from the system of record, which never took the coupons off.
    claimed(claim(&*hot, &t, 1, open()).await);
    assert_eq!(stock(&*hot, &t).await, Some(9));
    // The same batch's return again, now that it is loaded: once per batch, so nothing.
    hot.return_stock(&t, did(1), 1, 3).await.unwrap();
    assert_eq!(stock(&*hot, &t).await, Some(9));
}

pub async fn a_full_size_batch_in_one_call(f: &dyn HotFixture) {
    let hot = f.hot();
    let t = limited(f, 36, 4_000, 1).await;
    // Ids beyond 2^53 (a double would round them together).
    let base = 9_007_199_254_740_993_i64;
    let u = users(base..base + 5_000);
    let rows = reserve(&*hot, &t, &batch(1, 1, &u), open()).await;
    assert_eq!(rows.len(), 5_000);
    assert!(rows[..4_000].iter().all(|r| *r == ok(1)));
    assert!(
        rows[4_000..]
            .iter()
            .all(|r| *r == no(ClaimRefusal::SoldOut))
    );
    assert_eq!(stock(&*hot, &t).await, Some(0));
    // Each reserved user holds exactly one, each sold-out one none: after a restock the same
    // file gives exactly the sold-out users their coupon.
    let t = change(f, &t, TemplateChange::AddStock(1_000), open()).await;
    let again = reserve(&*hot, &t, &batch(2, 1, &u), open()).await;
    assert!(
        again[..4_000]
            .iter()
            .all(|r| *r == no(ClaimRefusal::LimitReached))
    );
    assert!(again[4_000..].iter().all(|r| *r == ok(1)));
    assert_eq!(stock(&*hot, &t).await, Some(0));
}

/// Spawns `n` batches of task 1 with 50 users each (users 1..=50n in file order); each
/// answers its users with their rows.
fn spawn_batches(
    hot: &Arc<dyn HotState>,
    t: &Arc<Template>,
    n: u64,
) -> Vec<tokio::task::JoinHandle<Vec<(UserId, RowReservation)>>> {
    (0..n)
        .map(|b| {
            let (hot, t) = (hot.clone(), t.clone());
            tokio::spawn(async move {
                let first = 1 + b * 50;
                let u = users((first as i64)..(first as i64 + 50));
                let rows = reserve(&*hot, &t, &batch(1, first, &u), open()).await;
                u.into_iter().zip(rows).collect()
            })
        })
        .collect()
}

pub async fn batches_and_claims_racing_never_oversell(f: &dyn HotFixture) {
    let hot = f.hot();
    let t = Arc::new(limited(f, 40, 100, 1).await);

    let claims: Vec<_> = (10_001..=10_100)
        .map(|user| {
            let (hot, t) = (hot.clone(), t.clone());
            tokio::spawn(async move { claim(&*hot, &t, user, open()).await })
        })
        .collect();
    // Three batches of 50 users, interleaved with the claims.
    let batches = spawn_batches(&hot, &t, 3);

    let mut won = Vec::new();
    let mut holders = HashSet::new();
    for c in claims {
        match c.await.unwrap() {
            ClaimOutcome::Claimed(c) => {
                assert_eq!(c.seq, 1);
                holders.insert(c.user_id);
                won.push(c);
            }
            ClaimOutcome::Refused(ClaimRefusal::SoldOut) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut reserved_rows = 0;
    for b in batches {
        let rows = b.await.unwrap();
        assert_eq!(rows.len(), 50);
        for (user, r) in &rows {
            match r {
                RowReservation::Reserved { seq: 1 } => {
                    holders.insert(*user);
                    reserved_rows += 1;
                }
                RowReservation::Refused(ClaimRefusal::SoldOut) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(won.len() + reserved_rows, 100, "exactly the stock goes out");
    assert_eq!(stock(&*hot, &t).await, Some(0));
    // The claims are durable; the reservations wait for their runner's commit.
    assert_durable(f, &t, won.iter().map(|c| record(c, None)).collect()).await;

    // Exactly the winners hold a coupon: after a restock everyone else gets one.
    let t = change(f, &t, TemplateChange::AddStock(250), open()).await;
    let everyone = users((1..=150).chain(10_001..=10_100));
    let rows = reserve(&*hot, &t, &batch(2, 1, &everyone), open()).await;
    for (user, row) in everyone.iter().zip(&rows) {
        let want = if holders.contains(user) {
            no(ClaimRefusal::LimitReached)
        } else {
            ok(1)
        };
        assert_eq!(*row, want, "user {user}");
    }
    assert_eq!(stock(&*hot, &t).await, Some(100));
}

pub async fn batches_and_claims_racing_never_break_the_limit(f: &dyn HotFixture) {
    let hot = f.hot();
    let t = Arc::new(limited(f, 41, 1_000, 1).await);

    // The same 200 users claim and are distributed to at once.
    let claims: Vec<_> = (1..=200)
        .map(|user| {
            let (hot, t) = (hot.clone(), t.clone());
            tokio::spawn(async move {
                let won = matches!(
                    claim(&*hot, &t, user, open()).await,
                    ClaimOutcome::Claimed(_)
                );
                (user, won)
            })
        })
        .collect();
    let batches = spawn_batches(&hot, &t, 4);

    let mut held: HashMap<i64, u32> = HashMap::new();
    for c in claims {
        let (user, won) = c.await.unwrap();
        *held.entry(user).or_default() += u32::from(won);
    }
    for b in batches {
        for (user, row) in b.await.unwrap() {
            match row {
                RowReservation::Reserved { seq } => {
                    assert_eq!(seq, 1);
                    *held.entry(user.get()).or_default() += 1;
                }
                RowReservation::Refused(ClaimRefusal::LimitReached) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(held.len(), 200);
    assert!(held.values().all(|&n| n == 1), "{held:?}");
    assert_eq!(stock(&*hot, &t).await, Some(800));
}
