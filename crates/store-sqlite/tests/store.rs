//! The SQLite store against the port contracts, each test on its own temporary file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use jiff::{SignedDuration, Timestamp};
use stampede_core::ports::{
    Account, AccountStore, ChangeOutcome, CreateOutcome, IdempotencyRecord, RefreshOutcome,
    StoreError, TemplateQuery, TemplateStore,
};
use stampede_domain::audit::{AuditAction, AuditEntry};
use stampede_domain::auth::Role;
use stampede_domain::ids::{GoodsId, ShopId, TemplateId};
use stampede_domain::template::{
    ChangeError, Kind, MAX_STOCK, Scope, Source, Template, TemplateChange, TemplateDraft,
    TemplateStatus,
};
use stampede_store_sqlite::{SqliteOptions, SqliteStore};
use std::sync::Arc;
use tempfile::TempDir;

fn t0() -> Timestamp {
    Timestamp::from_millisecond(1_700_000_000_123).unwrap()
}

fn mins(n: i64) -> SignedDuration {
    SignedDuration::from_mins(n)
}

fn at(offset_mins: i64) -> Timestamp {
    t0().checked_add(mins(offset_mins)).unwrap()
}

fn tid(n: i64) -> TemplateId {
    TemplateId::new(n).unwrap()
}

fn shop(n: i64) -> ShopId {
    ShopId::new(n).unwrap()
}

async fn open() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    // A nested path also checks that `open` creates the parent directory.
    let store = SqliteStore::open(
        &dir.path().join("data/stampede.db"),
        SqliteOptions::default(),
    )
    .await
    .unwrap();
    (dir, store)
}

/// A plain fixed-amount template whose claim window ends `end_mins` after `t0`.
fn fixed(id: i64, shop_id: i64, name: &str, end_mins: i64) -> Template {
    TemplateDraft {
        name: Some(name.into()),
        kind: Some(Kind::Fixed),
        amount_off: Some(500),
        stock_total: Some(100),
        claim_start: Some(t0()),
        claim_end: Some(at(end_mins)),
        validity_hours: Some(24),
        ..TemplateDraft::default()
    }
    .validate(tid(id), shop(shop_id), t0())
    .unwrap()
}

fn percent(id: i64, shop_id: i64, name: &str) -> Template {
    TemplateDraft {
        name: Some(name.into()),
        kind: Some(Kind::Percent),
        percent_off: Some(15),
        max_off: Some(2_000),
        stock_total: Some(10),
        claim_start: Some(t0()),
        claim_end: Some(at(60)),
        validity_hours: Some(48),
        ..TemplateDraft::default()
    }
    .validate(tid(id), shop(shop_id), t0())
    .unwrap()
}

async fn create(store: &SqliteStore, t: &Template) {
    let outcome = store
        .create_template(t, &AuditEntry::created(t, "merchant:1"), None)
        .await
        .unwrap();
    assert!(matches!(outcome, CreateOutcome::Created));
}

fn query(shop_id: Option<i64>) -> TemplateQuery {
    TemplateQuery {
        shop_id: shop_id.map(shop),
        status: None,
        kind: None,
        name: None,
        page: 1,
        page_size: 50,
        now: t0(),
    }
}

fn ids(ts: &[Template]) -> Vec<i64> {
    ts.iter().map(|t| t.id.get()).collect()
}

#[tokio::test]
async fn create_and_get_round_trip_every_field() {
    let (_dir, store) = open().await;
    // Goods scope, threshold kind, absolute validity, instructions, per-user limit.
    let rich = TemplateDraft {
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
    }
    .validate(tid(1), shop(42), t0())
    .unwrap();
    // Platform source, percent kind, relative validity, optional money fields.
    let platform = TemplateDraft {
        name: Some("Site-wide".into()),
        source: Some(Source::Platform),
        kind: Some(Kind::Percent),
        percent_off: Some(20),
        stock_total: Some(5),
        claim_start: Some(t0()),
        claim_end: Some(at(60)),
        validity_hours: Some(72),
        ..TemplateDraft::default()
    }
    .validate(tid(2), ShopId::PLATFORM, t0())
    .unwrap();

    for t in [&rich, &platform] {
        create(&store, t).await;
        assert_eq!(store.get_template(t.id).await.unwrap().as_ref(), Some(t));
    }
    assert!(store.get_template(tid(3)).await.unwrap().is_none());

    let log = store.audit_log(rich.id).await.unwrap();
    assert_eq!(log, vec![AuditEntry::created(&rich, "merchant:1")]);
    store.ping().await.unwrap();
}

