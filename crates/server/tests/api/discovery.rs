//! Coupon discovery: shop pages, product pages, claimable coupons of a cart.

use crate::helpers::*;
use jiff::SignedDuration;
use reqwest::StatusCode;
use serde_json::{Value, json};

const CREATE: &str = "/api/v1/merchant/templates";

/// A template body open from a minute ago (or `start_h` hours from now) for a day.
fn body(app: &TestApp, name: &str, rule: Value, start_h: i64, goods: &[&str]) -> Value {
    let start = if start_h == 0 {
        app.now() - SignedDuration::from_mins(1)
    } else {
        app.now() + SignedDuration::from_hours(start_h)
    };
    let mut b = json!({
        "name": name,
        "stock_total": 100,
        "claim_start": start.to_string(),
        "claim_end": (start + SignedDuration::from_hours(24)).to_string(),
        "validity_hours": 72
    });
    for (k, v) in rule.as_object().into_iter().flatten() {
        b[k] = v.clone();
    }
    if !goods.is_empty() {
        b["scope"] = json!("goods");
        b["goods_ids"] = json!(goods);
    }
    b
}

async fn make(app: &TestApp, token: &str, b: &Value) -> String {
    let r = app.post(CREATE, token, b).await;
    let (s, v) = read(r).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    id_of(&v)
}

/// Shop 7: `fixed` 5.00 (open), `threshold` 20.00 over 50.00 (open), 10 % on goods 11
/// (opens in 2 h), one opening in 48 h (beyond the horizon); shop 8: one template; the
/// platform: `fixed` 3.00.
struct Shop7 {
    fixed: String,
    threshold: String,
    percent: String,
    later: String,
    other_shop: String,
    platform: String,
}

async fn shop7(app: &TestApp) -> Shop7 {
    let m7 = app.merchant(7);
    let fixed = make(
        app,
        &m7,
        &body(
            app,
            "Five off",
            json!({"kind": "fixed", "amount_off": 500}),
            0,
            &[],
        ),
    )
    .await;
    let threshold = make(
        app,
        &m7,
        &body(
            app,
            "Twenty off fifty",
            json!({"kind": "threshold", "amount_off": 2000, "threshold": 5000}),
            0,
            &[],
        ),
    )
    .await;
    let percent = make(
        app,
        &m7,
        &body(
            app,
            "Ten percent on 11",
            json!({"kind": "percent", "percent_off": 10}),
            2,
            &["11"],
        ),
    )
    .await;
    let later = make(
        app,
        &m7,
        &body(
            app,
            "Later",
            json!({"kind": "fixed", "amount_off": 100}),
            48,
            &[],
        ),
    )
    .await;
    let other_shop = make(
        app,
        &app.merchant(8),
        &body(
            app,
            "Shop 8",
            json!({"kind": "fixed", "amount_off": 900}),
            0,
            &[],
        ),
    )
    .await;
    let mut p = body(
        app,
        "Platform",
        json!({"kind": "fixed", "amount_off": 300}),
        0,
        &[],
    );
    p["source"] = json!("platform");
    let platform = make(app, &app.admin(), &p).await;
    Shop7 {
        fixed,
        threshold,
        percent,
        later,
        other_shop,
        platform,
    }
}

async fn get(app: &TestApp, path: &str, token: &str) -> Value {
    let (s, v) = read(app.get(path, token).await).await;
    assert_eq!(s, StatusCode::OK, "{path}: {v}");
    v
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(id_of)
        .collect()
}

fn expect_ids(page: &Value, want: &[&String]) {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    assert_eq!(ids(page), want, "{page}");
}

fn item<'a>(page: &'a Value, id: &str) -> &'a Value {
    page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {page}"))
}

