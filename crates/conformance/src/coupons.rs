//! `CouponStore`: the embedded group commit (coupons, stock and outbox events all or nothing),
//! the claim state hot state is rebuilt from, "my coupons" with its keyset cursor, and the
//! outbox.

use crate::StoreFixture;
use crate::fixtures::*;
use stampede_core::claim_ports::{ClaimIndex, ClaimRecord, CouponQuery, OutboxBacklog};
use stampede_core::events::claimed_event_payload;
use stampede_core::ports::StoreError;
use stampede_domain::coupon::{CouponStatus, Origin, UserCoupon};
use stampede_domain::ids::{CouponId, UserId};
use stampede_domain::template::Template;
use stampede_domain::time::to_ms;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Runs every `CouponStore` scenario; see the crate docs.
#[macro_export]
macro_rules! coupon_store_suite {
    ($run:path) => {
        mod coupon_store {
            #[allow(unused_imports)]
            use super::*;
            $crate::__scenarios!($run; coupons;
                commit_claims_writes_coupons_stock_and_events_in_one_go,
                a_failing_batch_writes_nothing,
                claim_state_counts_users_and_returns_keyed_coupons,
                claim_state_counts_coupons_of_every_origin,
                claim_index_is_the_claim_state_without_coupons,
                list_coupons_orders_pages_and_filters,
                get_coupon_is_scoped_to_its_owner,
                claimed_counts_per_template_match_stock,
                outbox_backlog_counts_unpublished_events_from_the_oldest,
            );
        }
    };
}

pub async fn commit_claims_writes_coupons_stock_and_events_in_one_go(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let templates = [
        stocked(store, 11, 1, 5_000).await,
        stocked(store, 12, 2, 5_000).await,
        stocked(store, 13, 3, 5_000).await,
    ];
    // 3,000 claims: 1,500 / 1,000 / 500 per template, 700 users, every third one keyed.
    let mut seqs: HashMap<(i64, i64), u32> = HashMap::new();
    let mut claims = Vec::new();
    for i in 0..3_000i64 {
        let t = &templates[match i % 6 {
            0..=2 => 0,
            3 | 4 => 1,
            _ => 2,
        }];
        let user = 1 + i % 700;
        let seq = seqs.entry((user, t.id.get())).or_insert(0);
        *seq += 1;
        let c = claim(t, 1_000_000 + i, user, *seq, i % 90);
        let mut c = if i % 3 == 0 {
            keyed(c, &format!("key-{i}"))
        } else {
            c
        };
        if i % 5 == 0 {
            c.traceparent = Some(format!("00-{:032x}-{:016x}-01", i + 1, i + 1));
        }
        claims.push(c);
    }
    store.commit_claims(&claims).await.unwrap();

    for c in &claims {
        let got = store
            .get_coupon(c.coupon.user_id, c.coupon.id)
            .await
            .unwrap();
        assert_eq!(got.as_ref(), Some(&c.coupon));
    }
    for (t, n) in templates.iter().zip([1_500, 1_000, 500]) {
        assert_eq!(stock_of(store, t).await, 5_000 - n, "template {}", t.id);
    }

    let events = claimed_events(store).await;
    assert_eq!(events.len(), claims.len());
    let by_id: HashMap<&str, _> = events.iter().map(|e| (e.id.as_str(), e)).collect();
    assert_eq!(by_id.len(), claims.len(), "one event per coupon");
    for c in &claims {
        let e = by_id[format!("coupon.claimed:{}", c.coupon.id).as_str()];
        assert_eq!(e.kind, "coupon.claimed");
        assert_eq!(e.aggregate_id, c.coupon.id.get());
        assert_eq!(e.payload, claimed_event_payload(&c.coupon));
        assert_eq!(e.created_at_ms, to_ms(c.coupon.claimed_at));
        assert_eq!(e.traceparent, c.traceparent, "the claim request's trace");
    }
    // Oldest first: a smaller limit gives a prefix of the same listing, led by the oldest.
    let first = store.outbox_events("coupon.claimed", 5).await.unwrap();
    assert_eq!(first, events[..5]);
    let oldest = events.iter().map(|e| e.created_at_ms).min();
    assert_eq!(Some(first[0].created_at_ms), oldest);
    assert!(
        store
            .outbox_events("coupon.locked", 10)
            .await
            .unwrap()
            .is_empty()
    );
    // An empty batch is fine and writes nothing.
    store.commit_claims(&[]).await.unwrap();
    assert_eq!(claimed_events(store).await.len(), 3_000);
}

