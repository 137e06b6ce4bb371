//! The SQLite store's `CouponStore` (group commit, claim state, listing, outbox) and
//! `TemplateStore::template_ids`, each test on its own temporary file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use jiff::{SignedDuration, Timestamp};
use stampede_core::claim_ports::{ClaimRecord, CouponQuery, CouponStore};
use stampede_core::ports::{CreateOutcome, StoreError, TemplateStore};
use stampede_core::records::claimed_event_payload;
use stampede_domain::audit::AuditEntry;
use stampede_domain::coupon::{CouponStatus, Origin, UserCoupon, new_claimed_coupon};
use stampede_domain::ids::{CouponId, ShopId, TemplateId, UserId};
use stampede_domain::template::{Kind, Template, TemplateDraft};
use stampede_domain::time::to_ms;
use stampede_store_sqlite::{SqliteOptions, SqliteStore};
use std::collections::{BTreeMap, HashMap, HashSet};
use tempfile::TempDir;

fn t0() -> Timestamp {
    Timestamp::from_millisecond(1_700_000_000_123).unwrap()
}

fn at(mins: i64) -> Timestamp {
    t0() + SignedDuration::from_mins(mins)
}

fn uid(n: i64) -> UserId {
    UserId::new(n).unwrap()
}

async fn open() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("stampede.db"), SqliteOptions::default())
        .await
        .unwrap();
    (dir, store)
}

/// A fixed-amount template with `stock` coupons, each valid 24 hours from its claim.
async fn template(store: &SqliteStore, id: i64, stock: i64) -> Template {
    let t = TemplateDraft {
        name: Some(format!("template {id}")),
        kind: Some(Kind::Fixed),
        amount_off: Some(500),
        stock_total: Some(stock),
        claim_start: Some(t0()),
        claim_end: Some(at(600)),
        validity_hours: Some(24),
        per_user_limit: Some(100),
        ..TemplateDraft::default()
    }
    .validate(TemplateId::new(id).unwrap(), ShopId::new(7).unwrap(), t0())
    .unwrap();
    let out = store
        .create_template(&t, &AuditEntry::created(&t, "merchant:7"), None)
        .await
        .unwrap();
    assert!(matches!(out, CreateOutcome::Created));
    t
}

fn claim(t: &Template, id: i64, user: i64, seq: u32, claimed_at: Timestamp) -> ClaimRecord {
    ClaimRecord {
        coupon: new_claimed_coupon(
            t,
            CouponId::new(id).unwrap(),
            uid(user),
            seq,
            Origin::Claim,
            claimed_at,
        ),
        claim_key: None,
    }
}

fn keyed(mut c: ClaimRecord, key: &str) -> ClaimRecord {
    c.claim_key = Some(key.to_owned());
    c
}

async fn stock(store: &SqliteStore, t: &Template) -> i64 {
    store.get_template(t.id).await.unwrap().unwrap().stock
}

