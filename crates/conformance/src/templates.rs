//! `TemplateStore`: creation with idempotency keys, reads, listing and its filters, changes
//! with their audit trail, the end sweep's query, key purging.

use crate::StoreFixture;
use crate::fixtures::*;
use stampede_core::ports::{ChangeOutcome, CreateOutcome, Page, StoreError, TemplateQuery};
use stampede_domain::audit::{AuditAction, AuditEntry};
use stampede_domain::ids::{GoodsId, ShopId};
use stampede_domain::template::{
    ChangeError, Kind, MAX_STOCK, Scope, Source, Template, TemplateChange, TemplateDraft,
    TemplateStatus,
};

/// Runs every `TemplateStore` scenario; see the crate docs.
#[macro_export]
macro_rules! template_store_suite {
    ($run:path) => {
        mod template_store {
            #[allow(unused_imports)]
            use super::*;
            $crate::__scenarios!($run; templates;
                create_and_get_round_trip_every_field,
                idempotency_keys_bind_one_creation_per_shop,
                list_filters_paginates_and_counts,
                list_pages_newest_first_across_shops,
                list_filters_match_exactly,
                list_filters_by_goods_and_claim_window,
                changes_apply_refuse_and_audit_in_order,
                change_rules_in_every_state,
                audit_is_oldest_first,
                concurrent_add_stock_loses_no_update,
                templates_due_to_end_oldest_first,
                purge_drops_old_idempotency_keys_only,
                get_templates_by_many_ids,
                template_ids_page_in_ascending_order,
                reopening_keeps_every_record,
            );
        }
    };
}

fn query(shop_id: Option<ShopId>, page: u32, page_size: u32) -> TemplateQuery {
    TemplateQuery {
        shop_id,
        status: None,
        kind: None,
        name: None,
        page,
        page_size,
        now: now(),
        goods_id: None,
        claim_from: None,
        claim_to: None,
    }
}

fn ids(ts: &[Template]) -> Vec<i64> {
    ts.iter().map(|t| t.id.get()).collect()
}

fn changed(o: ChangeOutcome) -> Template {
    match o {
        ChangeOutcome::Changed(t) => t,
        other => panic!("expected Changed, got {other:?}"),
    }
}

fn refused(o: ChangeOutcome) -> ChangeError {
    match o {
        ChangeOutcome::Refused(e) => e,
        other => panic!("expected Refused, got {other:?}"),
    }
}

pub async fn create_and_get_round_trip_every_field(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let mut created = Vec::new();
    for shop_id in 1..=10 {
        let t = template(
            1_000 + shop_id,
            shop_id,
            &format!("shop {shop_id} template"),
        );
        create(store, &t).await;
        created.push(t);
    }
    // Goods scope, threshold kind, absolute validity, instructions, per-user limit.
    let goods = TemplateDraft {
        name: Some("Autumn goods".into()),
        instructions: Some("Not combinable.\nOne per order.".into()),
        source: Some(Source::Shop),
        scope: Some(Scope::Goods),
        goods_ids: Some(vec![
            GoodsId::new(7).unwrap(),
            GoodsId::new(9_007_199_254_740_993).unwrap(),
        ]),
        kind: Some(Kind::Threshold),
        amount_off: Some(1_000),
        threshold: Some(5_000),
        stock_total: Some(1_234),
        claim_start: Some(at(-10)),
        claim_end: Some(at(600)),
        valid_from: Some(at(-10)),
        valid_until: Some(at(6_000)),
        per_user_limit: Some(3),
        ..TemplateDraft::default()
    };
    // Platform source, percent kind, relative validity, optional money fields left out.
    let platform = TemplateDraft {
        name: Some("Site-wide".into()),
        source: Some(Source::Platform),
        kind: Some(Kind::Percent),
        percent_off: Some(20),
        stock_total: Some(5),
        claim_start: Some(now()),
        claim_end: Some(at(60)),
        validity_hours: Some(72),
        ..TemplateDraft::default()
    };
    for t in [
        build(goods, 2_001, 42),
        rich_template(2_002, 4),
        build(platform, 3_000, 0),
    ] {
        create(store, &t).await;
        created.push(t);
    }
    for t in &created {
        assert_eq!(
            store.get_template(t.id).await.unwrap().as_ref(),
            Some(t),
            "template {}",
            t.id
        );
        assert_eq!(
            store.audit_log(t.id).await.unwrap(),
            vec![AuditEntry::created(t, ACTOR)]
        );
    }
    assert_eq!(store.get_template(tid(999_999)).await.unwrap(), None);

    // The same id twice is refused, and the first stays as it was.
    let again = store
        .create_template(&created[0], &AuditEntry::created(&created[0], ACTOR), None)
        .await;
    assert!(matches!(again, Err(StoreError::Duplicate(_))), "{again:?}");
    assert_eq!(
        store.get_template(created[0].id).await.unwrap().as_ref(),
        Some(&created[0])
    );
    store.ping().await.unwrap();
}

