//! `SettlementStore`: locking coupons for an order, redeeming, releasing, refunding, lock
//! expiry, the expiry sweep and the coupons a quote considers. Coupons are stored through
//! `CouponStore::commit_claims`, from a stored template.

use crate::fixtures::*;
use crate::{StoreFixture, SystemOfRecord};
use jiff::{SignedDuration, Timestamp};
use stampede_core::claim_ports::{ClaimRecord, OutboxEvent};
use stampede_core::settlement_ports::{ChangeOutcome, LockOutcome, coupon_event_id};
use stampede_domain::coupon::{CouponStatus, UserCoupon};
use stampede_domain::ids::UserId;
use stampede_domain::money::Money;
use stampede_domain::order::{
    LineStatus, OrderChange, OrderConflict, OrderStatus, Settlement, SettlementLine,
};
use stampede_domain::template::Template;
use std::collections::HashSet;

/// Runs every `SettlementStore` scenario; see the crate docs.
#[macro_export]
macro_rules! settlement_store_suite {
    ($run:path) => {
        mod settlement_store {
            #[allow(unused_imports)]
            use super::*;
            $crate::__scenarios!($run; settlements;
                lock_writes_coupons_order_lines_and_events,
                unusable_coupons_change_nothing,
                concurrent_locks_lock_a_coupon_once,
                redeem_then_refund_some_then_all,
                release_and_lock_expiry,
                changes_are_stored_and_answered_to_the_millisecond,
                expired_locks_oldest_first,
                unused_coupons_soonest_first,
            );
        }
    };
}

pub const LOCKED: &str = "coupon.locked";
const REDEEMED: &str = "coupon.redeemed";
const RELEASED: &str = "coupon.released";
const REFUNDED: &str = "coupon.refunded";

/// The stored template every coupon here comes from: 5.00 off, coupons valid 24 hours from
/// their claim, stock for every scenario.
pub async fn settled(store: &dyn SystemOfRecord) -> Template {
    stocked(store, 500, 9, 100_000).await
}

/// Stores `claims` (with their `coupon.claimed` events) and returns their coupons.
pub async fn stored(store: &dyn SystemOfRecord, claims: Vec<ClaimRecord>) -> Vec<UserCoupon> {
    store.commit_claims(&claims).await.unwrap();
    claims.into_iter().map(|c| c.coupon).collect()
}

/// `user`'s unused coupons `ids`, claimed an hour apart (so their `valid_until`, 24 hours
/// after the claim, differ the same way).
pub async fn coupons(
    store: &dyn SystemOfRecord,
    t: &Template,
    user: i64,
    ids: &[i64],
) -> Vec<UserCoupon> {
    let claims = ids
        .iter()
        .enumerate()
        .map(|(i, id)| claim(t, *id, user, *id as u32, i as i64 * 60))
        .collect();
    stored(store, claims).await
}

/// A locked settlement of `coupons` (500 off each) for `order`, made at `now()`, whose lock
/// expires `expires_in` minutes later.
pub fn settlement(order: &str, coupons: &[&UserCoupon], expires_in: i64) -> Settlement {
    let discount = 500 * coupons.len() as i64;
    Settlement {
        order_id: order.to_owned(),
        user_id: coupons[0].user_id,
        status: OrderStatus::Locked,
        subtotal: Money::parse(20_000).unwrap(),
        discount: Money::parse(discount).unwrap(),
        payable: Money::parse(20_000 - discount).unwrap(),
        lock_expires_at: at(expires_in),
        coupons: coupons
            .iter()
            .map(|c| SettlementLine {
                coupon_id: c.id,
                template_id: c.template_id,
                discount: Money::parse(500).unwrap(),
                status: LineStatus::Locked,
                valid_until: c.valid_until,
            })
            .collect(),
        created_at: now(),
        updated_at: now(),
    }
}