async fn event_count(store: &SqliteStore) -> usize {
    store
        .outbox_events("coupon.claimed", 1_000_000)
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn commit_claims_writes_coupons_stock_and_events_in_one_go() {
    let (_dir, store) = open().await;
    let templates = [
        template(&store, 11, 5_000).await,
        template(&store, 12, 5_000).await,
        template(&store, 13, 5_000).await,
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
        let c = claim(t, 1_000_000 + i, user, *seq, at(i % 90));
        claims.push(if i % 3 == 0 {
            keyed(c, &format!("key-{i}"))
        } else {
            c
        });
    }

    let started = std::time::Instant::now();
    store.commit_claims(&claims).await.unwrap();
    eprintln!("committed 3,000 claims in {:?}", started.elapsed());

    for c in &claims {
        let got = store
            .get_coupon(c.coupon.user_id, c.coupon.id)
            .await
            .unwrap();
        assert_eq!(got.as_ref(), Some(&c.coupon));
    }
    for (t, n) in templates.iter().zip([1_500, 1_000, 500]) {
        assert_eq!(stock(&store, t).await, 5_000 - n, "template {}", t.id);
    }

    let events = store.outbox_events("coupon.claimed", 10_000).await.unwrap();
    assert_eq!(events.len(), claims.len());
    let by_id: HashMap<&str, _> = events.iter().map(|e| (e.id.as_str(), e)).collect();
    assert_eq!(by_id.len(), claims.len(), "one event per coupon");
    for c in &claims {
        let e = by_id[format!("coupon.claimed:{}", c.coupon.id).as_str()];
        assert_eq!(e.kind, "coupon.claimed");
        assert_eq!(e.aggregate_id, c.coupon.id.get());
        assert_eq!(e.payload, claimed_event_payload(&c.coupon));
        assert_eq!(e.created_at_ms, to_ms(c.coupon.claimed_at));
    }
    // Oldest first, and bounded by the limit.
    let first = store.outbox_events("coupon.claimed", 2).await.unwrap();
    assert_eq!(
        first.iter().map(|e| e.aggregate_id).collect::<Vec<_>>(),
        [1_000_000, 1_000_001]
    );
    assert!(
        store
            .outbox_events("coupon.locked", 10)
            .await
            .unwrap()
            .is_empty()
    );
    // An empty batch is fine and writes nothing.
    store.commit_claims(&[]).await.unwrap();
    assert_eq!(event_count(&store).await, 3_000);
}

#[tokio::test]
async fn a_failing_batch_writes_nothing() {
    let (_dir, store) = open().await;
    let a = template(&store, 21, 1_000).await;
    let b = template(&store, 22, 1_000).await;
    let stored = vec![
        claim(&a, 1, 1, 1, t0()),
        keyed(claim(&b, 2, 1, 1, t0()), "k1"),
    ];
    store.commit_claims(&stored).await.unwrap();

    // 600 good claims spanning several INSERT chunks, then one that breaks the batch.
    let good: Vec<ClaimRecord> = (0..600)
        .map(|i| claim(if i % 2 == 0 { &a } else { &b }, 100 + i, 10 + i, 1, t0()))
        .collect();
    let breakers = [
        // Same (user, template, seq) as a claim earlier in the batch.
        claim(&a, 9_001, 10, 1, t0()),
        // Same (user, template, seq) as a stored coupon.
        claim(&a, 9_002, 1, 1, t0()),
        // Same claim key as a stored coupon of the same user and template.
        keyed(claim(&b, 9_003, 1, 2, t0()), "k1"),
        // Same coupon id as a stored coupon.
        claim(&b, 1, 5_000, 1, t0()),
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
            (stock(&store, &a).await, stock(&store, &b).await),
            (999, 999)
        );
        assert_eq!(event_count(&store).await, 2);
    }

    // Claims of a template that is not stored are refused too, with nothing written.
    let ghost = Template {
        id: TemplateId::new(99).unwrap(),
        ..a.clone()
    };
    let mut batch = good.clone();
    batch.push(claim(&ghost, 9_004, 1, 1, t0()));
    assert!(store.commit_claims(&batch).await.is_err());
    assert_eq!(event_count(&store).await, 2);
    assert_eq!(stock(&store, &a).await, 999);

    // The writer is healthy afterwards: the good claims alone commit.
    store.commit_claims(&good).await.unwrap();
    assert_eq!(
        (stock(&store, &a).await, stock(&store, &b).await),
        (699, 699)
    );
    assert_eq!(event_count(&store).await, 602);
}

#[tokio::test]
async fn claim_state_counts_users_and_returns_keyed_coupons() {
    let (_dir, store) = open().await;
    let a = template(&store, 31, 100).await;
    let b = template(&store, 32, 100).await;
    let k1 = keyed(claim(&a, 1, 5, 1, t0()), "first");
    let k2 = keyed(claim(&a, 2, 5, 2, t0()), "second");
    let k3 = keyed(claim(&a, 3, 6, 1, t0()), "first");
    let mut distributed = claim(&a, 4, 7, 1, t0());
    distributed.coupon.origin = Origin::Distribution;
    store
        .commit_claims(&[
            k1.clone(),
            k2.clone(),
            claim(&a, 5, 5, 3, t0()),
            k3.clone(),
            distributed,
            keyed(claim(&b, 6, 5, 1, t0()), "other template"),
            claim(&b, 7, 8, 1, t0()),
        ])
        .await
        .unwrap();

    let mut state = store.claim_state(a.id).await.unwrap();
    state.user_counts.sort();
    assert_eq!(state.user_counts, [(uid(5), 3), (uid(6), 1), (uid(7), 1)]);
    state.keyed.sort_by_key(|(_, c)| c.id);
    assert_eq!(
        state.keyed,
        [
            ("first".to_owned(), k1.coupon),
            ("second".to_owned(), k2.coupon),
            ("first".to_owned(), k3.coupon),
        ]
    );
    let empty = store
        .claim_state(TemplateId::new(404).unwrap())
        .await
        .unwrap();
    assert!(empty.user_counts.is_empty() && empty.keyed.is_empty());
}

/// The coupons of `q`'s listing as the port defines it, computed in memory.
fn expected_listing(
    all: &[UserCoupon],
    user: UserId,
    status: Option<CouponStatus>,
    now: Timestamp,
) -> Vec<UserCoupon> {
    let mut want: Vec<UserCoupon> = all
        .iter()
        .filter(|c| c.user_id == user)
        .filter(|c| match status {
            None => true,
            Some(s) => c.effective_status(now) == s,
        })
        .cloned()
        .collect();
    want.sort_by_key(|c| (c.valid_until, c.id));
    want
}