#[tokio::test]
async fn idempotency_key_conflict_returns_the_stored_record_and_writes_nothing() {
    let (_dir, store) = open().await;
    let first = fixed(1, 5, "first", 60);
    let record = IdempotencyRecord {
        shop_id: shop(5),
        key: "key-1".into(),
        request_hash: "aaaa".into(),
        template_id: first.id,
        created_at: first.created_at,
    };
    let out = store
        .create_template(
            &first,
            &AuditEntry::created(&first, "merchant:1"),
            Some(&record),
        )
        .await;
    assert!(matches!(out.unwrap(), CreateOutcome::Created));

    let second = fixed(2, 5, "second", 60);
    let again = IdempotencyRecord {
        request_hash: "bbbb".into(),
        template_id: second.id,
        ..record.clone()
    };
    let out = store
        .create_template(
            &second,
            &AuditEntry::created(&second, "merchant:1"),
            Some(&again),
        )
        .await;
    match out.unwrap() {
        CreateOutcome::KeyExists {
            record: stored,
            template,
        } => {
            assert_eq!(stored, record);
            assert_eq!(template, Some(first.clone()));
        }
        other => panic!("expected KeyExists, got {other:?}"),
    }
    assert!(store.get_template(second.id).await.unwrap().is_none());
    assert!(store.audit_log(second.id).await.unwrap().is_empty());
    assert_eq!(store.list_templates(&query(None)).await.unwrap().total, 1);

    // Keys are per shop: the same key in another shop is a different key.
    let other = fixed(3, 6, "other shop", 60);
    let theirs = IdempotencyRecord {
        shop_id: shop(6),
        template_id: other.id,
        ..record.clone()
    };
    let out = store
        .create_template(
            &other,
            &AuditEntry::created(&other, "merchant:2"),
            Some(&theirs),
        )
        .await;
    assert!(matches!(out.unwrap(), CreateOutcome::Created));

    // A clashing template id is a Duplicate, and the key claimed in that transaction is rolled back.
    let clash = fixed(1, 5, "clash", 60);
    let fresh = IdempotencyRecord {
        key: "key-2".into(),
        template_id: clash.id,
        ..record.clone()
    };
    let out = store
        .create_template(
            &clash,
            &AuditEntry::created(&clash, "merchant:1"),
            Some(&fresh),
        )
        .await;
    assert!(matches!(out, Err(StoreError::Duplicate(_))), "{out:?}");
    let retry = fixed(4, 5, "retry", 60);
    let fresh = IdempotencyRecord {
        template_id: retry.id,
        ..fresh
    };
    let out = store
        .create_template(
            &retry,
            &AuditEntry::created(&retry, "merchant:1"),
            Some(&fresh),
        )
        .await;
    assert!(matches!(out.unwrap(), CreateOutcome::Created));
}