pub async fn idempotency_keys_bind_one_creation_per_shop(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let first = template(1, 7, "first");
    let key = idem(&first, "order-42", 0xa);
    assert!(matches!(
        create_with(store, &first, Some(&key)).await,
        CreateOutcome::Created
    ));

    // Same shop, same key: nothing is written, the stored binding comes back.
    let second = template(2, 7, "second");
    match create_with(store, &second, Some(&idem(&second, "order-42", 0xb))).await {
        CreateOutcome::KeyExists { record, template } => {
            assert_eq!(record, key);
            assert_eq!(template.as_ref(), Some(&first));
        }
        other => panic!("expected KeyExists, got {other:?}"),
    }
    assert_eq!(store.get_template(second.id).await.unwrap(), None);
    assert!(store.audit_log(second.id).await.unwrap().is_empty());
    assert_eq!(
        store
            .list_templates(&query(None, 1, 50))
            .await
            .unwrap()
            .total,
        1
    );
    assert_eq!(
        store
            .find_idempotency_key(shop(7), "order-42")
            .await
            .unwrap(),
        Some((key.clone(), Some(first.clone())))
    );
    assert_eq!(
        store
            .find_idempotency_key(shop(8), "order-42")
            .await
            .unwrap(),
        None
    );

    // Retrying the very creation that bound the key finds it, and keeps it reachable.
    assert!(matches!(
        create_with(store, &first, Some(&key)).await,
        CreateOutcome::KeyExists { .. }
    ));
    assert_eq!(
        store.get_template(first.id).await.unwrap().as_ref(),
        Some(&first)
    );

    // Keys are per shop, and compared exactly.
    let other_shop = template(3, 8, "other shop");
    assert!(matches!(
        create_with(
            store,
            &other_shop,
            Some(&idem(&other_shop, "order-42", 0xc))
        )
        .await,
        CreateOutcome::Created
    ));
    let other_case = template(4, 7, "other case");
    assert!(matches!(
        create_with(
            store,
            &other_case,
            Some(&idem(&other_case, "ORDER-42", 0xd))
        )
        .await,
        CreateOutcome::Created
    ));

    // A clashing template id is a Duplicate, and the key it would have bound stays free.
    let clash = template(1, 7, "clash");
    let fresh = idem(&clash, "key-2", 0xf);
    let out = store
        .create_template(&clash, &AuditEntry::created(&clash, ACTOR), Some(&fresh))
        .await;
    assert!(matches!(out, Err(StoreError::Duplicate(_))), "{out:?}");
    let retry = template(5, 7, "retry");
    assert!(matches!(
        create_with(store, &retry, Some(&idem(&retry, "key-2", 0xf))).await,
        CreateOutcome::Created
    ));

    // Concurrent creations with one key: exactly one wins.
    let outcomes = race(10, |i| {
        let s = s.clone();
        async move {
            let t = template(10 + i as i64, 9, "racer");
            create_with(&*s, &t, Some(&idem(&t, "race", 0xe))).await
        }
    })
    .await;
    let won = outcomes
        .iter()
        .filter(|o| matches!(o, CreateOutcome::Created))
        .count();
    assert_eq!(won, 1, "{outcomes:?}");
}

/// A plain fixed template, and a percent one, for the listing scenarios.
fn percent(id: i64, shop_id: i64, name: &str) -> Template {
    build(
        TemplateDraft {
            kind: Some(Kind::Percent),
            amount_off: None,
            percent_off: Some(15),
            max_off: Some(2_000),
            stock_total: Some(10),
            claim_end: Some(at(60)),
            validity_hours: Some(48),
            ..draft(name)
        },
        id,
        shop_id,
    )
}