pub async fn a_failing_batch_writes_nothing(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let a = stocked(store, 21, 1, 1_000).await;
    let b = stocked(store, 22, 2, 1_000).await;
    store
        .commit_claims(&[claim(&a, 1, 1, 1, 0), keyed(claim(&b, 2, 1, 1, 0), "k1")])
        .await
        .unwrap();

    // 600 good claims over many users (every shard) and several INSERT chunks, then one
    // that breaks the batch.
    let good: Vec<ClaimRecord> = (0..600)
        .map(|i| claim(if i % 2 == 0 { &a } else { &b }, 100 + i, 10 + i, 1, 0))
        .collect();
    let breakers = [
        // Same (user, template, seq) as a claim earlier in the batch.
        claim(&a, 9_001, 10, 1, 0),
        // Same (user, template, seq) as a stored coupon.
        claim(&a, 9_002, 1, 1, 0),
        // Same claim key as a stored coupon of the same user and template.
        keyed(claim(&b, 9_003, 1, 2, 0), "k1"),
    ];
    for breaker in breakers {
        let mut batch = good.clone();
        batch.push(breaker.clone());
        let got = store.commit_claims(&batch).await;
        assert!(
            matches!(got, Err(StoreError::Duplicate(_))),
            "{breaker:?}: {got:?}"
        );
        for c in &good {
            assert_eq!(
                store
                    .get_coupon(c.coupon.user_id, c.coupon.id)
                    .await
                    .unwrap(),
                None
            );
        }
        assert_eq!(
            (stock_of(store, &a).await, stock_of(store, &b).await),
            (999, 999)
        );
        assert_eq!(claimed_events(store).await.len(), 2);
    }

    // Claims of a template no one created write nothing either.
    let ghost = Template {
        id: tid(99),
        ..a.clone()
    };
    let mut batch = good.clone();
    batch.push(claim(&ghost, 9_004, 1, 1, 0));
    assert!(store.commit_claims(&batch).await.is_err());
    assert_eq!(claimed_events(store).await.len(), 2);
    assert_eq!(stock_of(store, &a).await, 999);

    // The store is healthy afterwards: the good claims alone commit.
    store.commit_claims(&good).await.unwrap();
    assert_eq!(
        (stock_of(store, &a).await, stock_of(store, &b).await),
        (699, 699)
    );
    assert_eq!(claimed_events(store).await.len(), 602);
}