#[tokio::test]
async fn list_filters_paginates_and_counts() {
    let (_dir, store) = open().await;
    create(&store, &fixed(1, 1, "50% off", 60)).await;
    create(&store, &fixed(2, 1, "500 off", 60)).await;
    create(&store, &fixed(3, 1, "Summer_sale", 60)).await;
    create(&store, &percent(4, 1, "summer percent")).await;
    create(&store, &fixed(5, 1, "short", 10)).await;
    create(&store, &fixed(6, 2, "Summer elsewhere", 60)).await;

    let all = store.list_templates(&query(None)).await.unwrap();
    assert_eq!((ids(&all.items), all.total), (vec![6, 5, 4, 3, 2, 1], 6));

    let shop1 = store.list_templates(&query(Some(1))).await.unwrap();
    assert_eq!((ids(&shop1.items), shop1.total), (vec![5, 4, 3, 2, 1], 5));

    // Pages are 1-based; the total ignores paging.
    for (page, expected) in [(1, vec![5, 4]), (2, vec![3, 2]), (3, vec![1]), (4, vec![])] {
        let q = TemplateQuery {
            page,
            page_size: 2,
            ..query(Some(1))
        };
        let got = store.list_templates(&q).await.unwrap();
        assert_eq!((ids(&got.items), got.total), (expected, 5), "page {page}");
    }

    // `%` and `_` match literally; the match ignores case.
    let name = |n: &str| TemplateQuery {
        name: Some(n.into()),
        ..query(Some(1))
    };
    assert_eq!(
        ids(&store.list_templates(&name("50%")).await.unwrap().items),
        vec![1]
    );
    assert_eq!(
        ids(&store.list_templates(&name("r_s")).await.unwrap().items),
        vec![3]
    );
    let summer = store.list_templates(&name("SUMMER")).await.unwrap();
    assert_eq!((ids(&summer.items), summer.total), (vec![4, 3], 2));
    assert_eq!(
        store
            .list_templates(&TemplateQuery {
                name: Some("summer".into()),
                ..query(None)
            })
            .await
            .unwrap()
            .total,
        3
    );

    let percent_only = TemplateQuery {
        kind: Some(Kind::Percent),
        ..query(Some(1))
    };
    assert_eq!(
        ids(&store.list_templates(&percent_only).await.unwrap().items),
        vec![4]
    );

    // Template 5's window closed at t0+10min: at t0+30min it counts as ended, not active.
    let status = |s| TemplateQuery {
        status: Some(s),
        now: at(30),
        ..query(Some(1))
    };
    let ended = store
        .list_templates(&status(TemplateStatus::Ended))
        .await
        .unwrap();
    assert_eq!((ids(&ended.items), ended.total), (vec![5], 1));
    let active = store
        .list_templates(&status(TemplateStatus::Active))
        .await
        .unwrap();
    assert_eq!((ids(&active.items), active.total), (vec![4, 3, 2, 1], 4));
    assert_eq!(
        store
            .list_templates(&status(TemplateStatus::Terminated))
            .await
            .unwrap()
            .total,
        0
    );

    let out = store
        .change_template(tid(2), TemplateChange::Terminate, "merchant:1", at(1))
        .await
        .unwrap();
    assert!(matches!(out, ChangeOutcome::Changed(_)));
    let terminated = store
        .list_templates(&status(TemplateStatus::Terminated))
        .await
        .unwrap();
    assert_eq!((ids(&terminated.items), terminated.total), (vec![2], 1));

    // Filters combine.
    let q = TemplateQuery {
        name: Some("off".into()),
        ..status(TemplateStatus::Active)
    };
    assert_eq!(ids(&store.list_templates(&q).await.unwrap().items), vec![1]);
}

#[tokio::test]
async fn change_template_applies_refuses_and_audits_in_order() {
    let (_dir, store) = open().await;
    let t = fixed(1, 1, "t", 60);
    create(&store, &t).await;

    let added = match store
        .change_template(t.id, TemplateChange::AddStock(25), "merchant:1", at(1))
        .await
        .unwrap()
    {
        ChangeOutcome::Changed(n) => n,
        other => panic!("expected Changed, got {other:?}"),
    };
    assert_eq!(
        (added.stock_total, added.stock, added.updated_at),
        (125, 125, at(1))
    );
    assert_eq!(store.get_template(t.id).await.unwrap(), Some(added.clone()));

    let terminated = match store
        .change_template(t.id, TemplateChange::Terminate, "admin:9", at(2))
        .await
        .unwrap()
    {
        ChangeOutcome::Changed(n) => n,
        other => panic!("expected Changed, got {other:?}"),
    };
    assert_eq!(terminated.status, TemplateStatus::Terminated);
    match store
        .change_template(t.id, TemplateChange::Terminate, "admin:9", at(3))
        .await
        .unwrap()
    {
        ChangeOutcome::Unchanged(same) => assert_eq!(same, terminated),
        other => panic!("expected Unchanged, got {other:?}"),
    }
    match store
        .change_template(t.id, TemplateChange::AddStock(1), "merchant:1", at(4))
        .await
        .unwrap()
    {
        ChangeOutcome::Refused(e) => assert_eq!(e, ChangeError::Terminated),
        other => panic!("expected Refused, got {other:?}"),
    }
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
        AuditEntry::changed(&t, &added, TemplateChange::AddStock(25), "merchant:1")
    );
    assert_eq!(log[1].before, Some(t.snapshot()));
    assert_eq!(log[2].before, Some(added.snapshot()));
    assert_eq!(log[2].after, terminated.snapshot());
    assert_eq!((log[2].actor.as_str(), log[2].at), ("admin:9", at(2)));

    // Other refusals, none of which writes anything.
    let u = fixed(2, 1, "u", 10);
    create(&store, &u).await;
    let refused = |o: ChangeOutcome| match o {
        ChangeOutcome::Refused(e) => e,
        other => panic!("expected Refused, got {other:?}"),
    };
    let add =
        |n, when| store.change_template(u.id, TemplateChange::AddStock(n), "merchant:1", when);
    assert_eq!(
        refused(add(0, at(1)).await.unwrap()),
        ChangeError::InvalidAdd
    );
    assert_eq!(
        refused(add(MAX_STOCK, at(1)).await.unwrap()),
        ChangeError::StockCap
    );
    assert_eq!(refused(add(1, at(11)).await.unwrap()), ChangeError::Ended);
    let term = store
        .change_template(u.id, TemplateChange::Terminate, "merchant:1", at(11))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_add_stock_loses_no_update() {
    let (_dir, store) = open().await;
    let t = fixed(1, 1, "hot", 60);
    create(&store, &t).await;
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .change_template(tid(1), TemplateChange::AddStock(1), "merchant:1", at(1))
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert!(matches!(
            task.await.unwrap().unwrap(),
            ChangeOutcome::Changed(_)
        ));
    }
    let after = store.get_template(t.id).await.unwrap().unwrap();
    assert_eq!((after.stock_total, after.stock), (150, 150));
    assert_eq!(store.audit_log(t.id).await.unwrap().len(), 51);
}

