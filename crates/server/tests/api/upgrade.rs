//! Data outlives releases: an embedded data dir written by the previous release
//! (`tests/fixtures/sqlite-e5ef497`, made by `scripts/make-sqlite-fixture.sh` with that
//! release's binary, through its API) opens with this code, migrates (the claim journal's
//! position, the reordered claim guard), and keeps every claim, key, limit and the stock.
//! Embedded only: this release changed no MySQL schema.

use crate::helpers::{
    TestBackend, backend, expect_problem, read, spawn_app_from, spawn_sibling, test_settings,
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