/// The `coupon.locked` events the lock use case writes with `s`.
pub fn lock_events(s: &Settlement) -> Vec<OutboxEvent> {
    s.coupons
        .iter()
        .map(|l| OutboxEvent {
            id: coupon_event_id(LOCKED, l.coupon_id, &s.order_id),
            kind: LOCKED.to_owned(),
            aggregate_id: l.coupon_id.get(),
            payload: format!(r#"{{"coupon_id":"{}"}}"#, l.coupon_id),
            created_at_ms: s.created_at.as_millisecond(),
            // Stored and read back as written (the request's trace).
            traceparent: Some(format!("00-{:032x}-{:016x}-01", 7, l.coupon_id.get())),
        })
        .collect()
}

/// `s` with its lines by coupon id, as the store answers it.
fn sorted(s: &Settlement) -> Settlement {
    let mut s = s.clone();
    s.coupons.sort_by_key(|l| l.coupon_id);
    s
}

/// Locks `s` with its `coupon.locked` events.
pub async fn lock(store: &dyn SystemOfRecord, s: &Settlement) -> LockOutcome {
    store.lock_coupons(s, &lock_events(s)).await.unwrap()
}

async fn locked(store: &dyn SystemOfRecord, s: &Settlement) -> Settlement {
    match lock(store, s).await {
        LockOutcome::Locked(got) => {
            assert_eq!(got, sorted(s));
            assert_eq!(get(store, s).await, got, "the lock answers what it stored");
            got
        }
        other => panic!("{} was not locked: {other:?}", s.order_id),
    }
}

async fn change(
    store: &dyn SystemOfRecord,
    s: &Settlement,
    c: OrderChange,
    at: Timestamp,
) -> ChangeOutcome {
    store
        .change_settlement(&s.order_id, s.user_id, &c, at)
        .await
        .unwrap()
}

async fn changed(
    store: &dyn SystemOfRecord,
    s: &Settlement,
    c: OrderChange,
    at: Timestamp,
) -> Settlement {
    match change(store, s, c.clone(), at).await {
        ChangeOutcome::Changed(after) => {
            assert_eq!(after.updated_at, at);
            assert_eq!(get(store, s).await, after, "{c:?} stored");
            after
        }
        other => panic!("{c:?} of {}: {other:?}", s.order_id),
    }
}

async fn unchanged(store: &dyn SystemOfRecord, s: &Settlement, c: OrderChange, at: Timestamp) {
    match change(store, s, c.clone(), at).await {
        ChangeOutcome::Unchanged(got) => assert_eq!(&got, s, "{c:?}"),
        other => panic!("{c:?} of {} should change nothing: {other:?}", s.order_id),
    }
}

async fn refused(
    store: &dyn SystemOfRecord,
    s: &Settlement,
    c: OrderChange,
    at: Timestamp,
    want: OrderConflict,
) {
    match change(store, s, c.clone(), at).await {
        ChangeOutcome::Refused { conflict, after } => {
            assert_eq!(conflict, want, "{c:?}");
            assert_eq!(&after, s, "{c:?}");
        }
        other => panic!("{c:?} of {} should be refused: {other:?}", s.order_id),
    }
}

async fn get(store: &dyn SystemOfRecord, s: &Settlement) -> Settlement {
    store
        .get_settlement(&s.order_id, Some(s.user_id))
        .await
        .unwrap()
        .unwrap()
}

type CouponState = (CouponStatus, Option<String>, Option<Timestamp>);

/// Status, order and `used_at` of each coupon, as stored.
async fn states(store: &dyn SystemOfRecord, cs: &[&UserCoupon]) -> Vec<CouponState> {
    let mut out = Vec::new();
    for c in cs {
        let c = store.get_coupon(c.user_id, c.id).await.unwrap().unwrap();
        out.push((c.status, c.locked_order_id, c.used_at));
    }
    out
}

async fn events(store: &dyn SystemOfRecord, kind: &str) -> Vec<OutboxEvent> {
    store.outbox_events(kind, 10_000).await.unwrap()
}

/// Every event of every settlement kind, as a set of ids.
async fn settlement_event_ids(store: &dyn SystemOfRecord) -> HashSet<String> {
    let mut ids = HashSet::new();
    for kind in [LOCKED, REDEEMED, RELEASED, REFUNDED] {
        ids.extend(events(store, kind).await.into_iter().map(|e| e.id));
    }
    ids
}

/// Checks the events of `kind` recording `moved` coupons of `s` (now `status`) at `at`.
async fn assert_moved(
    store: &dyn SystemOfRecord,
    kind: &str,
    s: &Settlement,
    moved: &[&UserCoupon],
    status: CouponStatus,
    at: Timestamp,
) {
    let all = events(store, kind).await;
    for c in moved {
        let id = coupon_event_id(kind, c.id, &s.order_id);
        let e = all
            .iter()
            .find(|e| e.id == id)
            .unwrap_or_else(|| panic!("no event {id}"));
        assert_eq!(e.kind, kind);
        assert_eq!(e.aggregate_id, c.id.get());
        assert_eq!(e.created_at_ms, at.as_millisecond());
        let payload: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
        assert_eq!(
            payload,
            serde_json::json!({
                "coupon_id": c.id.to_string(),
                "user_id": c.user_id.to_string(),
                "order_id": s.order_id,
                "template_id": c.template_id.to_string(),
                "status": status.as_str(),
                "at": at.to_string(),
            })
        );
    }
}

fn unused() -> CouponState {
    (CouponStatus::Unused, None, None)
}

fn locked_by(order: &str) -> CouponState {
    (CouponStatus::Locked, Some(order.to_owned()), None)
}

pub async fn lock_writes_coupons_order_lines_and_events(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let t = settled(store).await;
    let cs = coupons(store, &t, 1, &[11, 12, 13]).await;
    let theirs = coupons(store, &t, 2, &[21]).await;
    // Named out of id order: the answer lists them by id.
    let s = settlement("ord-1", &[&cs[1], &cs[0]], 15);
    let s = locked(store, &s).await;
    assert_eq!(
        states(store, &[&cs[0], &cs[1], &cs[2]]).await,
        [locked_by("ord-1"), locked_by("ord-1"), unused()]
    );
    assert_eq!(get(store, &s).await, s);
    assert_eq!(
        store.get_settlement("ord-1", None).await.unwrap(),
        Some(s.clone())
    );
    // Another user's view of the order, and an order nobody made.
    assert_eq!(
        store.get_settlement("ord-1", Some(uid(2))).await.unwrap(),
        None
    );
    assert_eq!(store.get_settlement("ord-404", None).await.unwrap(), None);
    assert_eq!(
        store.get_settlement("ord-404", Some(uid(1))).await.unwrap(),
        None
    );
    let mut locks = events(store, LOCKED).await;
    locks.sort_by_key(|e| e.aggregate_id);
    assert_eq!(locks, lock_events(&s));

    // Again, and with other coupons under the same id: the stored settlement, nothing more.
    for again in [s.clone(), settlement("ord-1", &[&cs[2]], 30)] {
        match lock(store, &again).await {
            LockOutcome::Exists(got) => assert_eq!(got, s),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        states(store, &[&cs[0], &cs[1], &cs[2]]).await,
        [locked_by("ord-1"), locked_by("ord-1"), unused()]
    );
    assert_eq!(events(store, LOCKED).await.len(), 2);
    assert_eq!(get(store, &s).await, s);

    // The id is user 1's: user 2 cannot use it.
    let other = settlement("ord-1", &[&theirs[0]], 15);
    assert!(matches!(lock(store, &other).await, LockOutcome::OtherUser));
    assert_eq!(states(store, &[&theirs[0]]).await, [unused()]);
    assert_eq!(events(store, LOCKED).await.len(), 2);
    assert_eq!(get(store, &s).await, s);

    // Sub-millisecond times are stored, and answered, to the millisecond.
    let mut fine = settlement("ord-2", &[&cs[2]], 15);
    fine.created_at += SignedDuration::from_nanos(123_456);
    fine.updated_at += SignedDuration::from_nanos(654_321);
    fine.lock_expires_at += SignedDuration::from_nanos(999_999);
    let got = match lock(store, &fine).await {
        LockOutcome::Locked(got) => got,
        other => panic!("{other:?}"),
    };
    assert_eq!(got.created_at, now());
    assert_eq!(got.updated_at, now());
    assert_eq!(got.lock_expires_at, at(15));
    assert_eq!(get(store, &fine).await, got);

    // The longest order id: its event ids (`coupon.released:<coupon>:<order>`) fit too.
    let long = "L".repeat(64);
    let more = coupons(store, &t, 1, &[9_007_199_254_740_993]).await;
    let s = locked(store, &settlement(&long, &[&more[0]], 15)).await;
    let when = at(1);
    let s = changed(store, &s, OrderChange::Release, when).await;
    assert_moved(store, RELEASED, &s, &[&more[0]], CouponStatus::Unused, when).await;
}

pub async fn unusable_coupons_change_nothing(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let t = settled(store).await;
    let mut revoked = claim(&t, 14, 1, 4, 0);
    revoked.coupon.status = CouponStatus::Revoked;
    let mut used = claim(&t, 15, 1, 5, 0);
    used.coupon.status = CouponStatus::Used;
    used.coupon.used_at = Some(now());
    let cs = stored(
        store,
        vec![
            claim(&t, 11, 1, 1, 0),
            claim(&t, 12, 1, 2, 0),
            claim(&t, 13, 1, 3, 0),
            revoked,
            used,
        ],
    )
    .await;
    let (a, b, c, gone, spent) = (&cs[0], &cs[1], &cs[2], &cs[3], &cs[4]);
    let theirs = coupons(store, &t, 2, &[21]).await;
    let held = locked(store, &settlement("ord-a", &[a], 15)).await;
    let before = settlement_event_ids(store).await;

    // (coupons named, the one reported, its status, the order holding it)
    let cases = vec![
        // The first unusable one the caller named is reported.
        (vec![b, gone, a], gone.id, Some(CouponStatus::Revoked), None),
        (
            vec![b, a, gone],
            a.id,
            Some(CouponStatus::Locked),
            Some("ord-a"),
        ),
        (vec![c, spent], spent.id, Some(CouponStatus::Used), None),
        // Another user's coupon is not the user's: as if missing.
        (vec![c, &theirs[0]], theirs[0].id, None, None),
    ];
    for (named, coupon_id, status, by) in cases {
        let mut s = settlement("ord-b", &named, 15);
        // The order is user 1's, whoever each coupon belongs to.
        s.user_id = uid(1);
        match lock(store, &s).await {
            LockOutcome::NotUsable {
                coupon_id: got,
                status: got_status,
                locked_by,
            } => {
                assert_eq!(got, coupon_id);
                assert_eq!(got_status, status);
                assert_eq!(locked_by.as_deref(), by);
            }
            other => panic!("{other:?}"),
        }
    }
    // A coupon id nobody holds.
    let mut missing = settlement("ord-b", &[b], 15);
    missing.coupons[0].coupon_id = cid(999_999);
    match lock(store, &missing).await {
        LockOutcome::NotUsable {
            coupon_id,
            status,
            locked_by,
        } => {
            assert_eq!(coupon_id, cid(999_999));
            assert_eq!((status, locked_by), (None, None));
        }
        other => panic!("{other:?}"),
    }

    assert_eq!(
        states(store, &[a, b, c, gone, spent]).await,
        [
            locked_by("ord-a"),
            unused(),
            unused(),
            (CouponStatus::Revoked, None, None),
            (CouponStatus::Used, None, Some(now())),
        ]
    );
    assert_eq!(states(store, &[&theirs[0]]).await, [unused()]);
    assert_eq!(store.get_settlement("ord-b", None).await.unwrap(), None);
    assert_eq!(settlement_event_ids(store).await, before);
    assert_eq!(get(store, &held).await, held);

    // The refused order id stays the user's and can lock usable coupons afterwards.
    locked(store, &settlement("ord-b", &[b, c], 15)).await;
    assert_eq!(
        states(store, &[b, c]).await,
        [locked_by("ord-b"), locked_by("ord-b")]
    );
}

pub async fn concurrent_locks_lock_a_coupon_once(f: &dyn StoreFixture) {
    let store = f.store();
    let t = settled(&*store).await;
    let cs = coupons(&*store, &t, 1, &[11, 12]).await;

    // 20 orders race for one coupon: one gets it, the others see it locked by the winner.
    let c = cs[0].clone();
    let outcomes = race(20, |i| {
        let (store, c) = (store.clone(), c.clone());
        async move {
            let s = settlement(&format!("race-{i}"), &[&c], 15);
            (s.order_id.clone(), lock(&*store, &s).await)
        }
    })
    .await;
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for outcome in outcomes {
        match outcome {
            (order, LockOutcome::Locked(_)) => winners.push(order),
            (_, LockOutcome::NotUsable { locked_by, .. }) => losers.push(locked_by),
            (order, other) => panic!("{order}: {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(losers.len(), 19);
    assert!(losers.iter().all(|by| by.as_ref() == Some(&winners[0])));
    assert_eq!(states(&*store, &[&c]).await, [locked_by(&winners[0])]);
    assert_eq!(events(&*store, LOCKED).await.len(), 1);

    // 20 copies of one lock: one writes it, the others find it.
    let d = cs[1].clone();
    let outcomes = race(20, |_| {
        let (store, d) = (store.clone(), d.clone());
        async move { lock(&*store, &settlement("same", &[&d], 15)).await }
    })
    .await;
    let mut created = 0;
    for outcome in outcomes {
        match outcome {
            LockOutcome::Locked(_) => created += 1,
            LockOutcome::Exists(s) => assert_eq!(s, settlement("same", &[&d], 15)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(states(&*store, &[&d]).await, [locked_by("same")]);
    assert_eq!(events(&*store, LOCKED).await.len(), 2);
}

pub async fn redeem_then_refund_some_then_all(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let t = settled(store).await;
    // Valid until now() + 24 h and + 25 h.
    let cs = coupons(store, &t, 1, &[11, 12]).await;
    let (a, b) = (&cs[0], &cs[1]);
    let s = locked(store, &settlement("ord-1", &[a, b], 15)).await;

    let t1 = at(1);
    let s = changed(store, &s, OrderChange::Redeem, t1).await;
    assert_eq!(s.status, OrderStatus::Redeemed);
    assert!(s.coupons.iter().all(|l| l.status == LineStatus::Redeemed));
    let used = (CouponStatus::Used, None, Some(t1));
    assert_eq!(states(store, &[a, b]).await, [used.clone(), used.clone()]);
    assert_moved(store, REDEEMED, &s, &[a, b], CouponStatus::Used, t1).await;

    // Repeats change nothing; conflicts are refused with nothing written.
    let written = settlement_event_ids(store).await;
    unchanged(store, &s, OrderChange::Redeem, at(3)).await;
    // Even past the lock's expiry: the order is redeemed, the lock no longer matters.
    unchanged(store, &s, OrderChange::Redeem, at(30)).await;
    refused(
        store,
        &s,
        OrderChange::Release,
        at(3),
        OrderConflict::CannotRelease("redeemed"),
    )
    .await;
    let stranger = cid(404);
    refused(
        store,
        &s,
        OrderChange::Refund(Some(vec![a.id, stranger])),
        at(3),
        OrderConflict::NotInOrder(stranger),
    )
    .await;
    refused(
        store,
        &s,
        OrderChange::Refund(Some(vec![stranger])),
        at(3),
        OrderConflict::NotInOrder(stranger),
    )
    .await;
    unchanged(store, &s, OrderChange::Expire, now() + hours(2)).await;
    assert_eq!(get(store, &s).await, s);
    assert_eq!(states(store, &[a, b]).await, [used.clone(), used.clone()]);
    assert_eq!(settlement_event_ids(store).await, written);

    // One coupon back, then (past the second's validity) the rest, which comes back expired.
    let t2 = at(5);
    let s = changed(store, &s, OrderChange::Refund(Some(vec![a.id])), t2).await;
    assert_eq!(s.status, OrderStatus::Redeemed);
    assert_eq!(
        s.coupons.iter().map(|l| l.status).collect::<Vec<_>>(),
        [LineStatus::Refunded, LineStatus::Redeemed]
    );
    assert_eq!(states(store, &[a, b]).await, [unused(), used.clone()]);
    assert_moved(store, REFUNDED, &s, &[a], CouponStatus::Unused, t2).await;
    unchanged(store, &s, OrderChange::Refund(Some(vec![a.id])), t2).await;
    assert_eq!(events(store, REFUNDED).await.len(), 1);

    let t3 = b.valid_until + mins(1);
    let s = changed(store, &s, OrderChange::Refund(None), t3).await;
    assert_eq!(s.status, OrderStatus::Refunded);
    assert!(s.coupons.iter().all(|l| l.status == LineStatus::Refunded));
    assert_eq!(
        states(store, &[a, b]).await,
        [unused(), (CouponStatus::Expired, None, None)]
    );
    assert_moved(store, REFUNDED, &s, &[b], CouponStatus::Expired, t3).await;
    assert_eq!(events(store, REFUNDED).await.len(), 2);
    unchanged(store, &s, OrderChange::Refund(None), t3).await;
    unchanged(store, &s, OrderChange::Redeem, t3).await;
    refused(
        store,
        &s,
        OrderChange::Release,
        t3,
        OrderConflict::CannotRelease("refunded"),
    )
    .await;
    assert_eq!(events(store, REFUNDED).await.len(), 2);

    // A refunded coupon can go to a new order; an expired one cannot.
    locked(store, &settlement("ord-2", &[a], 15)).await;
    assert_eq!(states(store, &[a]).await, [locked_by("ord-2")]);
    match lock(store, &settlement("ord-3", &[b], 15)).await {
        LockOutcome::NotUsable {
            coupon_id, status, ..
        } => {
            assert_eq!(coupon_id, b.id);
            assert_eq!(status, Some(CouponStatus::Expired));
        }
        other => panic!("{other:?}"),
    }
}

pub async fn release_and_lock_expiry(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let t = settled(store).await;
    let cs = coupons(store, &t, 1, &[11, 12, 13]).await;
    let (a, b, c) = (&cs[0], &cs[1], &cs[2]);

    // Released by the order service.
    let s = locked(store, &settlement("ord-1", &[a, b], 15)).await;
    refused(
        store,
        &s,
        OrderChange::Refund(None),
        at(1),
        OrderConflict::CannotRefund("locked"),
    )
    .await;
    // The expiry job before the deadline: nothing to do.
    unchanged(store, &s, OrderChange::Expire, at(14)).await;
    unchanged(
        store,
        &s,
        OrderChange::Expire,
        s.lock_expires_at - SignedDuration::from_millis(1),
    )
    .await;
    assert_eq!(events(store, RELEASED).await.len(), 0);
    assert_eq!(
        states(store, &[a, b]).await,
        [locked_by("ord-1"), locked_by("ord-1")]
    );
    let t1 = at(2);
    let s = changed(store, &s, OrderChange::Release, t1).await;
    assert_eq!(s.status, OrderStatus::Released);
    assert!(s.coupons.iter().all(|l| l.status == LineStatus::Released));
    assert_eq!(states(store, &[a, b]).await, [unused(), unused()]);
    assert_moved(store, RELEASED, &s, &[a, b], CouponStatus::Unused, t1).await;
    let written = settlement_event_ids(store).await;
    unchanged(store, &s, OrderChange::Release, at(3)).await;
    unchanged(store, &s, OrderChange::Expire, at(30)).await;
    refused(
        store,
        &s,
        OrderChange::Redeem,
        at(3),
        OrderConflict::CannotRedeem("released"),
    )
    .await;
    refused(
        store,
        &s,
        OrderChange::Refund(None),
        at(3),
        OrderConflict::CannotRefund("released"),
    )
    .await;
    assert_eq!(settlement_event_ids(store).await, written);
    assert_eq!(states(store, &[a, b]).await, [unused(), unused()]);
    assert_eq!(get(store, &s).await, s);

    // Released by the expiry job, at its lock_expires_at.
    let s2 = locked(store, &settlement("ord-2", &[a], 10)).await;
    let s2 = changed(store, &s2, OrderChange::Expire, s2.lock_expires_at).await;
    assert_eq!(s2.status, OrderStatus::Released);
    assert_eq!(states(store, &[a]).await, [unused()]);
    assert_moved(
        store,
        RELEASED,
        &s2,
        &[a],
        CouponStatus::Unused,
        s2.updated_at,
    )
    .await;

    // Redeemed too late: refused, and the coupons are released in the same transaction.
    let s3 = locked(store, &settlement("ord-3", &[b, c], 10)).await;
    let late = s3.lock_expires_at + mins(1);
    match change(store, &s3, OrderChange::Redeem, late).await {
        ChangeOutcome::Refused { conflict, after } => {
            assert_eq!(conflict, OrderConflict::LockExpired(s3.lock_expires_at));
            assert_eq!(after.status, OrderStatus::Released);
            assert!(
                after
                    .coupons
                    .iter()
                    .all(|l| l.status == LineStatus::Released)
            );
            assert_eq!(after.updated_at, late);
            assert_eq!(get(store, &s3).await, after);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(states(store, &[b, c]).await, [unused(), unused()]);
    assert_moved(store, RELEASED, &s3, &[b, c], CouponStatus::Unused, late).await;
    assert!(
        events(store, REDEEMED).await.is_empty(),
        "nothing was redeemed"
    );
    // Released now: the expiry job finds nothing more to do, a redeem is refused as released.
    let s3 = get(store, &s3).await;
    unchanged(store, &s3, OrderChange::Expire, late + mins(1)).await;
    refused(
        store,
        &s3,
        OrderChange::Redeem,
        late + mins(1),
        OrderConflict::CannotRedeem("released"),
    )
    .await;
    // Redeemed exactly at the deadline: too late as well.
    let s4 = locked(store, &settlement("ord-4", &[c], 20)).await;
    match change(store, &s4, OrderChange::Redeem, s4.lock_expires_at).await {
        ChangeOutcome::Refused { conflict, after } => {
            assert_eq!(conflict, OrderConflict::LockExpired(s4.lock_expires_at));
            assert_eq!(after.status, OrderStatus::Released);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(states(store, &[c]).await, [unused()]);
    assert_eq!(events(store, RELEASED).await.len(), 6);

    // Unknown orders, or another user's: not found.
    let mut ghost = s3.clone();
    ghost.order_id = "ord-404".to_owned();
    assert!(matches!(
        change(store, &ghost, OrderChange::Release, late).await,
        ChangeOutcome::NotFound
    ));
    let mut theirs = s3.clone();
    theirs.user_id = uid(2);
    assert!(matches!(
        change(store, &theirs, OrderChange::Release, late).await,
        ChangeOutcome::NotFound
    ));
}

pub async fn changes_are_stored_and_answered_to_the_millisecond(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let t = settled(store).await;
    let cs = coupons(store, &t, 1, &[11]).await;
    let s = locked(store, &settlement("ord-1", &[&cs[0]], 15)).await;

    // A clock with sub-millisecond precision: the answer is what a read gives afterwards.
    let when = at(1) + SignedDuration::from_nanos(456_789);
    let when_ms = at(1);
    match change(store, &s, OrderChange::Redeem, when).await {
        ChangeOutcome::Changed(after) => {
            assert_eq!(after.updated_at, when_ms);
            assert_eq!(get(store, &s).await, after);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        states(store, &[&cs[0]]).await,
        [(CouponStatus::Used, None, Some(when_ms))]
    );
    let s = get(store, &s).await;
    assert_moved(store, REDEEMED, &s, &[&cs[0]], CouponStatus::Used, when_ms).await;
}

pub async fn expired_locks_oldest_first(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let t = settled(store).await;
    // User u locks order "exp-u", expiring u minutes after now(); users 1..=16 (so several
    // shards where there are shards), locked in reverse so neither insertion nor id order
    // matches expiry order by accident.
    let users: Vec<i64> = (1..=16).collect();
    let mut orders = Vec::new();
    for &u in users.iter().rev() {
        let cs = coupons(store, &t, u, &[u * 100]).await;
        orders.push(locked(store, &settlement(&format!("exp-{u:02}"), &[&cs[0]], u)).await);
    }
    orders.reverse();
    // Two of the expired ones are no longer locked.
    changed(store, &orders[1], OrderChange::Redeem, at(1)).await;
    changed(store, &orders[4], OrderChange::Release, at(1)).await;

    let want = |upto: i64| -> Vec<(String, UserId)> {
        users
            .iter()
            .filter(|u| **u <= upto && ![2, 5].contains(*u))
            .map(|u| (format!("exp-{u:02}"), uid(*u)))
            .collect()
    };
    let expired = async |when, limit| store.expired_locks(when, limit).await.unwrap();
    let at10 = at(10);
    assert_eq!(expired(at10, 100).await, want(10));
    assert_eq!(expired(at10, 3).await, want(4));
    // At the deadline itself, not a millisecond before.
    assert_eq!(expired(at(1), 100).await, want(1));
    assert!(
        expired(at(1) - SignedDuration::from_millis(1), 100)
            .await
            .is_empty()
    );
    assert_eq!(expired(at(16), 100).await, want(16));
    assert_eq!(expired(at(16), 100).await.len(), 14);
    assert!(expired(now(), 100).await.is_empty());
    assert!(expired(at10, 0).await.is_empty());

    // Once the job expires them, they are no longer listed.
    changed(store, &orders[0], OrderChange::Expire, at10).await;
    changed(store, &orders[2], OrderChange::Expire, at10).await;
    assert_eq!(expired(at10, 2).await, want(10)[2..4].to_vec());
}

pub async fn unused_coupons_soonest_first(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let t = settled(store).await;
    // Claimed in reverse id order, so valid_until and id order differ; 15 and 16 tie.
    let mut claims: Vec<ClaimRecord> = (11..=16)
        .map(|id| claim(&t, id, 1, id as u32, (16 - id.min(15)) * 60))
        .collect();
    claims[2].coupon.status = CouponStatus::Revoked;
    claims[3].coupon.status = CouponStatus::Expired;
    claims.push(claim(&t, 31, 3, 1, 0));
    claims.push(claim(&t, 18, 1, 18, 0));
    let cs = stored(store, claims).await;
    // One locked by an order, one used; one unused but past its validity, still stored as
    // unused.
    locked(store, &settlement("ord-1", &[&cs[0]], 15)).await;
    let s = locked(store, &settlement("ord-2", &[&cs[7]], 15)).await;
    changed(store, &s, OrderChange::Redeem, at(1)).await;
    let stale = stored(store, vec![claim(&t, 17, 1, 17, -48 * 60)])
        .await
        .remove(0);
    assert!(stale.valid_until < now());

    let ids = async |user, limit| -> Vec<i64> {
        let got = store.unused_coupons(uid(user), limit).await.unwrap();
        got.iter().map(|c| c.id.get()).collect()
    };
    let got = store.unused_coupons(uid(1), 100).await.unwrap();
    let got_ids: Vec<i64> = got.iter().map(|c| c.id.get()).collect();
    assert_eq!(got_ids, [17, 15, 16, 12]);
    assert_eq!(got[0], stale);
    assert_eq!(got[1], cs[4]);
    assert_eq!(got[3], cs[1]);
    assert_eq!(ids(1, 2).await, [17, 15]);
    assert!(ids(1, 0).await.is_empty());
    assert!(ids(2, 10).await.is_empty());
    assert_eq!(ids(3, 10).await, [31]);
}