#[tokio::test]
async fn templates_due_to_end_oldest_first() {
    let (_dir, store) = open().await;
    create(&store, &fixed(1, 1, "late", 30)).await;
    create(&store, &fixed(2, 1, "early", 10)).await;
    create(&store, &fixed(3, 1, "future", 90)).await;
    create(&store, &fixed(4, 1, "terminated", 5)).await;
    store
        .change_template(tid(4), TemplateChange::Terminate, "admin:1", at(1))
        .await
        .unwrap();

    assert_eq!(
        store.templates_due_to_end(at(30), 10).await.unwrap(),
        vec![tid(2), tid(1)]
    );
    assert_eq!(
        store.templates_due_to_end(at(30), 1).await.unwrap(),
        vec![tid(2)]
    );
    assert_eq!(store.templates_due_to_end(at(9), 10).await.unwrap(), vec![]);

    let ended = store
        .change_template(tid(2), TemplateChange::End, "system", at(30))
        .await
        .unwrap();
    assert!(matches!(ended, ChangeOutcome::Changed(ref t) if t.status == TemplateStatus::Ended));
    let again = store
        .change_template(tid(2), TemplateChange::End, "system", at(30))
        .await
        .unwrap();
    assert!(matches!(again, ChangeOutcome::Unchanged(_)));
    assert_eq!(
        store.templates_due_to_end(at(30), 10).await.unwrap(),
        vec![tid(1)]
    );
}

#[tokio::test]
async fn purge_drops_old_idempotency_keys_only() {
    let (_dir, store) = open().await;
    let make = async |id: i64, key: &str, created: Timestamp| {
        let t = fixed(id, 1, key, 600);
        let rec = IdempotencyRecord {
            shop_id: shop(1),
            key: key.into(),
            request_hash: "h".into(),
            template_id: t.id,
            created_at: created,
        };
        store
            .create_template(&t, &AuditEntry::created(&t, "merchant:1"), Some(&rec))
            .await
            .unwrap()
    };
    assert!(matches!(
        make(1, "old", at(0)).await,
        CreateOutcome::Created
    ));
    assert!(matches!(
        make(2, "new", at(10)).await,
        CreateOutcome::Created
    ));

    assert_eq!(store.purge_idempotency_keys(at(10)).await.unwrap(), 1);
    assert_eq!(store.purge_idempotency_keys(at(10)).await.unwrap(), 0);
    // The purged key is free again; the kept one still replays.
    assert!(matches!(
        make(3, "old", at(20)).await,
        CreateOutcome::Created
    ));
    assert!(matches!(
        make(4, "new", at(20)).await,
        CreateOutcome::KeyExists { .. }
    ));
}

fn account(id: i64, username: &str) -> Account {
    Account {
        id,
        username: username.into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        role: Role::Merchant,
        shop_id: ShopId::new(77),
        created_at: t0(),
    }
}