pub async fn list_filters_paginates_and_counts(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let list = async |q: &TemplateQuery| store.list_templates(q).await.unwrap();
    create(store, &closing(1, 1, "50% off", 60)).await;
    create(store, &closing(2, 1, "500 off", 60)).await;
    create(store, &closing(3, 1, "Summer_sale", 60)).await;
    create(store, &percent(4, 1, "summer percent")).await;
    create(store, &closing(5, 1, "short", 10)).await;
    create(store, &closing(6, 2, "Summer elsewhere", 60)).await;

    let all = list(&query(None, 1, 50)).await;
    assert_eq!((ids(&all.items), all.total), (vec![6, 5, 4, 3, 2, 1], 6));
    let shop1 = list(&query(Some(shop(1)), 1, 50)).await;
    assert_eq!((ids(&shop1.items), shop1.total), (vec![5, 4, 3, 2, 1], 5));

    // Pages are 1-based; the total ignores paging.
    for (page, expected) in [(1, vec![5, 4]), (2, vec![3, 2]), (3, vec![1]), (4, vec![])] {
        let got = list(&query(Some(shop(1)), page, 2)).await;
        assert_eq!((ids(&got.items), got.total), (expected, 5), "page {page}");
    }

    // `%` and `_` match literally; the match ignores case.
    let name = |n: &str| TemplateQuery {
        name: Some(n.into()),
        ..query(Some(shop(1)), 1, 50)
    };
    assert_eq!(ids(&list(&name("50%")).await.items), vec![1]);
    assert_eq!(ids(&list(&name("r_s")).await.items), vec![3]);
    let summer = list(&name("SUMMER")).await;
    assert_eq!((ids(&summer.items), summer.total), (vec![4, 3], 2));
    let everywhere = TemplateQuery {
        name: Some("summer".into()),
        ..query(None, 1, 50)
    };
    assert_eq!(list(&everywhere).await.total, 3);

    let percent_only = TemplateQuery {
        kind: Some(Kind::Percent),
        ..query(Some(shop(1)), 1, 50)
    };
    assert_eq!(ids(&list(&percent_only).await.items), vec![4]);

    // Template 5's window closed at now+10min: at now+30min it counts as ended, not active.
    let status = |st| TemplateQuery {
        status: Some(st),
        now: at(30),
        ..query(Some(shop(1)), 1, 50)
    };
    let ended = list(&status(TemplateStatus::Ended)).await;
    assert_eq!((ids(&ended.items), ended.total), (vec![5], 1));
    let active = list(&status(TemplateStatus::Active)).await;
    assert_eq!((ids(&active.items), active.total), (vec![4, 3, 2, 1], 4));
    assert_eq!(list(&status(TemplateStatus::Terminated)).await.total, 0);

    changed(
        store
            .change_template(tid(2), TemplateChange::Terminate, ACTOR, at(1))
            .await
            .unwrap(),
    );
    let terminated = list(&status(TemplateStatus::Terminated)).await;
    assert_eq!((ids(&terminated.items), terminated.total), (vec![2], 1));

    // Filters combine.
    let q = TemplateQuery {
        name: Some("off".into()),
        ..status(TemplateStatus::Active)
    };
    assert_eq!(ids(&list(&q).await.items), vec![1]);
}

/// Every page of `q` (with its page size) against `expected`, newest first, and one past the end.
async fn check_every_page(f: &dyn StoreFixture, q: TemplateQuery, expected: &[Template]) {
    let size = q.page_size as usize;
    let pages = expected.len().div_ceil(size) as u32;
    for page in 1..=pages + 1 {
        let got: Page<Template> = f
            .store()
            .list_templates(&TemplateQuery { page, ..q.clone() })
            .await
            .unwrap();
        let from = ((page as usize - 1) * size).min(expected.len());
        let to = (from + size).min(expected.len());
        assert_eq!(
            got.total,
            expected.len() as u64,
            "total, page {page} of size {size}"
        );
        assert_eq!(
            ids(&got.items),
            ids(&expected[from..to]),
            "page {page} of size {size}"
        );
        assert_eq!(got.items, expected[from..to], "page {page} of size {size}");
    }
}

