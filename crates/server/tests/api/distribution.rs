//! Distribution tasks over HTTP: upload (every refusal), execution to `completed` with exact
//! counters and per-row reasons, schedules, cancel, failure reports, idempotency, completion
//! callbacks and the outbox event, and distributions racing claims.

use crate::helpers::*;
use jiff::SignedDuration;
use reqwest::multipart::{Form, Part};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use stampede_domain::distribution::{FileFormat, local_file_name};
use stampede_domain::ids::DistributionId;
use std::io::Write;

const BASE: &str = "/api/v1/merchant/distributions";

fn csv_of(lines: &[&str]) -> Vec<u8> {
    let mut s = lines.join("\n");
    s.push('\n');
    s.into_bytes()
}

fn ids_csv(first: u64, n: u64) -> Vec<u8> {
    let mut s = String::from("user_id\n");
    for i in 0..n {
        s.push_str(&(first + i).to_string());
        s.push('\n');
    }
    s.into_bytes()
}

/// A real XLSX with `ids` in column A under a header (written by the CLI's generator).
fn xlsx_ids(first: u64, n: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = dir.path().join("u.xlsx");
    stampede_server::datagen::users(n, first, stampede_server::datagen::Format::Xlsx, &p)
        .unwrap_or_else(|e| panic!("{e:#}"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{e}"))
}

pub struct Upload<'a> {
    pub template_id: &'a str,
    pub name: &'a str,
    pub file: Vec<u8>,
    pub file_name: &'a str,
    pub extra: Vec<(&'a str, String)>,
    pub key: Option<&'a str>,
}

impl<'a> Upload<'a> {
    pub fn csv(template_id: &'a str, file: Vec<u8>) -> Self {
        Self {
            template_id,
            name: "push",
            file,
            file_name: "users.csv",
            extra: Vec::new(),
            key: None,
        }
    }
}

pub async fn upload(app: &TestApp, token: &str, u: Upload<'_>) -> Response {
    let mut form = Form::new()
        .text("template_id", u.template_id.to_owned())
        .text("name", u.name.to_owned());
    for (k, v) in u.extra {
        form = form.text(k.to_owned(), v);
    }
    form = form.part(
        "file",
        Part::bytes(u.file).file_name(u.file_name.to_owned()),
    );
    let mut req = app
        .client
        .post(app.url(BASE))
        .bearer_auth(token)
        .multipart(form);
    if let Some(k) = u.key {
        req = req.header("Idempotency-Key", k);
    }
    req.send().await.unwrap_or_else(|e| panic!("upload: {e}"))
}

async fn accepted(app: &TestApp, token: &str, u: Upload<'_>) -> Value {
    let (s, v) = read(upload(app, token, u).await).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["status"], "pending", "{v}");
    v
}

async fn task(app: &TestApp, token: &str, id: &str) -> Value {
    let (s, v) = read(app.get(&format!("{BASE}/{id}"), token).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

async fn report(app: &TestApp, token: &str, id: &str) -> Vec<(u64, String, String)> {
    let r = app
        .get(&format!("{BASE}/{id}/failures?format=csv"), token)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap_or_default();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("row,user_id,reason"));
    lines
        .map(|l| {
            let mut it = l.splitn(3, ',');
            let row = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
            let user = it.next().unwrap_or("").trim_matches('"').to_owned();
            (row, user, it.next().unwrap_or("").to_owned())
        })
        .collect()
}

/// A template of `shop` with `stock` and `limit`, claimable now.
async fn template(app: &TestApp, token: &str, stock: i64, limit: i64) -> String {
    let mut body = app.template_body("dist");
    body["stock_total"] = json!(stock);
    body["per_user_limit"] = json!(limit);
    body["claim_start"] = json!((app.now() - SignedDuration::from_mins(1)).to_string());
    id_of(&app.create(token, &body).await)
}

fn counters(v: &Value) -> (u64, u64, u64, u64) {
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    (
        n("total_rows"),
        n("processed_rows"),
        n("succeeded"),
        n("failed"),
    )
}

async fn stock_of(app: &TestApp, token: &str, t: &str) -> i64 {
    let (_, v) = read(
        app.get(&format!("/api/v1/merchant/templates/{t}"), token)
            .await,
    )
    .await;
    v["stock"].as_i64().unwrap_or(-1)
}

#[tokio::test]
async fn a_csv_distribution_issues_one_coupon_per_user_and_reports_every_other_row() {
    let app = spawn_app().await;
    let m = app.merchant(7);
    let t = template(&app, &m, 100, 2).await;
    // User 5 already holds 2 (the limit) from claims.
    for _ in 0..2 {
        let r = app
            .post(
                &format!("/api/v1/templates/{t}/claim"),
                &app.user_n(5),
                &json!({}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let file = csv_of(&[
        "user_id,name",         // row 1: header (skipped)
        "1,ann",                // 2 ok
        "2",                    // 3 ok
        "abc",                  // 4 invalid
        "-3",                   // 5 invalid
        "",                     // blank: skipped, not counted
        ",only-a-name",         // 7 invalid (empty id)
        "99999999999999999999", // 8 invalid (overflow)
        "2",                    // 9 ok: user 2's second (limit 2)
        "2",                    // 10 duplicate beyond the limit
        "5",                    // 11 already at the limit from claims
        "0",                    // 12 invalid
    ]);
    let v = accepted(&app, &m, Upload::csv(&t, file)).await;
    let id = id_of(&v);
    assert_eq!(v["total_rows"], 10, "{v}");
    assert_eq!(v["file_format"], "csv");
    app.drain().await;
    let v = task(&app, &m, &id).await;
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(counters(&v), (10, 10, 3, 7), "{v}");
    assert!(v["started_at"].is_string() && v["finished_at"].is_string());
    let rows = report(&app, &m, &id).await;
    let got: Vec<(u64, &str)> = rows.iter().map(|(r, _, why)| (*r, why.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (4, "INVALID_USER_ID"),
            (5, "INVALID_USER_ID"),
            (7, "INVALID_USER_ID"),
            (8, "INVALID_USER_ID"),
            (10, "DUPLICATE_IN_FILE"),
            (11, "LIMIT_REACHED"),
            (12, "INVALID_USER_ID"),
        ]
    );
    assert_eq!(rows[0].1, "abc");
    // Stock 100 - 2 claimed - 3 distributed.
    assert_eq!(stock_of(&app, &m, &t).await, 95);
    // Distributed coupons are the users' coupons like any other.
    let (_, mine) = read(app.get("/api/v1/me/coupons", &app.user_n(2)).await).await;
    let items = mine["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 2, "{mine}");
    assert!(items.iter().all(|c| c["origin"] == "distribution"));
    // And they count toward the limit: user 2 can claim no more.
    let r = app
        .post(
            &format!("/api/v1/templates/{t}/claim"),
            &app.user_n(2),
            &json!({}),
        )
        .await;
    expect_problem(r, 409, "LIMIT_REACHED").await;
    // The completion event is in the outbox.
    let events = app
        .coupons
        .outbox_events("distribution.completed", 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(events.len(), 1);
    crate::event_schemas::assert_documented(&events);
    let payload: Value = serde_json::from_str(&events[0].payload).unwrap_or(Value::Null);
    assert_eq!(payload["distribution_id"], id.as_str());
    assert_eq!(payload["succeeded"], 3);
    assert_eq!(payload["status"], "completed");
}

#[tokio::test]
async fn an_xlsx_distribution_with_less_stock_than_rows_sells_out_exactly() {
    let app = spawn_app().await;
    let m = app.merchant(7);
    let t = template(&app, &m, 1_000, 1).await;
    let mut u = Upload::csv(&t, xlsx_ids(10_000, 2_500));
    u.file_name = "users.xlsx";
    let v = accepted(&app, &m, u).await;
    assert_eq!(v["file_format"], "xlsx");
    assert_eq!(v["total_rows"], 2_500);
    let id = id_of(&v);
    app.drain().await;
    let v = task(&app, &m, &id).await;
    assert_eq!(counters(&v), (2_500, 2_500, 1_000, 1_500), "{v}");
    assert_eq!(stock_of(&app, &m, &t).await, 0);
    let rows = report(&app, &m, &id).await;
    assert_eq!(rows.len(), 1_500);
    assert!(rows.iter().all(|(_, _, why)| why == "SOLD_OUT"));
    // The first 1,000 users (rows 2..=1001) got theirs: the first failure is row 1002.
    assert_eq!(rows[0].0, 1_002);
    assert_eq!(rows[0].1, "11000");
    // The XLSX report reads back with the same rows.
    let r = app
        .get(&format!("{BASE}/{id}/failures?format=xlsx"), &m)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .contains("spreadsheetml")
    );
    let bytes = r.bytes().await.unwrap_or_default();
    let mut wb: calamine::Xlsx<_> =
        calamine::open_workbook_from_rs(std::io::Cursor::new(bytes.to_vec()))
            .unwrap_or_else(|e| panic!("{e}"));
    use calamine::Reader;
    let sheet = wb.sheet_names()[0].clone();
    let range = wb.worksheet_range(&sheet).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(range.height(), 1_501);
}

#[tokio::test]
async fn hostile_and_bad_files_are_refused_at_upload_and_create_nothing() {
    let app = spawn_app().await;
    let m = app.merchant(7);
    let t = template(&app, &m, 100, 1).await;
    let png = [
        0x89u8, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13,
    ]
    .repeat(20);
    let mut u = Upload::csv(&t, png);
    u.file_name = "users.xlsx";
    expect_problem(upload(&app, &m, u).await, 415, "UNSUPPORTED_MEDIA_TYPE").await;
    // A legacy .xls (OLE2) is not accepted either.
    let mut ole = vec![0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
    ole.extend(vec![0u8; 600]);
    expect_problem(
        upload(&app, &m, Upload::csv(&t, ole)).await,
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    .await;
    for (file, why) in [
        (Vec::new(), "empty"),
        (csv_of(&["user_id"]), "header only"),
        (
            csv_of(&["email", "a@example.com", "b@example.com"]),
            "wrong column",
        ),
        (
            csv_of(&["name,user_id", "ann,1", "bob,2"]),
            "ids not in the first column",
        ),
    ] {
        let v = expect_problem(
            upload(&app, &m, Upload::csv(&t, file)).await,
            422,
            "VALIDATION_FAILED",
        )
        .await;
        assert_eq!(error_fields(&v), vec!["file"], "{why}: {v}");
    }
    // A 50 MB cell.
    let mut big = b"user_id\n1\n".to_vec();
    big.extend(std::iter::repeat_n(b'7', 50 * 1024 * 1024));
    big.push(b'\n');
    let v = expect_problem(
        upload(&app, &m, Upload::csv(&t, big)).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("cell"),
        "{v}"
    );
    // A zip bomb dressed as an XLSX: a tiny file whose sheet inflates far beyond it.
    let mut u = Upload::csv(&t, zip_bomb());
    u.file_name = "users.xlsx";
    let v = expect_problem(upload(&app, &m, u).await, 422, "VALIDATION_FAILED").await;
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("zip bomb"),
        "{v}"
    );
    // Nothing was created.
    let (_, list) = read(app.get(BASE, &m).await).await;
    assert_eq!(list["total"], 0, "{list}");
}

/// An xlsx-shaped zip whose worksheet inflates ~1,000:1 to 64 MiB: rows padded with runs of
/// blanks (each shorter than the cell limit, so only the ratio gives it away).
fn zip_bomb() -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(true);
        let small =
            |z: &mut zip::ZipWriter<&mut std::io::Cursor<Vec<u8>>>, name: &str, body: &str| {
                z.start_file(name, opts).unwrap_or_else(|e| panic!("{e}"));
                z.write_all(body.as_bytes())
                    .unwrap_or_else(|e| panic!("{e}"));
            };
        small(&mut z, "[Content_Types].xml", "<Types/>");
        small(
            &mut z,
            "xl/workbook.xml",
            "<workbook><sheets><sheet name=\"s\" r:id=\"rId1\"/></sheets></workbook>",
        );
        z.start_file("xl/worksheets/sheet1.xml", opts)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut row = b"<row r=\"1\"><c r=\"A1\"><v>1</v></c></row>".to_vec();
        row.resize(60_000, b' ');
        let block: Vec<u8> = row.iter().copied().cycle().take(1 << 20).collect();
        for _ in 0..64 {
            z.write_all(&block).unwrap_or_else(|e| panic!("{e}"));
        }
        z.finish().unwrap_or_else(|e| panic!("{e}"));
    }
    buf.into_inner()
}

#[tokio::test]
async fn the_form_and_the_template_are_checked() {
    let app = spawn_app().await;
    let m = app.merchant(7);
    let t = template(&app, &m, 100, 1).await;
    // Not multipart.
    let r = app.post(BASE, &m, &json!({"template_id": t})).await;
    expect_problem(r, 415, "UNSUPPORTED_MEDIA_TYPE").await;
    // Bad fields, all at once.
    let mut u = Upload::csv("nope", ids_csv(1, 3));
    u.name = "";
    u.extra = vec![
        ("send_at", "tomorrow".into()),
        ("notify_url", "ftp://x".into()),
        ("colour", "red".into()),
    ];
    let v = expect_problem(upload(&app, &m, u).await, 422, "VALIDATION_FAILED").await;
    let mut fields = error_fields(&v);
    fields.sort();
    assert_eq!(
        fields,
        vec!["colour", "name", "notify_url", "send_at", "template_id"],
        "{v}"
    );
    // send_at in the past.
    let mut u = Upload::csv(&t, ids_csv(1, 3));
    u.extra = vec![(
        "send_at",
        (app.now() - SignedDuration::from_hours(1)).to_string(),
    )];
    let v = expect_problem(upload(&app, &m, u).await, 422, "VALIDATION_FAILED").await;
    assert_eq!(error_fields(&v), vec!["send_at"]);
    // No file.
    let form = Form::new().text("template_id", t.clone()).text("name", "x");
    let r = app
        .client
        .post(app.url(BASE))
        .bearer_auth(&m)
        .multipart(form)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let v = expect_problem(r, 422, "VALIDATION_FAILED").await;
    assert_eq!(error_fields(&v), vec!["file"]);
    // Another shop's template is not found; so is an unknown one.
    expect_problem(
        upload(&app, &app.merchant(8), Upload::csv(&t, ids_csv(1, 3))).await,
        404,
        "NOT_FOUND",
    )
    .await;
    expect_problem(
        upload(&app, &m, Upload::csv("123456789", ids_csv(1, 3))).await,
        404,
        "NOT_FOUND",
    )
    .await;
    // Roles.
    expect_problem(
        upload(&app, &app.user(), Upload::csv(&t, ids_csv(1, 3))).await,
        403,
        "FORBIDDEN",
    )
    .await;
    let r = app
        .client
        .post(app.url(BASE))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    expect_problem(r, 401, "UNAUTHENTICATED").await;
    // A terminated template.
    let r = app
        .post(
            &format!("/api/v1/merchant/templates/{t}/terminate"),
            &m,
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    expect_problem(
        upload(&app, &m, Upload::csv(&t, ids_csv(1, 3))).await,
        409,
        "TEMPLATE_TERMINATED",
    )
    .await;
    // Admins may push for any shop.
    let t2 = template(&app, &m, 100, 1).await;
    accepted(&app, &app.admin(), Upload::csv(&t2, ids_csv(1, 3))).await;
}

#[tokio::test]
async fn an_oversized_upload_is_refused_while_it_streams() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (mut settings, urls) = test_settings(dir.path(), false);
    settings.distribution.max_upload_bytes = 64 * 1024;
    let app = spawn_app_from(dir, settings, urls).await;
    let m = app.merchant(7);
    let t = template(&app, &m, 100, 1).await;
    let r = upload(&app, &m, Upload::csv(&t, ids_csv(1, 20_000))).await;
    expect_problem(r, 413, "PAYLOAD_TOO_LARGE").await;
    accepted(&app, &m, Upload::csv(&t, ids_csv(1, 100))).await;
}

#[tokio::test]
async fn scheduled_tasks_wait_for_send_at_and_cancel_before_it() {
    let app = spawn_app().await;
    let m = app.merchant(7);
    let t = template(&app, &m, 100, 1).await;
    let at = app.now() + SignedDuration::from_mins(30);
    let mut u = Upload::csv(&t, ids_csv(1, 10));
    u.extra = vec![("send_at", at.to_string())];
    let scheduled = id_of(&accepted(&app, &m, u).await);
    let mut u = Upload::csv(&t, ids_csv(100, 10));
    u.extra = vec![("send_at", at.to_string())];
    let canceled = id_of(&accepted(&app, &m, u).await);
    app.drain().await;
    assert_eq!(task(&app, &m, &scheduled).await["status"], "pending");
    // Cancel one before it starts: final at once, nothing issued.
    let (s, v) = read(
        app.post(&format!("{BASE}/{canceled}/cancel"), &m, &json!({}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], "canceled", "{v}");
    assert!(v["finished_at"].is_string());
    // Canceling again answers the same.
    let (s, v) = read(
        app.post(&format!("{BASE}/{canceled}/cancel"), &m, &json!({}))
            .await,
    )
    .await;
    assert_eq!(
        (s, v["status"].clone()),
        (StatusCode::OK, json!("canceled"))
    );
    app.advance(SignedDuration::from_mins(31));
    app.drain().await;
    let v = task(&app, &m, &scheduled).await;
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(counters(&v), (10, 10, 10, 0));
    assert_eq!(counters(&task(&app, &m, &canceled).await), (10, 0, 0, 0));
    // A finished task cannot be canceled.
    let r = app
        .post(&format!("{BASE}/{scheduled}/cancel"), &m, &json!({}))
        .await;
    expect_problem(r, 409, "CONFLICT").await;
    // Another shop sees neither.
    let r = app
        .get(&format!("{BASE}/{scheduled}"), &app.merchant(8))
        .await;
    expect_problem(r, 404, "NOT_FOUND").await;
    let r = app
        .post(
            &format!("{BASE}/{scheduled}/cancel"),
            &app.merchant(8),
            &json!({}),
        )
        .await;
    expect_problem(r, 404, "NOT_FOUND").await;
    let r = app
        .get(&format!("{BASE}/{scheduled}/failures"), &app.merchant(8))
        .await;
    expect_problem(r, 404, "NOT_FOUND").await;
    let r = app
        .get(&format!("{BASE}/{scheduled}/failures?format=pdf"), &m)
        .await;
    expect_problem(r, 422, "VALIDATION_FAILED").await;
    // Listing: merchants their own, newest first; admins everything.
    let (_, list) = read(app.get(&format!("{BASE}?page=1&page_size=1"), &m).await).await;
    assert_eq!(list["total"], 2, "{list}");
    assert_eq!(list["items"][0]["id"], canceled.as_str());
    let (_, list) = read(app.get(BASE, &app.merchant(8)).await).await;
    assert_eq!(list["total"], 0);
    let (_, list) = read(app.get(BASE, &app.admin()).await).await;
    assert_eq!(list["total"], 2);
    let r = app.get(&format!("{BASE}?page=0"), &m).await;
    expect_problem(r, 422, "VALIDATION_FAILED").await;
}

#[tokio::test]
async fn an_upload_idempotency_key_replays_the_task_and_refuses_another_file() {
    let app = spawn_app().await;
    let m = app.merchant(7);
    let t = template(&app, &m, 100, 1).await;
    let mut u = Upload::csv(&t, ids_csv(1, 5));
    u.key = Some("upload-1");
    let first = accepted(&app, &m, u).await;
    let mut u = Upload::csv(&t, ids_csv(1, 5));
    u.key = Some("upload-1");
    let (s, again) = read(upload(&app, &m, u).await).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again["id"], first["id"]);
    let mut u = Upload::csv(&t, ids_csv(1, 6));
    u.key = Some("upload-1");
    expect_problem(upload(&app, &m, u).await, 422, "IDEMPOTENCY_KEY_REUSED").await;
    app.drain().await;
    let (_, list) = read(app.get(BASE, &m).await).await;
    assert_eq!(list["total"], 1);
    assert_eq!(stock_of(&app, &m, &t).await, 95);
}

/// A webhook sink: answers `fail_first` requests with 500, then 204; keeps every request.
async fn sink(fail_first: usize) -> (String, crate::common::Received) {
    let s = crate::common::webhook_sink(std::time::Duration::ZERO).await;
    s.fail_next
        .store(fail_first, std::sync::atomic::Ordering::SeqCst);
    (s.url, s.seen)
}

#[tokio::test]
async fn completion_is_posted_to_notify_url_signed_and_retried() {
    let app = spawn_app().await;
    let m = app.merchant(7);
    let t = template(&app, &m, 100, 1).await;
    let (url, seen) = sink(1).await;
    let mut u = Upload::csv(&t, ids_csv(1, 4));
    u.extra = vec![("notify_url", url)];
    let id = id_of(&accepted(&app, &m, u).await);
    app.drain().await;
    assert_eq!(
        seen.lock().map(|v| v.len()).unwrap_or(0),
        1,
        "first attempt fails"
    );
    // The retry waits for its backoff (1 s by default).
    app.drain().await;
    assert_eq!(seen.lock().map(|v| v.len()).unwrap_or(0), 1);
    app.advance(SignedDuration::from_secs(2));
    app.drain().await;
    let got = seen.lock().map(|v| v.clone()).unwrap_or_default();
    assert_eq!(got.len(), 2, "retried once");
    // Delivered: nothing more.
    app.advance(SignedDuration::from_secs(600));
    app.drain().await;
    assert_eq!(seen.lock().map(|v| v.len()).unwrap_or(0), 2);
    let (headers, body) = &got[1];
    let summary: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    assert_eq!(summary["distribution_id"], id.as_str());
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["succeeded"], 4);
    let h = |k: &str| header(headers, k);
    assert_eq!(h("x-stampede-event"), "distribution.completed");
    assert_eq!(
        h("x-stampede-delivery"),
        got[0]
            .0
            .get("x-stampede-delivery")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
    );
    assert_signed(headers, body, b"stampede-notify:");
}

#[tokio::test]
async fn a_distribution_racing_claims_never_oversells_or_breaks_the_limit() {
    let app = spawn_app_with(true).await;
    let m = app.merchant(7);
    let t = template(&app, &m, 1_000, 1).await;
    // 1,500 users in the file; 600 other users claim at the same time; users 1..=200 both.
    let id = id_of(&accepted(&app, &m, Upload::csv(&t, ids_csv(1, 1_500))).await);
    let mut claims = Vec::new();
    for u in (1..=200).chain(5_001..=5_400) {
        let app_url = app.url(&format!("/api/v1/templates/{t}/claim"));
        let token = app.user_n(u);
        let client = app.client.clone();
        claims.push(tokio::spawn(async move {
            client
                .post(app_url)
                .bearer_auth(token)
                .header("Idempotency-Key", format!("d-{u}"))
                .json(&json!({}))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }));
    }
    let mut claimed = 0;
    for c in claims {
        let s = c.await.unwrap_or(0);
        assert!(s == 201 || s == 409, "claim answered {s}");
        if s == 201 {
            claimed += 1;
        }
    }
    let mut v = task(&app, &m, &id).await;
    for _ in 0..200 {
        if v["status"] == "completed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        v = task(&app, &m, &id).await;
    }
    assert_eq!(v["status"], "completed", "{v}");
    let (total, processed, ok, failed) = counters(&v);
    assert_eq!((total, processed, ok + failed), (1_500, 1_500, 1_500));
    assert_eq!(ok + claimed, 1_000, "distributed {ok} + claimed {claimed}");
    app.drain().await;
    assert_eq!(stock_of(&app, &m, &t).await, 0);
    // Users in both got exactly one coupon.
    for u in [1, 50, 200] {
        let (_, mine) = read(app.get("/api/v1/me/coupons", &app.user_n(u)).await).await;
        assert!(mine["items"].as_array().map_or(0, Vec::len) <= 1, "{mine}");
    }
    let rows = report(&app, &m, &id).await;
    assert!(
        rows.iter()
            .all(|(_, _, w)| w == "SOLD_OUT" || w == "LIMIT_REACHED"),
        "{rows:?}"
    );
}

#[tokio::test]
async fn canceling_a_running_task_stops_it_at_a_batch_boundary() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (mut settings, urls) = test_settings(dir.path(), true);
    settings.distribution.batch_size = 500;
    settings.distribution.poll_interval = std::time::Duration::from_millis(20);
    let app = spawn_app_from(dir, settings, urls).await;
    let m = app.merchant(7);
    let t = template(&app, &m, 1_000_000, 1).await;
    let id = id_of(&accepted(&app, &m, Upload::csv(&t, ids_csv(1, 200_000))).await);
    // Wait until it runs, then cancel.
    let mut v = task(&app, &m, &id).await;
    for _ in 0..400 {
        if v["processed_rows"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        v = task(&app, &m, &id).await;
    }
    assert_eq!(v["status"], "running", "{v}");
    let (s, c) = read(
        app.post(&format!("{BASE}/{id}/cancel"), &m, &json!({}))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["cancel_requested"], true, "{c}");
    for _ in 0..400 {
        v = task(&app, &m, &id).await;
        if v["status"] != "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(v["status"], "canceled", "{v}");
    let (total, processed, ok, failed) = counters(&v);
    assert_eq!(total, 200_000);
    assert!(processed < total, "{v}");
    assert_eq!(processed % 500, 0, "stops on a batch boundary: {v}");
    assert_eq!((ok, failed), (processed, 0), "{v}");
    // What was issued stays issued, and the stock says so.
    app.drain().await;
    assert_eq!(stock_of(&app, &m, &t).await, 1_000_000 - ok as i64);
    let events = app
        .coupons
        .outbox_events("distribution.completed", 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(events.len(), 1);
    assert!(
        events[0].payload.contains("\"canceled\""),
        "{}",
        events[0].payload
    );
}

#[tokio::test]
async fn two_nodes_never_run_the_same_task_twice() {
    if backend() == TestBackend::Sqlite {
        // One process owns an embedded data dir; several nodes is the distributed mode.
        return;
    }
    let a = spawn_app().await;
    let b = spawn_sibling(&a).await;
    let m = a.merchant(7);
    let t = template(&a, &m, 30_000, 1).await;
    let mut ids = Vec::new();
    for k in 0..3u64 {
        ids.push(id_of(
            &accepted(&a, &m, Upload::csv(&t, ids_csv(1 + k * 8_000, 12_000))).await,
        ));
    }
    // Both nodes work at once; each task is leased by one of them.
    tokio::join!(a.drain(), b.drain());
    let mut issued = 0;
    for id in &ids {
        let v = task(&a, &m, id).await;
        assert_eq!(v["status"], "completed", "{v}");
        let (total, processed, ok, failed) = counters(&v);
        assert_eq!(
            (total, processed, ok + failed),
            (12_000, 12_000, 12_000),
            "{v}"
        );
        issued += ok;
    }
    // Overlapping users (limit 1): 8,000 + 8,000 + 12,000 distinct users got one each.
    assert_eq!(issued, 28_000);
    assert_eq!(stock_of(&a, &m, &t).await, 2_000);
}

#[tokio::test]
async fn a_file_that_became_unreadable_fails_the_task_with_its_reason() {
    if backend() != TestBackend::Sqlite {
        return; // the damage is done with SQL on the embedded file
    }
    let app = spawn_app().await;
    let m = app.merchant(7);
    let t = template(&app, &m, 100, 1).await;
    let mut u = Upload::csv(&t, xlsx_ids(1, 50));
    u.file_name = "u.xlsx";
    let id = id_of(&accepted(&app, &m, u).await);
    // Damage the stored copy (same length, no longer a zip) and drop the node's local copy,
    // as if another node ran the task from a corrupted store.
    let data = &app.settings.server.data_dir;
    let local = DistributionId::parse(&id)
        .map(|id| local_file_name(id, FileFormat::Xlsx))
        .unwrap_or_else(|| panic!("{id} is a distribution id"));
    let _ = std::fs::remove_file(data.join("distributions").join(local));
    {
        use sqlx::Connection;
        let url = format!("sqlite://{}", data.join("stampede.db").display());
        let mut c = sqlx::SqliteConnection::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        sqlx::query("UPDATE distribution_files SET bytes = zeroblob(length(bytes)) WHERE distribution_id = ?")
            .bind(id.parse::<i64>().unwrap_or(0))
            .execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    app.drain().await;
    let v = task(&app, &m, &id).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert!(
        v["failure_reason"]
            .as_str()
            .unwrap_or("")
            .contains("unreadable"),
        "{v}"
    );
    assert_eq!(counters(&v), (50, 0, 0, 0));
    assert!(v["finished_at"].is_string());
    assert_eq!(stock_of(&app, &m, &t).await, 100);
}
