//! Listing one shop (one shard) and all shops (merged across shards), with filters.

use crate::helpers::*;
use jiff::Timestamp;
use stampede_core::ports::{Page, TemplateQuery, TemplateStore};
use stampede_domain::ids::ShopId;
use stampede_domain::template::{Kind, Template, TemplateChange, TemplateDraft, TemplateStatus};
use stampede_store_mysql::MysqlStore;

both_layouts!(pages_merge_across_shards, filters_match_exactly);

fn query(shop_id: Option<ShopId>, page: u32, page_size: u32) -> TemplateQuery {
    TemplateQuery {
        shop_id,
        status: None,
        kind: None,
        name: None,
        page,
        page_size,
        now: now(),
    }
}

async fn list(store: &MysqlStore, q: TemplateQuery) -> Page<Template> {
    store.list_templates(&q).await.unwrap()
}

/// Every page of `q` (with its page size) against `expected`, newest first, and one past the end.
async fn check_every_page(store: &MysqlStore, q: TemplateQuery, expected: &[Template]) {
    let size = q.page_size as usize;
    let pages = expected.len().div_ceil(size) as u32;
    for page in 1..=pages + 1 {
        let got = list(store, TemplateQuery { page, ..q.clone() }).await;
        let from = ((page as usize - 1) * size).min(expected.len());
        let to = (from + size).min(expected.len());
        assert_eq!(
            got.total,
            expected.len() as u64,
            "total, page {page} of size {size}"
        );
        let ids: Vec<i64> = got.items.iter().map(|t| t.id.get()).collect();
        let want: Vec<i64> = expected[from..to].iter().map(|t| t.id.get()).collect();
        assert_eq!(ids, want, "page {page} of size {size}");
        assert_eq!(got.items, expected[from..to], "page {page} of size {size}");
    }
}

async fn pages_merge_across_shards(ctx: Ctx) {
    let store = &ctx.store;
    // 30 templates over 10 shops, ids interleaved so every shard holds a mix of old and new.
    let mut all = Vec::new();
    for i in 0..30 {
        let t = template(
            10_000 + (i * 7) % 30 * 100 + i,
            i % 10 + 1,
            &format!("template {i}"),
        );
        create(store, &t).await;
        all.push(t);
    }
    all.sort_by_key(|t| std::cmp::Reverse(t.id));
    for size in [1, 4, 7, 30, 100] {
        check_every_page(store, query(None, 1, size), &all).await;
    }
    for s in 1..=10 {
        let mine: Vec<Template> = all
            .iter()
            .filter(|t| t.shop_id == shop(s))
            .cloned()
            .collect();
        assert_eq!(mine.len(), 3);
        check_every_page(store, query(Some(shop(s)), 1, 2), &mine).await;
    }
    let empty = list(store, query(Some(shop(99)), 1, 10)).await;
    assert_eq!((empty.items.len(), empty.total), (0, 0));
}

async fn filters_match_exactly(ctx: Ctx) {
    let store = &ctx.store;
    let names = [
        "Summer promo",
        "SUMMER sale",
        "50% off",
        "50 off",
        "under_score",
        "underXscore",
        r"back\slash",
    ];
    let mut id = 0;
    let mut next_id = || {
        id += 1;
        id
    };
    let mut all = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let t = template(next_id(), i as i64 + 1, name);
        create(store, &t).await;
        all.push(t);
    }
    let percent = build(
        TemplateDraft {
            kind: Some(Kind::Percent),
            amount_off: None,
            percent_off: Some(10),
            ..draft("percent summer")
        },
        next_id(),
        2,
    );
    create(store, &percent).await;
    let short = build(
        TemplateDraft {
            claim_end: Some(now() + hours(1)),
            ..draft("short")
        },
        next_id(),
        3,
    );
    create(store, &short).await;
    let terminated = template(next_id(), 4, "stopped");
    create(store, &terminated).await;
    store
        .change_template(terminated.id, TemplateChange::Terminate, ACTOR, now())
        .await
        .unwrap();

    let later: Timestamp = now() + hours(2);
    let ids = |p: Page<Template>| -> (Vec<i64>, u64) {
        let mut ids: Vec<i64> = p.items.iter().map(|t| t.id.get()).collect();
        ids.sort_unstable();
        (ids, p.total)
    };
    let named = |n: &str| TemplateQuery {
        name: Some(n.to_owned()),
        ..query(None, 1, 50)
    };

    assert_eq!(
        ids(list(store, named("summer")).await),
        (vec![1, 2, 8], 3),
        "case-insensitive"
    );
    assert_eq!(
        ids(list(store, named("50%")).await),
        (vec![3], 1),
        "% is literal"
    );
    assert_eq!(
        ids(list(store, named("r_s")).await),
        (vec![5], 1),
        "_ is literal"
    );
    assert_eq!(
        ids(list(store, named(r"k\s")).await),
        (vec![7], 1),
        r"\ is literal"
    );
    assert_eq!(
        ids(list(store, named("nothing like it")).await),
        (vec![], 0)
    );

    let kind = TemplateQuery {
        kind: Some(Kind::Percent),
        ..query(None, 1, 50)
    };
    assert_eq!(ids(list(store, kind).await), (vec![8], 1));

    let status = |s: TemplateStatus| TemplateQuery {
        status: Some(s),
        now: later,
        ..query(None, 1, 50)
    };
    assert_eq!(
        ids(list(store, status(TemplateStatus::Terminated)).await),
        (vec![10], 1)
    );
    assert_eq!(
        ids(list(store, status(TemplateStatus::Ended)).await),
        (vec![9], 1),
        "past its window"
    );
    assert_eq!(ids(list(store, status(TemplateStatus::Active)).await).1, 8);

    // Filters combine, with and without a shop.
    let combined = TemplateQuery {
        shop_id: Some(shop(2)),
        ..named("summer")
    };
    assert_eq!(ids(list(store, combined).await), (vec![2, 8], 2));
    let combined = TemplateQuery {
        shop_id: Some(shop(2)),
        status: Some(TemplateStatus::Active),
        now: later,
        ..named("sale")
    };
    assert_eq!(ids(list(store, combined).await), (vec![2], 1));
}