/// Pages through a listing `page` items at a time, following the keyset cursor.
async fn list_all(
    store: &SqliteStore,
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

#[tokio::test]
async fn list_coupons_orders_pages_and_filters() {
    let (_dir, store) = open().await;
    let a = template(&store, 41, 1_000).await;
    let b = template(&store, 42, 1_000).await;
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
        let mut c = claim(t, 10_000 - i, 1, (i / 2 + 1) as u32, at((i / 3) * 60));
        c.coupon.status = statuses[(i % 6) as usize];
        claims.push(c);
    }
    // Someone else's coupons never show up.
    for i in 0..10 {
        claims.push(claim(&a, 20_000 + i, 2, (i + 1) as u32, at(i * 60)));
    }
    store.commit_claims(&claims).await.unwrap();
    let all: Vec<UserCoupon> = claims.iter().map(|c| c.coupon.clone()).collect();

    // Half of the coupons (valid 24 h from claims spread over 20 hours) are past due.
    let now = at(24 * 60 + 10 * 60 + 1);
    let expired_by_time = all
        .iter()
        .filter(|c| c.user_id == uid(1) && c.status == CouponStatus::Unused && c.valid_until <= now)
        .count();
    assert!(expired_by_time > 0);

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
            let got = list_all(&store, uid(1), status, now, page).await;
            assert_eq!(got, want, "{status:?}, page {page}");
        }
    }
    let everything = list_all(&store, uid(1), None, now, 7).await;
    assert_eq!(everything.len(), 60);
    let unique: HashSet<CouponId> = everything.iter().map(|c| c.id).collect();
    assert_eq!(unique.len(), 60);

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
        user_id: uid(3),
        limit: 10,
        ..q
    };
    assert!(store.list_coupons(&q).await.unwrap().is_empty());
}

#[tokio::test]
async fn get_coupon_is_scoped_to_its_owner() {
    let (_dir, store) = open().await;
    let a = template(&store, 51, 10).await;
    let c = claim(&a, 77, 1, 1, t0());
    store.commit_claims(std::slice::from_ref(&c)).await.unwrap();
    assert_eq!(
        store.get_coupon(uid(1), c.coupon.id).await.unwrap(),
        Some(c.coupon.clone())
    );
    assert_eq!(store.get_coupon(uid(2), c.coupon.id).await.unwrap(), None);
    assert_eq!(
        store
            .get_coupon(uid(1), CouponId::new(78).unwrap())
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn template_ids_page_in_ascending_order() {
    let (_dir, store) = open().await;
    let mut ids: Vec<i64> = (1..=25).map(|i| i * 7_919 % 1_000 + 1_000 * i).collect();
    for &id in &ids {
        template(&store, id, 10).await;
    }
    ids.sort_unstable();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.template_ids(after, 10).await.unwrap();
        assert!(page.len() <= 10);
        let Some(&last) = page.last() else { break };
        seen.extend(page.iter().map(|t| t.get()));
        after = Some(last);
    }
    assert_eq!(seen, ids);
    assert!(store.template_ids(None, 0).await.unwrap().is_empty());
    let tail = store
        .template_ids(TemplateId::new(ids[23]), 10)
        .await
        .unwrap();
    assert_eq!(tail, [TemplateId::new(ids[24]).unwrap()]);
}

#[tokio::test]
async fn claimed_counts_per_template_match_stock() {
    // Many small batches (the group commit's usual shape) keep stock and coupons in step.
    let (_dir, store) = open().await;
    let a = template(&store, 61, 10_000).await;
    let mut id = 0;
    let mut per_user: BTreeMap<i64, u32> = BTreeMap::new();
    for batch_len in [1usize, 2, 3, 255, 256, 257, 511, 1_000] {
        let batch: Vec<ClaimRecord> = (0..batch_len)
            .map(|_| {
                id += 1;
                let user = 1 + id % 37;
                let seq = per_user.entry(user).or_insert(0);
                *seq += 1;
                claim(&a, id, user, *seq, t0())
            })
            .collect();
        store.commit_claims(&batch).await.unwrap();
    }
    let total: i64 = id;
    assert_eq!(stock(&store, &a).await, 10_000 - total);
    let state = store.claim_state(a.id).await.unwrap();
    let counted: u32 = state.user_counts.iter().map(|(_, n)| n).sum();
    assert_eq!(i64::from(counted), total);
    assert_eq!(event_count(&store).await as i64, total);
}