pub async fn list_pages_newest_first_across_shops(f: &dyn StoreFixture) {
    let s = f.store();
    // 30 templates over 10 shops, ids interleaved so every shop (and shard) holds a mix of old
    // and new.
    let mut all = Vec::new();
    for i in 0..30 {
        let t = template(
            10_000 + (i * 7) % 30 * 100 + i,
            i % 10 + 1,
            &format!("template {i}"),
        );
        create(&*s, &t).await;
        all.push(t);
    }
    all.sort_by_key(|t| std::cmp::Reverse(t.id));
    for size in [1, 4, 7, 30, 100] {
        check_every_page(f, query(None, 1, size), &all).await;
    }
    for shop_id in 1..=10 {
        let mine: Vec<Template> = all
            .iter()
            .filter(|t| t.shop_id == shop(shop_id))
            .cloned()
            .collect();
        assert_eq!(mine.len(), 3);
        check_every_page(f, query(Some(shop(shop_id)), 1, 2), &mine).await;
    }
    let empty = s
        .list_templates(&query(Some(shop(99)), 1, 10))
        .await
        .unwrap();
    assert_eq!((empty.items.len(), empty.total), (0, 0));
}

pub async fn list_filters_match_exactly(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let names = [
        "Summer promo",
        "SUMMER sale",
        "50% off",
        "50 off",
        "under_score",
        "underXscore",
        r"back\slash",
    ];
    for (i, name) in names.iter().enumerate() {
        create(store, &template(i as i64 + 1, i as i64 + 1, name)).await;
    }
    let percent = build(
        TemplateDraft {
            kind: Some(Kind::Percent),
            amount_off: None,
            percent_off: Some(10),
            ..draft("percent summer")
        },
        8,
        2,
    );
    create(store, &percent).await;
    create(store, &closing(9, 3, "short", 60)).await;
    let terminated = template(10, 4, "stopped");
    create(store, &terminated).await;
    store
        .change_template(terminated.id, TemplateChange::Terminate, ACTOR, now())
        .await
        .unwrap();

    let list = async |q: TemplateQuery| -> (Vec<i64>, u64) {
        let p = store.list_templates(&q).await.unwrap();
        let mut ids = ids(&p.items);
        ids.sort_unstable();
        (ids, p.total)
    };
    let named = |n: &str| TemplateQuery {
        name: Some(n.to_owned()),
        ..query(None, 1, 50)
    };
    assert_eq!(
        list(named("summer")).await,
        (vec![1, 2, 8], 3),
        "case-insensitive"
    );
    assert_eq!(list(named("50%")).await, (vec![3], 1), "% is literal");
    assert_eq!(list(named("r_s")).await, (vec![5], 1), "_ is literal");
    assert_eq!(list(named(r"k\s")).await, (vec![7], 1), r"\ is literal");
    assert_eq!(list(named("nothing like it")).await, (vec![], 0));

    let kind = TemplateQuery {
        kind: Some(Kind::Percent),
        ..query(None, 1, 50)
    };
    assert_eq!(list(kind).await, (vec![8], 1));

    let later = now() + hours(2);
    let status = |st: TemplateStatus| TemplateQuery {
        status: Some(st),
        now: later,
        ..query(None, 1, 50)
    };
    assert_eq!(
        list(status(TemplateStatus::Terminated)).await,
        (vec![10], 1)
    );
    assert_eq!(
        list(status(TemplateStatus::Ended)).await,
        (vec![9], 1),
        "past its window"
    );
    assert_eq!(list(status(TemplateStatus::Active)).await.1, 8);

    // Filters combine, with and without a shop.
    let combined = TemplateQuery {
        shop_id: Some(shop(2)),
        ..named("summer")
    };
    assert_eq!(list(combined).await, (vec![2, 8], 2));
    let combined = TemplateQuery {
        shop_id: Some(shop(2)),
        status: Some(TemplateStatus::Active),
        now: later,
        ..named("sale")
    };
    assert_eq!(list(combined).await, (vec![2], 1));
}