pub async fn claim_state_counts_users_and_returns_keyed_coupons(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let a = stocked(store, 31, 7, 100).await;
    let b = stocked(store, 32, 7, 100).await;
    // One key may be used by two users: keys are the user's own.
    let k1 = keyed(claim(&a, 1, 5, 1, 0), "first");
    let k2 = keyed(claim(&a, 2, 5, 2, 0), "second");
    let k3 = keyed(claim(&a, 3, 6, 1, 0), "first");
    // User 7 holds seq 3 alone (a gap left by claims that failed): the seqs come back as
    // stored, not renumbered.
    let mut distributed = claim(&a, 4, 7, 3, 0);
    distributed.coupon.origin = Origin::Distribution;
    store
        .commit_claims(&[
            k1.clone(),
            k2.clone(),
            claim(&a, 5, 5, 3, 0),
            k3.clone(),
            distributed,
            keyed(claim(&b, 6, 5, 1, 0), "other template"),
            claim(&b, 7, 8, 1, 0),
        ])
        .await
        .unwrap();

    let mut state = store.claim_state(a.id).await.unwrap();
    assert_eq!(state.user_counts(), [(uid(5), 3), (uid(6), 1), (uid(7), 1)]);
    state.user_seqs.sort();
    assert_eq!(
        state.user_seqs,
        [
            (uid(5), 1),
            (uid(5), 2),
            (uid(5), 3),
            (uid(6), 1),
            (uid(7), 3)
        ]
    );
    state.keyed.sort_by_key(|(_, c)| c.id);
    assert_eq!(
        state.keyed,
        [
            ("first".to_owned(), k1.coupon),
            ("second".to_owned(), k2.coupon),
            ("first".to_owned(), k3.coupon),
        ]
    );
    let empty = store.claim_state(tid(404)).await.unwrap();
    assert!(empty.user_seqs.is_empty() && empty.keyed.is_empty());
}

pub async fn claim_index_is_the_claim_state_without_coupons(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let a = stocked(store, 31, 7, 100).await;
    let b = stocked(store, 32, 7, 100).await;
    let mut distributed = keyed(claim(&a, 4, 7, 3, 0), "dist 9 7");
    distributed.coupon.origin = Origin::Distribution;
    store
        .commit_claims(&[
            keyed(claim(&a, 1, 5, 1, 0), "first"),
            keyed(claim(&a, 2, 5, 2, 0), "second"),
            claim(&a, 5, 5, 3, 0),
            keyed(claim(&a, 3, 6, 1, 0), "first"),
            distributed,
            keyed(claim(&b, 6, 5, 1, 0), "other template"),
        ])
        .await
        .unwrap();
    let mut index = store.claim_index(a.id).await.unwrap();
    index.user_seqs.sort();
    index.keyed.sort();
    let mut want = ClaimIndex::from(store.claim_state(a.id).await.unwrap());
    want.user_seqs.sort();
    want.keyed.sort();
    assert_eq!(index, want);
    // Only claims' keys: a distribution's row key is not a client's Idempotency-Key.
    assert_eq!(
        index.keyed,
        [
            (uid(5), "first".to_owned(), cid(1)),
            (uid(5), "second".to_owned(), cid(2)),
            (uid(6), "first".to_owned(), cid(3)),
        ]
    );
    assert_eq!(index.user_seqs.len(), 5);
    let empty = store.claim_index(tid(404)).await.unwrap();
    assert!(empty.user_seqs.is_empty() && empty.keyed.is_empty());
}

pub async fn claim_state_counts_coupons_of_every_origin(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let a = stocked(store, 31, 1, 1_000).await;
    let b = stocked(store, 32, 2, 1_000).await;
    let mut claims = Vec::new();
    let mut want_keyed = Vec::new();
    // Users 1..=40 (over every shard) hold (user % 3) + 1 coupons of `a`; even users' first
    // one is keyed, every second one came from a distribution.
    for user in 1..=40i64 {
        for seq in 1..=(user % 3 + 1) as u32 {
            let id = user * 100 + i64::from(seq);
            let mut c = claim(&a, id, user, seq, 0);
            if seq == 1 && user % 2 == 0 {
                c = keyed(c, &format!("u{user}"));
                want_keyed.push((format!("u{user}"), c.coupon.clone()));
            }
            if seq == 2 {
                c.coupon.origin = Origin::Distribution;
            }
            claims.push(c);
        }
        claims.push(keyed(claim(&b, 90_000 + user, user, 1, 0), "b"));
    }
    store.commit_claims(&claims).await.unwrap();

    let mut state = store.claim_state(a.id).await.unwrap();
    let want_counts: Vec<(UserId, u32)> = (1..=40).map(|u| (uid(u), (u % 3 + 1) as u32)).collect();
    assert_eq!(state.user_counts(), want_counts);
    state.user_seqs.sort();
    let want_seqs: Vec<(UserId, u32)> = (1..=40)
        .flat_map(|u| (1..=(u % 3 + 1) as u32).map(move |seq| (uid(u), seq)))
        .collect();
    assert_eq!(state.user_seqs, want_seqs);
    state.keyed.sort_by_key(|(_, c)| c.id);
    assert_eq!(state.keyed, want_keyed);
}