#[tokio::test]
async fn a_shop_page_lists_claimable_templates_most_useful_first() {
    let app = spawn_app().await;
    let f = shop7(&app).await;
    let user = app.user();

    // On 100.00: threshold 20.00, percent 10.00, fixed 5.00. Not the one beyond the horizon,
    // nor another shop's, nor the platform's unless asked.
    let page = get(&app, "/api/v1/shops/7/templates", &user).await;
    expect_ids(&page, &[&f.threshold, &f.percent, &f.fixed]);
    assert!(page.get("next_cursor").is_none(), "{page}");
    let t = item(&page, &f.threshold);
    assert_eq!(t["discount"], 2000);
    assert_eq!(t["remaining_stock"], 100);
    assert_eq!(t["stock_level"], "plenty");
    assert_eq!(t["kind"], "threshold");
    assert_eq!(t["user_claimed"], 0);
    assert_eq!(t["user_limit"], 1);
    assert_eq!(t["can_claim"], true);
    // Upcoming: listed, but not claimable yet.
    assert_eq!(item(&page, &f.percent)["can_claim"], false);

    // Below the threshold it gives nothing and sorts last.
    let page = get(&app, "/api/v1/shops/7/templates?price=4000", &user).await;
    expect_ids(&page, &[&f.fixed, &f.percent, &f.threshold]);
    assert_eq!(item(&page, &f.threshold)["discount"], 0);

    let page = get(
        &app,
        "/api/v1/shops/7/templates?include_platform=true",
        &user,
    )
    .await;
    expect_ids(&page, &[&f.threshold, &f.percent, &f.fixed, &f.platform]);

    // A merchant (or anyone not a user) gets no per-user fields.
    let page = get(&app, "/api/v1/shops/7/templates", &app.merchant(8)).await;
    let t = item(&page, &f.fixed);
    assert!(
        t.get("user_claimed").is_none() && t.get("can_claim").is_none(),
        "{t}"
    );

    // Claiming moves the user's fields and the stock.
    let r = app
        .post(
            &format!("/api/v1/templates/{}/claim", f.fixed),
            &user,
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let page = get(&app, "/api/v1/shops/7/templates", &user).await;
    let t = item(&page, &f.fixed);
    assert_eq!(t["user_claimed"], 1, "{t}");
    assert_eq!(t["can_claim"], false, "{t}");
    assert_eq!(t["remaining_stock"], 99, "{t}");
    let page = get(&app, "/api/v1/shops/8/templates", &user).await;
    expect_ids(&page, &[&f.other_shop]);
    let page = get(&app, "/api/v1/shops/9/templates", &user).await;
    assert_eq!(page["items"], json!([]));
    assert!(!ids(&get(&app, "/api/v1/shops/7/templates", &user).await).contains(&f.later));
}

#[tokio::test]
async fn a_product_page_lists_what_applies_to_the_product() {
    let app = spawn_app().await;
    let f = shop7(&app).await;
    let user = app.user();
    let page = get(&app, "/api/v1/goods/11/templates?shop_id=7", &user).await;
    expect_ids(&page, &[&f.threshold, &f.percent, &f.fixed, &f.platform]);
    let page = get(
        &app,
        "/api/v1/goods/12/templates?shop_id=7&price=3000",
        &user,
    )
    .await;
    expect_ids(&page, &[&f.fixed, &f.platform, &f.threshold]);
    let page = get(&app, "/api/v1/goods/11/templates?shop_id=8", &user).await;
    expect_ids(&page, &[&f.other_shop, &f.platform]);
}

#[tokio::test]
async fn discovery_refuses_bad_input_as_problems() {
    let app = spawn_app().await;
    let user = app.user();
    for path in [
        "/api/v1/shops/0/templates",
        "/api/v1/shops/abc/templates",
        "/api/v1/goods/0/templates?shop_id=7",
        "/api/v1/goods/x/templates?shop_id=7",
    ] {
        expect_problem(app.get(path, &user).await, 404, "NOT_FOUND").await;
    }
    let v = expect_problem(
        app.get(
            "/api/v1/shops/7/templates?limit=0&price=-5&include_platform=yes&include_sold_out=1&cursor=zz",
            &user,
        )
        .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    let mut fields = error_fields(&v);
    fields.sort();
    assert_eq!(
        fields,
        [
            "cursor",
            "include_platform",
            "include_sold_out",
            "limit",
            "price"
        ]
    );
    let v = expect_problem(
        app.get("/api/v1/goods/11/templates", &user).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&v), ["shop_id"]);
    let v = expect_problem(
        app.get("/api/v1/goods/11/templates?shop_id=0", &user).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&v), ["shop_id"]);
    expect_problem(
        app.client
            .get(app.url("/api/v1/shops/7/templates"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        401,
        "UNAUTHENTICATED",
    )
    .await;
}

#[tokio::test]
async fn pages_follow_the_cursor() {
    let app = spawn_app().await;
    let m7 = app.merchant(7);
    let mut made = Vec::new();
    for i in 1..=5 {
        made.push(
            make(
                &app,
                &m7,
                &body(
                    &app,
                    &format!("t{i}"),
                    json!({"kind": "fixed", "amount_off": 100 * i}),
                    0,
                    &[],
                ),
            )
            .await,
        );
    }
    made.reverse();
    let user = app.user();
    let mut seen = Vec::new();
    let mut path = "/api/v1/shops/7/templates?limit=2".to_owned();
    for _ in 0..5 {
        let page = get(&app, &path, &user).await;
        assert!(page["items"].as_array().map_or(0, Vec::len) <= 2);
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/shops/7/templates?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, made);
}

#[tokio::test]
async fn changes_leave_listings_at_once_and_hits_need_no_query() {
    let app = spawn_app().await;
    let f = shop7(&app).await;
    let m7 = app.merchant(7);
    let one = make(&app, &m7, &{
        let mut b = body(
            &app,
            "Last one",
            json!({"kind": "fixed", "amount_off": 50}),
            0,
            &[],
        );
        b["stock_total"] = json!(1);
        b
    })
    .await;
    let user = app.user();
    let path = "/api/v1/shops/7/templates";
    assert!(ids(&get(&app, path, &user).await).contains(&one));
    get(&app, "/api/v1/goods/11/templates?shop_id=7", &user).await;

    // Steady state: no store query per request.
    let before = app.discovery.db_queries();
    for _ in 0..20 {
        get(&app, path, &user).await;
        get(&app, "/api/v1/goods/11/templates?shop_id=7", &user).await;
    }
    assert_eq!(app.discovery.db_queries(), before);

    // Terminated: gone on the next request.
    let r = app
        .post(
            &format!("{CREATE}/{}/terminate", f.threshold),
            &m7,
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(!ids(&get(&app, path, &user).await).contains(&f.threshold));

    // Sold out: gone, unless asked for.
    let r = app
        .post(
            &format!("/api/v1/templates/{one}/claim"),
            &app.user_n(5),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(!ids(&get(&app, path, &user).await).contains(&one));
    let page = get(&app, &format!("{path}?include_sold_out=true"), &user).await;
    assert_eq!(item(&page, &one)["stock_level"], "sold_out");
    assert_eq!(item(&page, &one)["remaining_stock"], 0);

    // Restocked: back.
    let r = app
        .post(&format!("{CREATE}/{one}/stock"), &m7, &json!({"add": 5}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = get(&app, path, &user).await;
    assert_eq!(item(&page, &one)["remaining_stock"], 5);
    assert_eq!(item(&page, &one)["stock_level"], "few");

    // Ended: gone once the window closes, with no signal at all.
    app.advance(SignedDuration::from_hours(25));
    let left = ids(&get(&app, path, &user).await);
    assert!(!left.contains(&f.fixed) && !left.contains(&one), "{left:?}");
    assert!(
        left.contains(&f.percent),
        "opened at +2 h, still open: {left:?}"
    );
}

fn cart() -> Value {
    json!([{"goods_id": "11", "shop_id": "7", "unit_price": 3000, "quantity": 2}])
}

#[tokio::test]
async fn a_cart_lists_what_the_user_could_still_claim_for_it() {
    let app = spawn_app().await;
    let f = shop7(&app).await;
    let user = app.user();
    let path = "/api/v1/checkout/claimable";
    // 60.00 of shop 7: threshold 20.00, fixed 5.00, platform 3.00; the percent one has
    // not opened, shop 8's is not in the cart.
    let (s, page) = read(app.post(path, &user, &json!({"items": cart()})).await).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    expect_ids(&page, &[&f.threshold, &f.fixed, &f.platform]);
    assert_eq!(item(&page, &f.threshold)["discount"], 2000);
    assert_eq!(item(&page, &f.platform)["discount"], 300);

    // Below the threshold it would not lower the price.
    let small = json!([{"goods_id": "11", "shop_id": "7", "unit_price": 1000, "quantity": 1}]);
    let (_, page) = read(app.post(path, &user, &json!({"items": small})).await).await;
    expect_ids(&page, &[&f.fixed, &f.platform]);

    // Claimed up to the limit: no longer offered.
    let r = app
        .post(
            &format!("/api/v1/templates/{}/claim", f.fixed),
            &user,
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let (_, page) = read(app.post(path, &user, &json!({"items": cart()})).await).await;
    expect_ids(&page, &[&f.threshold, &f.platform]);
    let (_, page) = read(
        app.post(&format!("{path}?limit=1"), &user, &json!({"items": cart()}))
            .await,
    )
    .await;
    expect_ids(&page, &[&f.threshold]);
    let c = page["next_cursor"].as_str().unwrap_or_default().to_owned();
    let (_, page) = read(
        app.post(
            &format!("{path}?limit=1&cursor={c}"),
            &user,
            &json!({"items": cart()}),
        )
        .await,
    )
    .await;
    expect_ids(&page, &[&f.platform]);

    expect_problem(
        app.post(path, &app.merchant(7), &json!({"items": cart()}))
            .await,
        403,
        "FORBIDDEN",
    )
    .await;
    let v = expect_problem(
        app.post(
            &format!("{path}?limit=500"),
            &user,
            &json!({"items": [], "x": 1}),
        )
        .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    let mut fields = error_fields(&v);
    fields.sort();
    assert_eq!(fields, ["items", "limit", "x"], "{v}");
    let r = app
        .client
        .post(app.url(path))
        .bearer_auth(&user)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    expect_problem(r, 400, "MALFORMED_REQUEST").await;
}

/// Distributed mode: a change made on one node leaves the other node's listings within a
/// second, long before the listing's TTL (an hour here): a termination (the shop broadcast),
/// a sell-out (stock read from the shared hot state) and an end (the window, per request).
#[tokio::test]
async fn a_change_on_one_node_leaves_the_other_nodes_listings() {
    if backend() == TestBackend::Sqlite {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (mut settings, urls) = test_settings(dir.path(), false);
    settings.discovery.listing_ttl = Some(std::time::Duration::from_secs(3_600));
    let a = spawn_app_from(dir, settings, urls).await;
    let b = spawn_sibling(&a).await;
    let f = shop7(&a).await;
    let user = b.user();
    let path = "/api/v1/shops/7/templates";
    let listed = |page: &Value| ids(page).contains(&f.threshold);
    // Node B's listing warms (and holds the template).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !listed(&get(&b, path, &user).await) {
        assert!(
            std::time::Instant::now() < deadline,
            "node B never listed it"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let r = a
        .post(
            &format!("{CREATE}/{}/terminate", f.threshold),
            &a.merchant(7),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let t0 = std::time::Instant::now();
    while listed(&get(&b, path, &user).await) {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(1),
            "node B still lists a terminated template after a second"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Sold out on node A: node B stops listing it at once.
    let one = make(&a, &a.merchant(7), &{
        let mut body = body(
            &a,
            "Last one",
            json!({"kind": "fixed", "amount_off": 50}),
            0,
            &[],
        );
        body["stock_total"] = json!(1);
        body
    })
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !ids(&get(&b, path, &user).await).contains(&one) {
        assert!(
            std::time::Instant::now() < deadline,
            "node B never listed the new template"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let r = a
        .post(
            &format!("/api/v1/templates/{one}/claim"),
            &a.user_n(5),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let t0 = std::time::Instant::now();
    while ids(&get(&b, path, &user).await).contains(&one) {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(1),
            "node B still lists a sold-out template after a second"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Ended: node B's clock passes the window's end; nothing needs telling.
    assert!(ids(&get(&b, path, &user).await).contains(&f.fixed));
    b.advance(SignedDuration::from_hours(25));
    assert!(!ids(&get(&b, path, &user).await).contains(&f.fixed));
}

fn page_ids(page: &Value) -> Vec<String> {
    let mut v = ids(page);
    v.sort();
    v
}

fn sorted(ids: &[&String]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn the_back_office_searches_by_goods_and_claim_window() {
    let app = spawn_app().await;
    let f = shop7(&app).await;
    let m8_goods = make(
        &app,
        &app.merchant(8),
        &body(
            &app,
            "Shop 8 on 11",
            json!({"kind": "fixed", "amount_off": 100}),
            0,
            &["11"],
        ),
    )
    .await;
    let list = "/api/v1/merchant/templates";
    let m7 = app.merchant(7);
    let admin = app.admin();

    let page = get(&app, &format!("{list}?goods_id=11"), &m7).await;
    assert_eq!(page_ids(&page), sorted(&[&f.percent]), "{page}");
    assert_eq!(page["total"], 1);
    // Admins search every shop (one query per database).
    let page = get(&app, &format!("{list}?goods_id=11"), &admin).await;
    assert_eq!(page_ids(&page), sorted(&[&f.percent, &m8_goods]), "{page}");
    let page = get(&app, &format!("{list}?goods_id=11&shop_id=8"), &admin).await;
    assert_eq!(page_ids(&page), sorted(&[&m8_goods]), "{page}");

    // Windows: shop 7's open ones run [-1 min, +24 h), the percent one [+2 h, +26 h), the
    // later one [+48 h, +72 h).
    let at = |h: i64| (app.now() + SignedDuration::from_hours(h)).to_string();
    let page = get(
        &app,
        &format!("{list}?claim_from={}&claim_to={}", at(30), at(50)),
        &m7,
    )
    .await;
    assert_eq!(page_ids(&page), sorted(&[&f.later]), "{page}");
    let page = get(&app, &format!("{list}?claim_from={}", at(25)), &m7).await;
    assert_eq!(page_ids(&page), sorted(&[&f.percent, &f.later]), "{page}");
    let page = get(
        &app,
        &format!("{list}?claim_to={}&kind=fixed&name=five", at(1)),
        &m7,
    )
    .await;
    assert_eq!(page_ids(&page), sorted(&[&f.fixed]), "{page}");

    let v = expect_problem(
        app.get(
            &format!("{list}?goods_id=x&claim_from=yesterday&claim_to={}", at(1)),
            &m7,
        )
        .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    let mut fields = error_fields(&v);
    fields.sort();
    assert_eq!(fields, ["claim_from", "goods_id"], "{v}");
    let v = expect_problem(
        app.get(
            &format!("{list}?claim_from={}&claim_to={}", at(5), at(5)),
            &m7,
        )
        .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&v), ["claim_to"], "{v}");
}