/// The goods filter reads the goods index; the window filter keeps templates whose claim
/// window overlaps the asked one. Both combine with the others, with and without a shop.
pub async fn list_filters_by_goods_and_claim_window(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let scoped = |id: i64, shop_id: i64, goods: &[i64], start_h: i64, end_h: i64| {
        let mut d = TemplateDraft {
            claim_start: Some(now() + hours(start_h)),
            claim_end: Some(now() + hours(end_h)),
            ..draft(&format!("t{id}"))
        };
        if !goods.is_empty() {
            d.scope = Some(Scope::Goods);
            d.goods_ids = Some(goods.iter().map(|&g| GoodsId::new(g).unwrap()).collect());
        }
        build(d, id, shop_id)
    };
    // Shops 1..3 (spread over shards), goods 11 listed by 1, 2 and 4 (two shops), a goods id
    // past 2^53 by 5; 3 is shop-wide.
    for t in [
        scoped(1, 1, &[11, 12], 0, 10),
        scoped(2, 1, &[11], 20, 30),
        scoped(3, 1, &[], 0, 10),
        scoped(4, 2, &[13, 11], 5, 15),
        scoped(5, 3, &[9_007_199_254_740_993], 0, 10),
    ] {
        create(store, &t).await;
    }
    let list = async |q: TemplateQuery| -> (Vec<i64>, u64) {
        let p = store.list_templates(&q).await.unwrap();
        let mut ids = ids(&p.items);
        ids.sort_unstable();
        (ids, p.total)
    };
    let goods = |g: i64| TemplateQuery {
        goods_id: GoodsId::new(g),
        ..query(None, 1, 50)
    };
    assert_eq!(list(goods(11)).await, (vec![1, 2, 4], 3));
    assert_eq!(list(goods(12)).await, (vec![1], 1));
    assert_eq!(list(goods(9_007_199_254_740_993)).await, (vec![5], 1));
    assert_eq!(list(goods(14)).await, (vec![], 0));
    assert_eq!(
        list(TemplateQuery {
            shop_id: Some(shop(1)),
            ..goods(11)
        })
        .await,
        (vec![1, 2], 2)
    );
    let window = |from: Option<i64>, to: Option<i64>| TemplateQuery {
        claim_from: from.map(|h| now() + hours(h)),
        claim_to: to.map(|h| now() + hours(h)),
        ..query(None, 1, 50)
    };
    // [10, 20): template 1 ends at 10 and 2 starts at 20, so only 4 overlaps.
    assert_eq!(list(window(Some(10), Some(20))).await, (vec![4], 1));
    assert_eq!(
        list(window(Some(9), Some(21))).await,
        (vec![1, 2, 3, 4, 5], 5)
    );
    assert_eq!(list(window(Some(15), None)).await, (vec![2], 1));
    assert_eq!(list(window(None, Some(5))).await, (vec![1, 3, 5], 3));
    assert_eq!(
        list(TemplateQuery {
            goods_id: GoodsId::new(11),
            ..window(Some(12), None)
        })
        .await,
        (vec![2, 4], 2)
    );
}

