//! Data outlives releases: data written by an earlier release, through its API, opens with
//! this code, migrates, and keeps every claim, key, limit and the stock.
//!
//! - `tests/fixtures/sqlite-e5ef497` (made by `scripts/make-sqlite-fixture.sh`): the claim
//!   journal's position, the reordered claim guard, the goods index.
//! - `tests/fixtures/sqlite-f472d3b` and `mysql-f472d3b` (made by
//!   `scripts/make-upgrade-fixture.sh`, an embedded data dir and the dump of MySQL 2×2):
//!   the goods index is built from the templates already stored (SQLite migration 10,
//!   MySQL migration 7), so the back-office goods search and discovery find them.

use crate::helpers::{
    TestApp, TestBackend, backend, expect_problem, mysql_base, read, spawn_app_from, spawn_sibling,
    test_settings,
};
use jiff::Timestamp;
use serde_json::{Value, json};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sqlite-e5ef497");

async fn coupons_of(app: &crate::helpers::TestApp, user: u64) -> Vec<Value> {
    let (s, v) = read(app.get("/api/v1/me/coupons", &app.user_n(user)).await).await;
    assert_eq!(s, 200, "{v}");
    v["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_data_dir_from_the_previous_release_migrates_and_keeps_its_claims() {
    if backend() != TestBackend::Sqlite {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for file in ["stampede.db", "made-at"] {
        std::fs::copy(format!("{FIXTURE}/{file}"), dir.path().join(file))
            .unwrap_or_else(|e| panic!("copying {file}: {e}"));
    }
    let made_at: i64 = std::fs::read_to_string(dir.path().join("made-at"))
        .unwrap_or_else(|e| panic!("{e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let (settings, urls) = test_settings(dir.path(), false);
    let app = spawn_app_from(dir, settings, urls).await;
    // Inside the fixture's claim window and its coupons' validity, whenever the test runs.
    app.clock
        .set(Timestamp::from_second(made_at + 3600).unwrap_or_else(|e| panic!("{e}")));

    let (s, list) = read(
        app.get("/api/v1/merchant/templates", &app.merchant(7))
            .await,
    )
    .await;
    assert_eq!(s, 200, "{list}");
    let items = list["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{list}");
    let id = items[0]["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(items[0]["stock"], 96, "100 minus the 4 claimed: {list}");

    let held = coupons_of(&app, 1001).await;
    assert_eq!(held.len(), 2);
    assert_eq!(coupons_of(&app, 1002).await.len(), 1);
    assert_eq!(coupons_of(&app, 1003).await.len(), 1);

    // An old key replays its coupon; the user's third claim is seq 3, the fourth is refused.
    let path = format!("/api/v1/templates/{id}/claim");
    let u = app.user_n(1001);
    let (s, v) = read(app.post_with_key(&path, &u, "fx-1001-a", &json!({})).await).await;
    assert_eq!(s, 200, "a replay: {v}");
    assert!(
        held.iter().any(|c| c["id"] == v["coupon"]["id"]),
        "replayed {v} is one of {held:?}"
    );
    let (s, third) = read(
        app.post_with_key(&path, &u, "after-upgrade", &json!({}))
            .await,
    )
    .await;
    assert_eq!(s, 201, "{third}");
    assert_eq!(third["coupon"]["seq"], 3, "{third}");
    expect_problem(
        app.post_with_key(&path, &u, "one-too-many", &json!({}))
            .await,
        409,
        "LIMIT_REACHED",
    )
    .await;

    // A restart keeps the new claim (journal or SQLite) and the stock.
    app.stop();
    let again = spawn_sibling(&app).await;
    again
        .clock
        .set(Timestamp::from_second(made_at + 3600).unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(coupons_of(&again, 1001).await.len(), 3);
    let (_, t) = read(
        again
            .get(
                &format!("/api/v1/merchant/templates/{id}"),
                &again.merchant(7),
            )
            .await,
    )
    .await;
    assert_eq!(t["stock"], 95, "{t}");
}

const F472: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// The fixture's `made-at` and template ids (shop-wide; goods 11 and 12; shop 8's goods 11).
fn fixture_facts(dir: &str) -> (i64, [String; 3]) {
    let read = |f: &str| {
        std::fs::read_to_string(format!("{dir}/{f}")).unwrap_or_else(|e| panic!("{dir}/{f}: {e}"))
    };
    let made_at = read("made-at")
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<String> = read("ids").split_whitespace().map(str::to_owned).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    (made_at, [ids[0].clone(), ids[1].clone(), ids[2].clone()])
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn ids_of(v: &Value) -> Vec<String> {
    sorted(
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["id"].as_str().map(str::to_owned))
            .collect(),
    )
}

/// What every f472d3b fixture must still show after the upgrade.
async fn check_f472d3b(app: &TestApp, made_at: i64, ids: &[String; 3]) {
    app.clock
        .set(Timestamp::from_second(made_at + 3600).unwrap_or_else(|e| panic!("{e}")));
    let [tpl, goods_a, goods_b] = ids;
    let get = async |path: &str, token: &str| {
        let (s, v) = read(app.get(path, token).await).await;
        assert_eq!(s, 200, "{path}: {v}");
        v
    };
    let admin = app.admin();
    let t = get(
        &format!("/api/v1/merchant/templates/{tpl}"),
        &app.merchant(7),
    )
    .await;
    assert_eq!(t["stock"], 96, "100 minus the 4 claimed: {t}");
    // The goods index was built from the stored templates.
    let v = get("/api/v1/merchant/templates?goods_id=11", &admin).await;
    assert_eq!(
        ids_of(&v),
        sorted(vec![goods_a.clone(), goods_b.clone()]),
        "{v}"
    );
    let v = get("/api/v1/merchant/templates?goods_id=12", &admin).await;
    assert_eq!(ids_of(&v), vec![goods_a.clone()], "{v}");
    let v = get("/api/v1/goods/12/templates?shop_id=7", &app.user()).await;
    assert_eq!(
        ids_of(&v),
        sorted(vec![tpl.clone(), goods_a.clone()]),
        "{v}"
    );

    assert_eq!(coupons_of(app, 1001).await.len(), 2);
    assert_eq!(coupons_of(app, 1002).await.len(), 1);
    assert_eq!(coupons_of(app, 1003).await.len(), 1);
    let path = format!("/api/v1/templates/{tpl}/claim");
    let u = app.user_n(1001);
    let (s, v) = read(app.post_with_key(&path, &u, "fx-1001-a", &json!({})).await).await;
    assert_eq!(s, 200, "a replay: {v}");
    let (s, third) = read(
        app.post_with_key(&path, &u, "after-upgrade", &json!({}))
            .await,
    )
    .await;
    assert_eq!(s, 201, "{third}");
    assert_eq!(third["coupon"]["seq"], 3, "{third}");
    expect_problem(
        app.post_with_key(&path, &u, "one-too-many", &json!({}))
            .await,
        409,
        "LIMIT_REACHED",
    )
    .await;
}

#[tokio::test]
async fn an_embedded_data_dir_from_f472d3b_gets_its_goods_index() {
    if backend() != TestBackend::Sqlite {
        return;
    }
    let fixture = format!("{F472}/sqlite-f472d3b");
    let (made_at, ids) = fixture_facts(&fixture);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // The data dir as that release left it: the database and the claim journal.
    std::fs::copy(
        format!("{fixture}/stampede.db"),
        dir.path().join("stampede.db"),
    )
    .unwrap_or_else(|e| panic!("copying the fixture: {e}"));
    let journal = dir.path().join("claim-journal");
    std::fs::create_dir_all(&journal).unwrap_or_else(|e| panic!("{e}"));
    for entry in std::fs::read_dir(format!("{fixture}/claim-journal"))
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
    {
        std::fs::copy(entry.path(), journal.join(entry.file_name()))
            .unwrap_or_else(|e| panic!("copying {:?}: {e}", entry.path()));
    }
    let (settings, urls) = test_settings(dir.path(), false);
    let app = spawn_app_from(dir, settings, urls).await;
    check_f472d3b(&app, made_at, &ids).await;
}

/// MySQL 2×2 shards written by f472d3b, loaded into this test's own databases.
#[tokio::test]
async fn mysql_shards_from_f472d3b_get_their_goods_index() {
    // Once per run of the suite is enough: the fixture fixes its own layout.
    if backend()
        != (TestBackend::Mysql {
            databases: 2,
            tables: 4,
        })
    {
        return;
    }
    use sqlx::Connection;
    let fixture = format!("{F472}/mysql-f472d3b");
    let (made_at, ids) = fixture_facts(&fixture);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (mut settings, _) = test_settings(dir.path(), true);
    let tag: u64 = rand::random();
    let mut urls = Vec::new();
    for i in 0..2 {
        let name = format!("stampede_t_{tag:016x}_{i}");
        let mut admin = sqlx::MySqlConnection::connect(&mysql_base())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let url = format!("{}/{name}", mysql_base());
        let mut conn = sqlx::MySqlConnection::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let dump = std::fs::read_to_string(format!("{fixture}/db{i}.sql"))
            .unwrap_or_else(|e| panic!("{e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(dump))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("loading db{i}.sql: {e}"));
        urls.push(url);
    }
    settings.storage.mysql.databases = urls.clone();
    settings.storage.mysql.tables_per_database = 2;
    let app = spawn_app_from(dir, settings, urls).await;
    check_f472d3b(&app, made_at, &ids).await;
}