/// The listing the port defines, computed in memory.
fn expected_listing(
    all: &[UserCoupon],
    user: UserId,
    status: Option<CouponStatus>,
    now: jiff::Timestamp,
) -> Vec<UserCoupon> {
    let mut want: Vec<UserCoupon> = all
        .iter()
        .filter(|c| c.user_id == user && status.is_none_or(|s| c.effective_status(now) == s))
        .cloned()
        .collect();
    want.sort_by_key(|c| (c.valid_until, c.id));
    want
}

/// Pages through a listing `page` items at a time, following the keyset cursor.
async fn list_all(
    f: &dyn StoreFixture,
    user: UserId,
    status: Option<CouponStatus>,
    now: jiff::Timestamp,
    page: u32,
) -> Vec<UserCoupon> {
    let s = f.store();
    let mut out: Vec<UserCoupon> = Vec::new();
    let mut after = None;
    loop {
        let q = CouponQuery {
            user_id: user,
            status,
            limit: page,
            after,
            now,
        };
        let items = s.list_coupons(&q).await.unwrap();
        assert!(items.len() <= page as usize);
        let Some(last) = items.last() else { break };
        after = Some((to_ms(last.valid_until), last.id.get()));
        let done = items.len() < page as usize;
        out.extend(items);
        if done {
            break;
        }
    }
    out
}

pub async fn list_coupons_orders_pages_and_filters(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let a = stocked(store, 41, 1, 1_000).await;
    let b = stocked(store, 42, 2, 1_000).await;
    let statuses = [
        CouponStatus::Unused,
        CouponStatus::Unused,
        CouponStatus::Locked,
        CouponStatus::Used,
        CouponStatus::Expired,
        CouponStatus::Revoked,
    ];
    let mut claims = Vec::new();
    for i in 0..60i64 {
        let t = if i % 2 == 0 { &a } else { &b };
        // Groups of three share a claim time, so ties on valid_until are broken by id, and
        // ids run against time so id order is not claim order.
        let mut c = claim(t, 10_000 - i, 1, (i / 2 + 1) as u32, (i / 3) * 60);
        c.coupon.status = statuses[(i % 6) as usize];
        claims.push(c);
    }
    // Other users' coupons (on other shards, or the same one) never show up.
    for u in 2..=12 {
        claims.push(claim(&a, 20_000 + u, u, 1, u * 60));
    }
    store.commit_claims(&claims).await.unwrap();
    let all: Vec<UserCoupon> = claims.iter().map(|c| c.coupon.clone()).collect();

    // Coupons are valid 24 h from claims spread over 20 hours: about half are past due.
    let now = now() + hours(34) + jiff::SignedDuration::from_millis(1);
    let unused = |past: bool| {
        all.iter().any(|c| {
            c.user_id == uid(1)
                && c.status == CouponStatus::Unused
                && (c.valid_until <= now) == past
        })
    };
    assert!(unused(true) && unused(false));

    for status in [
        None,
        Some(CouponStatus::Unused),
        Some(CouponStatus::Expired),
        Some(CouponStatus::Locked),
        Some(CouponStatus::Used),
        Some(CouponStatus::Revoked),
    ] {
        let want = expected_listing(&all, uid(1), status, now);
        assert!(!want.is_empty(), "{status:?}");
        for page in [1, 7, 60, 100] {
            assert_eq!(
                list_all(f, uid(1), status, now, page).await,
                want,
                "{status:?}, page {page}"
            );
        }
    }
    let everything = list_all(f, uid(1), None, now, 7).await;
    let unique: HashSet<CouponId> = everything.iter().map(|c| c.id).collect();
    assert_eq!((everything.len(), unique.len()), (60, 60));

    // A cursor past the end, a zero limit, a user without coupons.
    let q = CouponQuery {
        user_id: uid(1),
        status: None,
        limit: 10,
        after: Some((i64::MAX, 0)),
        now,
    };
    assert!(store.list_coupons(&q).await.unwrap().is_empty());
    let q = CouponQuery {
        after: None,
        limit: 0,
        ..q
    };
    assert!(store.list_coupons(&q).await.unwrap().is_empty());
    let q = CouponQuery {
        user_id: uid(999),
        limit: 10,
        ..q
    };
    assert!(store.list_coupons(&q).await.unwrap().is_empty());
}