pub async fn changes_apply_refuse_and_audit_in_order(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let t = closing(1, 1, "t", 60);
    create(store, &t).await;

    let added = changed(
        store
            .change_template(t.id, TemplateChange::AddStock(25), ACTOR, at(1))
            .await
            .unwrap(),
    );
    assert_eq!(
        (added.stock_total, added.stock, added.updated_at),
        (125, 125, at(1))
    );
    assert_eq!(store.get_template(t.id).await.unwrap(), Some(added.clone()));

    let terminated = changed(
        store
            .change_template(t.id, TemplateChange::Terminate, "admin:9", at(2))
            .await
            .unwrap(),
    );
    assert_eq!(terminated.status, TemplateStatus::Terminated);
    match store
        .change_template(t.id, TemplateChange::Terminate, "admin:9", at(3))
        .await
        .unwrap()
    {
        ChangeOutcome::Unchanged(same) => assert_eq!(same, terminated),
        other => panic!("expected Unchanged, got {other:?}"),
    }
    assert_eq!(
        refused(
            store
                .change_template(t.id, TemplateChange::AddStock(1), ACTOR, at(4))
                .await
                .unwrap()
        ),
        ChangeError::Terminated
    );
    assert_eq!(
        store.get_template(t.id).await.unwrap(),
        Some(terminated.clone())
    );

    let log = store.audit_log(t.id).await.unwrap();
    let actions: Vec<_> = log.iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        vec![
            AuditAction::Create,
            AuditAction::AddStock,
            AuditAction::Terminate
        ]
    );
    assert_eq!(
        log[1],
        AuditEntry::changed(&t, &added, TemplateChange::AddStock(25), ACTOR)
    );
    assert_eq!(log[1].before, Some(t.snapshot()));
    assert_eq!(log[2].before, Some(added.snapshot()));
    assert_eq!(log[2].after, terminated.snapshot());
    assert_eq!((log[2].actor.as_str(), log[2].at), ("admin:9", at(2)));

    // Other refusals, none of which writes anything.
    let u = closing(2, 1, "u", 10);
    create(store, &u).await;
    let add = async |n, when| {
        store
            .change_template(u.id, TemplateChange::AddStock(n), ACTOR, when)
            .await
            .unwrap()
    };
    assert_eq!(refused(add(0, at(1)).await), ChangeError::InvalidAdd);
    assert_eq!(refused(add(MAX_STOCK, at(1)).await), ChangeError::StockCap);
    assert_eq!(refused(add(1, at(11)).await), ChangeError::Ended);
    let term = store
        .change_template(u.id, TemplateChange::Terminate, ACTOR, at(11))
        .await
        .unwrap();
    assert_eq!(refused(term), ChangeError::Ended);
    assert_eq!(store.get_template(u.id).await.unwrap(), Some(u.clone()));
    assert_eq!(store.audit_log(u.id).await.unwrap().len(), 1);

    let missing = store
        .change_template(tid(99), TemplateChange::Terminate, "admin:9", at(1))
        .await
        .unwrap();
    assert!(matches!(missing, ChangeOutcome::NotFound));
}

pub async fn change_rules_in_every_state(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let t = template(1, 3, "changing");
    create(store, &t).await;
    let later = at(1);
    let change = async |id, c, when| store.change_template(id, c, ACTOR, when).await.unwrap();

    let next = changed(change(t.id, TemplateChange::AddStock(5), later).await);
    assert_eq!((next.stock_total, next.stock), (105, 105));
    assert_eq!(next.updated_at, later);
    assert_eq!(store.get_template(t.id).await.unwrap(), Some(next));
    assert_eq!(
        refused(change(t.id, TemplateChange::AddStock(0), later).await),
        ChangeError::InvalidAdd
    );
    assert_eq!(
        refused(change(t.id, TemplateChange::AddStock(MAX_STOCK), later).await),
        ChangeError::StockCap
    );
    // Ending a template whose window is still open changes nothing.
    assert!(matches!(
        change(t.id, TemplateChange::End, later).await,
        ChangeOutcome::Unchanged(_)
    ));
    let stopped = changed(change(t.id, TemplateChange::Terminate, later).await);
    assert_eq!(stopped.status, TemplateStatus::Terminated);
    match change(t.id, TemplateChange::Terminate, later).await {
        ChangeOutcome::Unchanged(current) => assert_eq!(current.status, TemplateStatus::Terminated),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        refused(change(t.id, TemplateChange::AddStock(1), later).await),
        ChangeError::Terminated
    );
    let stored = store.get_template(t.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.stock_total),
        (TemplateStatus::Terminated, 105)
    );

    // A template past its window: ended by the sweep, then closed to restocking.
    let short = closing(2, 4, "short", 60);
    create(store, &short).await;
    let after = now() + hours(2);
    assert_eq!(
        refused(change(short.id, TemplateChange::AddStock(1), after).await),
        ChangeError::Ended
    );
    let ended = changed(change(short.id, TemplateChange::End, after).await);
    assert_eq!(ended.status, TemplateStatus::Ended);
    assert!(matches!(
        change(short.id, TemplateChange::End, after).await,
        ChangeOutcome::Unchanged(_)
    ));
    assert_eq!(
        refused(change(short.id, TemplateChange::Terminate, after).await),
        ChangeError::Ended
    );
    assert!(matches!(
        change(tid(999), TemplateChange::Terminate, later).await,
        ChangeOutcome::NotFound
    ));
}

