//! `CouponStore`: the group commit, claim state, "my coupons" and the outbox, plus
//! `TemplateStore::template_ids`.

use crate::helpers::*;
use jiff::Timestamp;
use stampede_core::claim_ports::{ClaimRecord, CouponQuery, CouponStore};
use stampede_core::ports::{StoreError, TemplateStore};
use stampede_core::records::claimed_event_payload;
use stampede_domain::coupon::{CouponStatus, Origin, UserCoupon};
use stampede_domain::ids::{CouponId, TemplateId, UserId};
use stampede_domain::template::Template;
use stampede_domain::time::to_ms;
use stampede_store_mysql::MysqlStore;
use std::collections::{HashMap, HashSet};

both_layouts!(
    commit_claims_writes_coupons_stock_and_events,
    a_failing_batch_writes_nothing,
    claim_state_counts_users_and_returns_keyed_coupons,
    list_coupons_orders_pages_and_filters,
    get_coupon_is_scoped_to_its_owner,
    template_ids_page_in_ascending_order
);

async fn commit_claims_writes_coupons_stock_and_events(ctx: Ctx) {
    let store = &ctx.store;
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
        claims.push(if i % 3 == 0 {
            keyed(c, &format!("key-{i}"))
        } else {
            c
        });
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
        assert_eq!(e.aggregate_id, c.coupon.id.get());
        assert_eq!(e.payload, claimed_event_payload(&c.coupon));
        assert_eq!(e.created_at_ms, to_ms(c.coupon.claimed_at));
    }
    // A smaller limit gives a prefix of the same merge.
    let first = store.outbox_events("coupon.claimed", 5).await.unwrap();
    assert_eq!(first, events[..5]);
    assert!(
        store
            .outbox_events("coupon.locked", 10)
            .await
            .unwrap()
            .is_empty()
    );
    store.commit_claims(&[]).await.unwrap();

    // On a sharded layout the users really are spread over every table.
    let shards: HashSet<_> = (1..=700).map(|u| store.router().route(u)).collect();
    assert_eq!(shards.len(), store.router().all().count());
}

async fn a_failing_batch_writes_nothing(ctx: Ctx) {
    let store = &ctx.store;
    let a = stocked(store, 21, 1, 1_000).await;
    let b = stocked(store, 22, 2, 1_000).await;
    store
        .commit_claims(&[claim(&a, 1, 1, 1, 0), keyed(claim(&b, 2, 1, 1, 0), "k1")])
        .await
        .unwrap();

    // 600 good claims over every shard and several INSERT chunks, then one that breaks.
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

    store.commit_claims(&good).await.unwrap();
    assert_eq!(
        (stock_of(store, &a).await, stock_of(store, &b).await),
        (699, 699)
    );
    assert_eq!(claimed_events(store).await.len(), 602);
}

async fn claim_state_counts_users_and_returns_keyed_coupons(ctx: Ctx) {
    let store = &ctx.store;
    let a = stocked(store, 31, 1, 1_000).await;
    let b = stocked(store, 32, 2, 1_000).await;
    let mut claims = Vec::new();
    let mut want_keyed = Vec::new();
    // Users 1..=40 hold (user % 3) + 1 coupons of `a`; even users' first one is keyed.
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
    state.user_counts.sort();
    let want_counts: Vec<(UserId, u32)> = (1..=40).map(|u| (uid(u), (u % 3 + 1) as u32)).collect();
    assert_eq!(state.user_counts, want_counts);
    state.keyed.sort_by_key(|(_, c)| c.id);
    assert_eq!(state.keyed, want_keyed);
    let none = store.claim_state(tid(404)).await.unwrap();
    assert!(none.user_counts.is_empty() && none.keyed.is_empty());
}

/// The listing the port defines, computed in memory.
fn expected_listing(
    all: &[UserCoupon],
    user: UserId,
    status: Option<CouponStatus>,
    now: Timestamp,
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
    store: &MysqlStore,
    user: UserId,
    status: Option<CouponStatus>,
    now: Timestamp,
    page: u32,
) -> Vec<UserCoupon> {
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
        let items = store.list_coupons(&q).await.unwrap();
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

async fn list_coupons_orders_pages_and_filters(ctx: Ctx) {
    let store = &ctx.store;
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
        // Groups of three share a claim time (ties on valid_until broken by id), and ids run
        // against time.
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
    assert!(
        all.iter().any(|c| c.user_id == uid(1)
            && c.status == CouponStatus::Unused
            && c.valid_until <= now)
    );
    assert!(
        all.iter().any(|c| c.user_id == uid(1)
            && c.status == CouponStatus::Unused
            && c.valid_until > now)
    );

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
        for page in [1, 7, 100] {
            assert_eq!(
                list_all(store, uid(1), status, now, page).await,
                want,
                "{status:?}, page {page}"
            );
        }
    }
    let everything = list_all(store, uid(1), None, now, 7).await;
    let unique: HashSet<CouponId> = everything.iter().map(|c| c.id).collect();
    assert_eq!((everything.len(), unique.len()), (60, 60));

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

async fn get_coupon_is_scoped_to_its_owner(ctx: Ctx) {
    let store = &ctx.store;
    let a = stocked(store, 51, 1, 10).await;
    let c = claim(&a, 77, 1, 1, 0);
    store.commit_claims(std::slice::from_ref(&c)).await.unwrap();
    assert_eq!(
        store.get_coupon(uid(1), c.coupon.id).await.unwrap(),
        Some(c.coupon.clone())
    );
    // Other users: on another shard, and on the same shard as the owner.
    let owner_shard = store.router().route(1);
    let same = (2..)
        .find(|u| store.router().route(*u) == owner_shard)
        .unwrap();
    for other in [2, same] {
        assert_eq!(
            store.get_coupon(uid(other), c.coupon.id).await.unwrap(),
            None
        );
    }
    assert_eq!(
        store
            .get_coupon(uid(1), CouponId::new(78).unwrap())
            .await
            .unwrap(),
        None
    );
}

async fn template_ids_page_in_ascending_order(ctx: Ctx) {
    let store = &ctx.store;
    let mut ids: Vec<i64> = (1..=25).map(|i| i * 7_919 % 1_000 + 1_000 * i).collect();
    for (n, &id) in ids.iter().enumerate() {
        create(store, &template(id, n as i64 + 1, "paged")).await;
    }
    ids.sort_unstable();
    let mut seen = Vec::new();
    let mut after: Option<TemplateId> = None;
    loop {
        let page = store.template_ids(after, 10).await.unwrap();
        assert!(page.len() <= 10);
        let Some(&last) = page.last() else { break };
        seen.extend(page.iter().map(|t| t.get()));
        after = Some(last);
    }
    assert_eq!(seen, ids);
    assert!(store.template_ids(None, 0).await.unwrap().is_empty());
    assert_eq!(
        store.template_ids(Some(tid(ids[23])), 10).await.unwrap(),
        [tid(ids[24])]
    );
}
