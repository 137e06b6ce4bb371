//! Creating and reading templates, idempotency keys, the audit log and purging.

use crate::helpers::*;
use stampede_core::ports::{CreateOutcome, StoreError, TemplateStore};
use stampede_domain::audit::{AuditAction, AuditEntry};
use stampede_domain::template::TemplateChange;
use std::collections::HashSet;

both_layouts!(
    create_get_round_trip,
    idempotency_key_conflict,
    audit_is_oldest_first,
    purge_drops_old_keys
);

async fn create_get_round_trip(ctx: Ctx) {
    let store = &ctx.store;
    let mut created = Vec::new();
    for s in 1..=10 {
        let t = template(1_000 + s, s, &format!("shop {s} template"));
        create(store, &t).await;
        created.push(t);
    }
    let rich = rich_template(2_000, 4);
    create(store, &rich).await;
    created.push(rich);
    let platform = template(3_000, 0, "platform wide");
    create(store, &platform).await;
    created.push(platform);

    for t in &created {
        assert_eq!(
            store.get_template(t.id).await.unwrap().as_ref(),
            Some(t),
            "template {}",
            t.id
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

    // On a sharded layout these shops really are spread over every database.
    let databases: HashSet<usize> = (1..=10).map(|s| store.router().route(s).database).collect();
    assert_eq!(databases.len(), store.router().databases());
}

async fn idempotency_key_conflict(ctx: Ctx) {
    let store = &ctx.store;
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

    // Two concurrent creations with one key: exactly one wins.
    let racers: Vec<_> = (10..20)
        .map(|id| {
            let store = store.clone();
            tokio::spawn(async move {
                let t = template(id, 9, "racer");
                create_with(&store, &t, Some(&idem(&t, "race", 0xe))).await
            })
        })
        .collect();
    let mut created = 0;
    for r in futures::future::join_all(racers).await {
        if let CreateOutcome::Created = r.unwrap() {
            created += 1;
        }
    }
    assert_eq!(created, 1);
}

async fn audit_is_oldest_first(ctx: Ctx) {
    let store = &ctx.store;
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
            .change_template(
                t.id,
                change,
                "merchant:9",
                now() + jiff::SignedDuration::from_mins(minutes),
            )
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

async fn purge_drops_old_keys(ctx: Ctx) {
    let store = &ctx.store;
    // Ten keys over ten shops, created 0..9 days before now.
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
    store.ping().await.unwrap();
}