pub async fn audit_is_oldest_first(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    let t = template(1, 5, "audited");
    create(store, &t).await;
    let neighbour = template(2, 6, "neighbour");
    create(store, &neighbour).await;
    for (change, minutes) in [
        (TemplateChange::AddStock(5), 1),
        (TemplateChange::AddStock(7), 2),
        (TemplateChange::Terminate, 3),
        (TemplateChange::Terminate, 4),
    ] {
        store
            .change_template(t.id, change, "merchant:9", at(minutes))
            .await
            .unwrap();
    }

    let log = store.audit_log(t.id).await.unwrap();
    let actions: Vec<AuditAction> = log.iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        [
            AuditAction::Create,
            AuditAction::AddStock,
            AuditAction::AddStock,
            AuditAction::Terminate
        ]
    );
    assert_eq!(log[0], AuditEntry::created(&t, ACTOR));
    assert_eq!(log[1].before.as_ref(), Some(&t.snapshot()));
    assert_eq!(log[1].after["stock_total"], 105);
    assert_eq!(log[2].after["stock_total"], 112);
    assert_eq!(log[3].after["status"], "terminated");
    assert_eq!(log[3].actor, "merchant:9");
    assert!(log.windows(2).all(|w| w[0].at < w[1].at));

    assert_eq!(store.audit_log(neighbour.id).await.unwrap().len(), 1);
    assert!(store.audit_log(tid(999)).await.unwrap().is_empty());
}

pub async fn concurrent_add_stock_loses_no_update(f: &dyn StoreFixture) {
    let s = f.store();
    let t = template(1, 11, "hot");
    create(&*s, &t).await;
    let outcomes = race(50, |i| {
        let s = s.clone();
        async move {
            let when = now() + jiff::SignedDuration::from_millis(i as i64);
            s.change_template(tid(1), TemplateChange::AddStock(1), ACTOR, when)
                .await
        }
    })
    .await;
    for o in outcomes {
        changed(o.unwrap());
    }
    let stored = s.get_template(t.id).await.unwrap().unwrap();
    assert_eq!((stored.stock_total, stored.stock), (150, 150));
    assert_eq!(s.audit_log(t.id).await.unwrap().len(), 51);
}

pub async fn templates_due_to_end_oldest_first(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    // Template 100+i (shop i) closes i hours after now; 105 is terminated; 111 and 112 are
    // still open.
    for i in 1..=10 {
        create(store, &closing(100 + i, i, "closing", i * 60)).await;
    }
    for i in 11..=12 {
        create(store, &template(100 + i, i, "open")).await;
    }
    store
        .change_template(tid(105), TemplateChange::Terminate, ACTOR, now())
        .await
        .unwrap();

    let due = async |when, limit| store.templates_due_to_end(when, limit).await.unwrap();
    let at7 = now() + hours(7);
    assert_eq!(due(at7, 100).await, [101, 102, 103, 104, 106, 107].map(tid));
    assert_eq!(due(at7, 2).await, [tid(101), tid(102)]);
    assert!(due(at7, 0).await.is_empty());
    assert!(due(now(), 100).await.is_empty());
    // A window closes at `claim_end` exactly, not a millisecond before.
    assert!(due(at(59), 100).await.is_empty());
    assert_eq!(due(at(60), 100).await, [tid(101)]);

    // Once ended (once: ending again changes nothing), a template is no longer due.
    let ended = changed(
        store
            .change_template(tid(101), TemplateChange::End, "system", at7)
            .await
            .unwrap(),
    );
    assert_eq!(ended.status, TemplateStatus::Ended);
    assert!(matches!(
        store
            .change_template(tid(101), TemplateChange::End, "system", at7)
            .await
            .unwrap(),
        ChangeOutcome::Unchanged(_)
    ));
    assert_eq!(due(at7, 3).await, [102, 103, 104].map(tid));
}