pub async fn get_coupon_is_scoped_to_its_owner(f: &dyn StoreFixture) {
    let s = f.store();
    let a = stocked(&*s, 51, 1, 10).await;
    let c = claim(&a, 77, 1, 1, 0);
    s.commit_claims(std::slice::from_ref(&c)).await.unwrap();
    assert_eq!(
        s.get_coupon(uid(1), c.coupon.id).await.unwrap(),
        Some(c.coupon.clone())
    );
    // Twenty other users: on other shards and on the owner's, whatever the layout.
    for other in 2..=21 {
        assert_eq!(s.get_coupon(uid(other), c.coupon.id).await.unwrap(), None);
    }
    assert_eq!(s.get_coupon(uid(1), cid(78)).await.unwrap(), None);
}

pub async fn claimed_counts_per_template_match_stock(f: &dyn StoreFixture) {
    // Many batches of the sizes the group commit makes keep stock and coupons in step.
    let s = f.store();
    let a = stocked(&*s, 61, 7, 10_000).await;
    let mut id = 0;
    let mut per_user: BTreeMap<i64, u32> = BTreeMap::new();
    for batch_len in [1usize, 2, 3, 255, 256, 257, 511, 1_000] {
        let batch: Vec<ClaimRecord> = (0..batch_len)
            .map(|_| {
                id += 1;
                let user = 1 + id % 37;
                let seq = per_user.entry(user).or_insert(0);
                *seq += 1;
                claim(&a, id, user, *seq, 0)
            })
            .collect();
        s.commit_claims(&batch).await.unwrap();
    }
    let total: i64 = id;
    assert_eq!(stock_of(&*s, &a).await, 10_000 - total);
    let state = s.claim_state(a.id).await.unwrap();
    assert_eq!(state.user_seqs.len() as i64, total);
    assert_eq!(claimed_events(&*s).await.len() as i64, total);
}

pub async fn outbox_backlog_counts_unpublished_events_from_the_oldest(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    assert_eq!(
        store.outbox_backlog().await.unwrap(),
        OutboxBacklog::default(),
        "an empty outbox has no backlog"
    );
    let t = stocked(store, 61, 6, 1_000).await;
    // Only the claims below count (the template's own `template.created` is published).
    crate::outbox::set_aside_earlier_events(store).await;
    // 40 users spread over every shard; the first batch is older than the second.
    let first: Vec<ClaimRecord> = (0..25)
        .map(|i| claim(&t, 6_100 + i, 600 + i, 1, 5))
        .collect();
    let second: Vec<ClaimRecord> = (25..40)
        .map(|i| claim(&t, 6_100 + i, 600 + i, 1, 30))
        .collect();
    store.commit_claims(&first).await.unwrap();
    store.commit_claims(&second).await.unwrap();
    let backlog = store.outbox_backlog().await.unwrap();
    assert_eq!(backlog.events, 40);
    assert_eq!(
        backlog.oldest_created_ms,
        Some(to_ms(first[0].coupon.claimed_at)),
        "the oldest unpublished event's time"
    );
}
