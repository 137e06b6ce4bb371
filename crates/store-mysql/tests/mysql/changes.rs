//! Restocking, terminating and ending templates, concurrently too.

use crate::helpers::*;
use jiff::SignedDuration;
use stampede_core::ports::{ChangeOutcome, TemplateStore};
use stampede_domain::template::{
    ChangeError, MAX_STOCK, TemplateChange, TemplateDraft, TemplateStatus,
};

both_layouts!(
    change_rules,
    concurrent_add_stock_all_applied,
    due_to_end_across_shards,
    get_many_across_shards
);

/// `get_templates`: one query per shard holding any of the ids; unknown ids left out, also
/// when the directory cache is cold (a second store over the same databases).
async fn get_many_across_shards(ctx: Ctx) {
    let store = &ctx.store;
    let mut want = Vec::new();
    for i in 1..=12 {
        let t = template(i, 100 + i, "many");
        create(store, &t).await;
        want.push(t);
    }
    let mut ids: Vec<_> = want.iter().map(|t| t.id).collect();
    ids.push(tid(999_999));
    for s in [
        store.clone(),
        stampede_store_mysql::MysqlStore::open(&ctx.cfg)
            .await
            .unwrap(),
    ] {
        let mut got = s.get_templates(&ids).await.unwrap();
        got.sort_by_key(|t| t.id);
        assert_eq!(got, want);
    }
    assert!(store.get_templates(&[]).await.unwrap().is_empty());
}

async fn change_rules(ctx: Ctx) {
    let store = &ctx.store;
    let t = template(1, 3, "changing");
    create(store, &t).await;
    let later = now() + SignedDuration::from_mins(1);

    match store
        .change_template(t.id, TemplateChange::AddStock(5), ACTOR, later)
        .await
        .unwrap()
    {
        ChangeOutcome::Changed(next) => {
            assert_eq!((next.stock_total, next.stock), (105, 105));
            assert_eq!(next.updated_at, later);
            assert_eq!(store.get_template(t.id).await.unwrap(), Some(next));
        }
        other => panic!("{other:?}"),
    }
    let refused = |o: ChangeOutcome| match o {
        ChangeOutcome::Refused(e) => e,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(
        refused(
            store
                .change_template(t.id, TemplateChange::AddStock(0), ACTOR, later)
                .await
                .unwrap()
        ),
        ChangeError::InvalidAdd
    );
    assert_eq!(
        refused(
            store
                .change_template(t.id, TemplateChange::AddStock(MAX_STOCK), ACTOR, later)
                .await
                .unwrap()
        ),
        ChangeError::StockCap
    );
    // Ending a template whose window is still open changes nothing.
    assert!(matches!(
        store
            .change_template(t.id, TemplateChange::End, "system", later)
            .await
            .unwrap(),
        ChangeOutcome::Unchanged(_)
    ));

    match store
        .change_template(t.id, TemplateChange::Terminate, ACTOR, later)
        .await
        .unwrap()
    {
        ChangeOutcome::Changed(next) => assert_eq!(next.status, TemplateStatus::Terminated),
        other => panic!("{other:?}"),
    }
    match store
        .change_template(t.id, TemplateChange::Terminate, ACTOR, later)
        .await
        .unwrap()
    {
        ChangeOutcome::Unchanged(current) => assert_eq!(current.status, TemplateStatus::Terminated),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        refused(
            store
                .change_template(t.id, TemplateChange::AddStock(1), ACTOR, later)
                .await
                .unwrap()
        ),
        ChangeError::Terminated
    );
    let stored = store.get_template(t.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.stock_total),
        (TemplateStatus::Terminated, 105)
    );

    // A template past its window: ended by the sweep, then closed to restocking.
    let short = build(
        TemplateDraft {
            claim_end: Some(now() + hours(1)),
            ..draft("short")
        },
        2,
        4,
    );
    create(store, &short).await;
    let after = now() + hours(2);
    assert_eq!(
        refused(
            store
                .change_template(short.id, TemplateChange::AddStock(1), ACTOR, after)
                .await
                .unwrap()
        ),
        ChangeError::Ended
    );
    match store
        .change_template(short.id, TemplateChange::End, "system", after)
        .await
        .unwrap()
    {
        ChangeOutcome::Changed(next) => assert_eq!(next.status, TemplateStatus::Ended),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store
            .change_template(short.id, TemplateChange::End, "system", after)
            .await
            .unwrap(),
        ChangeOutcome::Unchanged(_)
    ));
    assert_eq!(
        refused(
            store
                .change_template(short.id, TemplateChange::Terminate, ACTOR, after)
                .await
                .unwrap()
        ),
        ChangeError::Ended
    );

    assert!(matches!(
        store
            .change_template(tid(999), TemplateChange::Terminate, ACTOR, later)
            .await
            .unwrap(),
        ChangeOutcome::NotFound
    ));
}

async fn concurrent_add_stock_all_applied(ctx: Ctx) {
    let store = &ctx.store;
    let t = template(1, 11, "hot");
    create(store, &t).await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let at = now() + SignedDuration::from_millis(i);
                store
                    .change_template(tid(1), TemplateChange::AddStock(1), ACTOR, at)
                    .await
            })
        })
        .collect();
    for outcome in futures::future::join_all(tasks).await {
        assert!(matches!(
            outcome.unwrap().unwrap(),
            ChangeOutcome::Changed(_)
        ));
    }
    let stored = store.get_template(t.id).await.unwrap().unwrap();
    assert_eq!((stored.stock_total, stored.stock), (150, 150));
    assert_eq!(store.audit_log(t.id).await.unwrap().len(), 51);
}

async fn due_to_end_across_shards(ctx: Ctx) {
    let store = &ctx.store;
    // Template i (shop i) closes i hours after now; 5 is terminated, 11 and 12 never close.
    for i in 1..=10 {
        let t = build(
            TemplateDraft {
                claim_end: Some(now() + hours(i)),
                ..draft("closing")
            },
            100 + i,
            i,
        );
        create(store, &t).await;
    }
    for i in 11..=12 {
        create(store, &template(100 + i, i, "open")).await;
    }
    store
        .change_template(tid(105), TemplateChange::Terminate, ACTOR, now())
        .await
        .unwrap();

    let at = now() + hours(7);
    let due = store.templates_due_to_end(at, 100).await.unwrap();
    assert_eq!(due, [101, 102, 103, 104, 106, 107].map(tid));
    assert_eq!(
        store.templates_due_to_end(at, 2).await.unwrap(),
        [tid(101), tid(102)]
    );
    assert!(store.templates_due_to_end(at, 0).await.unwrap().is_empty());
    assert!(
        store
            .templates_due_to_end(now(), 100)
            .await
            .unwrap()
            .is_empty()
    );

    // Once ended, a template is no longer due.
    store
        .change_template(tid(101), TemplateChange::End, "system", at)
        .await
        .unwrap();
    assert_eq!(
        store.templates_due_to_end(at, 3).await.unwrap(),
        [102, 103, 104].map(tid)
    );
}