pub async fn purge_drops_old_idempotency_keys_only(f: &dyn StoreFixture) {
    let s = f.store();
    let store = &*s;
    // Ten keys over ten shops, created 0..9 days before now, plus two in one shop.
    for day in 0..10 {
        let t = template(100 + day, day + 1, "keyed");
        let mut key = idem(&t, "k", day as u64);
        key.created_at = now() - hours(24 * day);
        assert!(matches!(
            create_with(store, &t, Some(&key)).await,
            CreateOutcome::Created
        ));
    }
    let cutoff = now() - hours(24 * 5 - 12);
    assert_eq!(store.purge_idempotency_keys(cutoff).await.unwrap(), 5);
    assert_eq!(store.purge_idempotency_keys(cutoff).await.unwrap(), 0);

    // A purged key is free again; a kept one still binds.
    let reuse = template(200, 10, "reuse");
    assert!(matches!(
        create_with(store, &reuse, Some(&idem(&reuse, "k", 1))).await,
        CreateOutcome::Created
    ));
    let kept = template(201, 1, "kept");
    assert!(matches!(
        create_with(store, &kept, Some(&idem(&kept, "k", 1))).await,
        CreateOutcome::KeyExists { .. }
    ));
    // The purge keeps the templates the keys pointed at.
    assert!(store.get_template(tid(109)).await.unwrap().is_some());
    store.ping().await.unwrap();
}

/// `get_templates`: every stored one of the ids (unknown ids left out), also from a store
/// whose caches are cold.
pub async fn get_templates_by_many_ids(f: &dyn StoreFixture) {
    let s = f.store();
    let mut want = Vec::new();
    for i in 1..=12 {
        let t = template(i, 100 + i, "many");
        create(&*s, &t).await;
        want.push(t);
    }
    let mut ids: Vec<_> = want.iter().map(|t| t.id).collect();
    ids.push(tid(999_999));
    for store in [s.clone(), f.reopen().await] {
        let mut got = store.get_templates(&ids).await.unwrap();
        got.sort_by_key(|t| t.id);
        assert_eq!(got, want);
        let mut one = store.get_templates(&[tid(3), tid(3)]).await.unwrap();
        one.dedup();
        assert_eq!(one, [want[2].clone()]);
    }
    assert!(s.get_templates(&[]).await.unwrap().is_empty());
}

pub async fn template_ids_page_in_ascending_order(f: &dyn StoreFixture) {
    let s = f.store();
    // Ids out of creation order, one shop each.
    let mut ids: Vec<i64> = (1..=25).map(|i| i * 7_919 % 1_000 + 1_000 * i).collect();
    for (n, &id) in ids.iter().enumerate() {
        create(&*s, &template(id, n as i64 + 1, "paged")).await;
    }
    ids.sort_unstable();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s.template_ids(after, 10).await.unwrap();
        assert!(page.len() <= 10);
        let Some(&last) = page.last() else { break };
        seen.extend(page.iter().map(|t| t.get()));
        after = Some(last);
    }
    assert_eq!(seen, ids);
    assert!(s.template_ids(None, 0).await.unwrap().is_empty());
    assert_eq!(
        s.template_ids(Some(tid(ids[23])), 10).await.unwrap(),
        [tid(ids[24])]
    );
    // After an id that is not stored: the ones above it.
    assert_eq!(
        s.template_ids(Some(tid(ids[23] - 1)), 10).await.unwrap(),
        [tid(ids[23]), tid(ids[24])]
    );
}

pub async fn reopening_keeps_every_record(f: &dyn StoreFixture) {
    let s = f.store();
    let t = rich_template(1, 1);
    create(&*s, &t).await;
    let keyed_t = template(2, 1, "keyed");
    create_with(&*s, &keyed_t, Some(&idem(&keyed_t, "kept", 1))).await;
    changed(
        s.change_template(t.id, TemplateChange::AddStock(1), ACTOR, at(1))
            .await
            .unwrap(),
    );
    s.create_account(&crate::accounts::account(1, "alice"))
        .await
        .unwrap();

    let reopened = f.reopen().await;
    let stored = reopened.get_template(t.id).await.unwrap().unwrap();
    assert_eq!(stored.stock_total, t.stock_total + 1);
    assert_eq!(reopened.audit_log(t.id).await.unwrap().len(), 2);
    assert!(matches!(
        reopened
            .find_idempotency_key(shop(1), "kept")
            .await
            .unwrap(),
        Some((_, Some(_)))
    ));
    assert!(
        reopened
            .account_by_username("alice")
            .await
            .unwrap()
            .is_some()
    );
}