#[tokio::test]
async fn accounts_round_trip_and_reject_duplicate_usernames() {
    let (_dir, store) = open().await;
    let alice = account(1, "alice");
    store.create_account(&alice).await.unwrap();
    let admin = Account {
        role: Role::Admin,
        shop_id: None,
        ..account(2, "root")
    };
    store.create_account(&admin).await.unwrap();

    assert_eq!(
        store.account_by_username("alice").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store.account_by_username("root").await.unwrap(),
        Some(admin)
    );
    assert_eq!(store.account_by_username("bob").await.unwrap(), None);

    let dup = store.create_account(&account(3, "alice")).await;
    assert!(matches!(dup, Err(StoreError::Duplicate(_))), "{dup:?}");
}

#[tokio::test]
async fn refresh_rotation_then_reuse_revokes_the_session() {
    let (_dir, store) = open().await;
    let alice = account(1, "alice");
    store.create_account(&alice).await.unwrap();
    store
        .create_session("s1", 1, "h1", at(60), t0())
        .await
        .unwrap();
    assert_eq!(
        store.session_of_refresh("h1").await.unwrap().as_deref(),
        Some("s1")
    );

    match store
        .rotate_refresh("h1", "h2", at(120), at(1))
        .await
        .unwrap()
    {
        RefreshOutcome::Rotated {
            account,
            session_id,
        } => {
            assert_eq!((account, session_id.as_str()), (alice.clone(), "s1"));
        }
        other => panic!("expected Rotated, got {other:?}"),
    }
    assert_eq!(
        store.session_of_refresh("h2").await.unwrap().as_deref(),
        Some("s1")
    );
    match store
        .rotate_refresh("h2", "h3", at(180), at(2))
        .await
        .unwrap()
    {
        RefreshOutcome::Rotated { session_id, .. } => assert_eq!(session_id, "s1"),
        other => panic!("expected Rotated, got {other:?}"),
    }

    // h1 was already used: theft suspected, the session dies, and with it the newest token.
    assert!(matches!(
        store
            .rotate_refresh("h1", "x1", at(180), at(3))
            .await
            .unwrap(),
        RefreshOutcome::Reused
    ));
    assert!(matches!(
        store
            .rotate_refresh("h3", "x2", at(180), at(4))
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    ));
    // Presenting a used token of a revoked session stays invalid (the session is already dead).
    assert!(matches!(
        store
            .rotate_refresh("h1", "x3", at(180), at(5))
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    ));

    assert!(matches!(
        store
            .rotate_refresh("nope", "x4", at(180), at(5))
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    ));
    assert_eq!(store.session_of_refresh("nope").await.unwrap(), None);

    // Expiry is exclusive of the deadline: a token expiring at `now` is already dead.
    store
        .create_session("s2", 1, "e1", at(10), t0())
        .await
        .unwrap();
    assert!(matches!(
        store
            .rotate_refresh("e1", "e2", at(100), at(10))
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    ));

    // Logout: revoking is idempotent and kills the live token.
    store
        .create_session("s3", 1, "l1", at(60), t0())
        .await
        .unwrap();
    store.revoke_session("s3", at(1)).await.unwrap();
    store.revoke_session("s3", at(2)).await.unwrap();
    store.revoke_session("unknown", at(2)).await.unwrap();
    assert!(matches!(
        store
            .rotate_refresh("l1", "l2", at(100), at(3))
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    ));

    // A second session with the same id is refused, not merged.
    let dup = store.create_session("s1", 1, "other", at(60), t0()).await;
    assert!(matches!(dup, Err(StoreError::Duplicate(_))), "{dup:?}");
}

#[tokio::test]
async fn migrate_twice_is_a_no_op_and_reopening_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stampede.db");
    let store = SqliteStore::open(
        &path,
        SqliteOptions {
            read_connections: 1,
            fsync_every_commit: true,
        },
    )
    .await
    .unwrap();
    assert_eq!(store.migrate().await.unwrap(), 0);
    assert_eq!(store.migrate().await.unwrap(), 0);
    let t = fixed(1, 1, "kept", 60);
    create(&store, &t).await;
    store.create_account(&account(1, "alice")).await.unwrap();
    drop(store);

    let reopened = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    assert_eq!(reopened.migrate().await.unwrap(), 0);
    assert_eq!(reopened.get_template(t.id).await.unwrap(), Some(t.clone()));
    assert_eq!(reopened.audit_log(t.id).await.unwrap().len(), 1);
    assert!(
        reopened
            .account_by_username("alice")
            .await
            .unwrap()
            .is_some()
    );
}
