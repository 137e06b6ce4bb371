//! Reminders over HTTP: the API rules and errors, and delivery through every channel driven
//! by the manual clock (no sleeps): on time, never early, never after a delete or a
//! termination, retried when the webhook fails, and never twice from two nodes.

use crate::helpers::*;
use jiff::{SignedDuration, Timestamp};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

type Seen = crate::common::Received;

/// A minimal SMTP receiver (RFC 5321's happy path): keeps each message's DATA.
async fn smtp_sink() -> (String, Arc<Mutex<Vec<String>>>) {
    let mails: Arc<Mutex<Vec<String>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let m = mails.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let m = m.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                let _ = w.write_all(b"220 sink ESMTP\r\n").await;
                let mut data: Option<String> = None;
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(d) = data.as_mut() {
                        if line == "." {
                            m.lock().unwrap_or_else(|p| p.into_inner()).push(d.clone());
                            data = None;
                            let _ = w.write_all(b"250 queued\r\n").await;
                        } else {
                            d.push_str(&line);
                            d.push('\n');
                        }
                        continue;
                    }
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
                        "DATA" => {
                            data = Some(String::new());
                            b"354 go on\r\n"
                        }
                        "QUIT" => {
                            let _ = w.write_all(b"221 bye\r\n").await;
                            break;
                        }
                        _ => b"250 ok\r\n",
                    };
                    let _ = w.write_all(reply).await;
                }
            });
        }
    });
    (format!("smtp://{addr}"), mails)
}

/// An app whose webhook and email channels point at fresh sinks.
struct Fixture {
    app: TestApp,
    hooks: Seen,
    failing: Arc<std::sync::atomic::AtomicUsize>,
    mails: Arc<Mutex<Vec<String>>>,
}

async fn fixture() -> Fixture {
    let sink = crate::common::webhook_sink(std::time::Duration::ZERO).await;
    let (hook_url, hooks, failing) = (sink.url, sink.seen, sink.fail_next);
    let (smtp_url, mails) = smtp_sink().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (mut s, urls) = test_settings(dir.path(), false);
    s.reminder.webhook_url = Some(hook_url);
    s.reminder.webhook_batch = 3;
    s.reminder.webhook_attempts = 1;
    s.reminder.smtp_url = Some(stampede_server::config::Secret::new(smtp_url));
    let app = spawn_app_from(dir, s, urls).await;
    Fixture {
        app,
        hooks,
        failing,
        mails,
    }
}

/// A template of shop 7 whose sale starts in `hours`.
async fn template_starting_in(app: &TestApp, hours: i64) -> (String, Timestamp) {
    let mut body = app.template_body("flash sale");
    let start = app.now() + SignedDuration::from_hours(hours);
    body["claim_start"] = json!(start.to_string());
    body["claim_end"] = json!((start + SignedDuration::from_hours(2)).to_string());
    let t = app.create(&app.merchant(7), &body).await;
    let start = t["claim_start"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(start);
    (id_of(&t), start)
}

async fn terminate(app: &TestApp, t: &str) {
    let r = app
        .post(
            &format!("/api/v1/merchant/templates/{t}/terminate"),
            &app.merchant(7),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

async fn put(app: &TestApp, user: u64, t: &str, body: &Value) -> reqwest::Response {
    app.client
        .put(app.url(&format!("/api/v1/templates/{t}/reminders")))
        .bearer_auth(app.user_n(user))
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT: {e}"))
}

async fn set(app: &TestApp, user: u64, t: &str, channel: &str, minutes: i64) -> Value {
    let (s, v) = read(
        put(
            app,
            user,
            t,
            &json!({"channel": channel, "minutes_before": minutes}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

async fn delete(app: &TestApp, user: u64, t: &str, query: &str) -> reqwest::Response {
    app.client
        .delete(app.url(&format!("/api/v1/templates/{t}/reminders?{query}")))
        .bearer_auth(app.user_n(user))
        .send()
        .await
        .unwrap_or_else(|e| panic!("DELETE: {e}"))
}

async fn mine(app: &TestApp, user: u64) -> Vec<Value> {
    let (s, v) = read(app.get("/api/v1/me/reminders", &app.user_n(user)).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["items"].as_array().cloned().unwrap_or_default()
}

fn hook_ids(seen: &Seen) -> HashMap<String, usize> {
    crate::common::reminder_ids(seen)
}

#[tokio::test]
async fn setting_listing_and_deleting_follow_the_rules() {
    let f = fixture().await;
    let app = &f.app;
    let (t, start) = template_starting_in(app, 2).await;

    let v = set(app, 11, &t, "email", 15).await;
    assert_eq!(v["template_id"], t.as_str());
    assert_eq!(v["name"], "flash sale");
    assert_eq!(v["channel"], "email");
    assert_eq!(v["minutes_before"], 15);
    assert_eq!(
        v["remind_at"],
        (start - SignedDuration::from_mins(15)).to_string()
    );
    assert_eq!(v["claim_start"], start.to_string());
    // Idempotent: the same answer, still one reminder.
    assert_eq!(set(app, 11, &t, "email", 15).await, v);
    set(app, 11, &t, "app", 60).await;
    set(app, 11, &t, "webhook", 5).await;
    let items = mine(app, 11).await;
    let got: Vec<(String, i64)> = items
        .iter()
        .map(|i| {
            (
                i["channel"].as_str().unwrap_or("").to_owned(),
                i["minutes_before"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    // Soonest due first.
    assert_eq!(
        got,
        vec![
            ("app".to_owned(), 60),
            ("email".to_owned(), 15),
            ("webhook".to_owned(), 5)
        ]
    );
    assert!(items.iter().all(|i| i["delivered"] == false));
    assert!(
        mine(app, 12).await.is_empty(),
        "another user's are not mine"
    );
    // Templates of other shops (other shards in MySQL) are listed as well.
    let mut other = app.template_body("other shop");
    other["claim_start"] = json!((start + SignedDuration::from_hours(1)).to_string());
    other["claim_end"] = json!((start + SignedDuration::from_hours(3)).to_string());
    let t8 = id_of(&app.create(&app.merchant(8), &other).await);
    set(app, 11, &t8, "app", 20).await;
    let items = mine(app, 11).await;
    assert_eq!(items.len(), 4);
    assert_eq!(items[3]["template_id"], t8.as_str());
    assert_eq!(items[3]["name"], "other shop");
    let r = delete(app, 11, &t8, "channel=app&minutes_before=20").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // Delete: 204, then 404.
    let r = delete(app, 11, &t, "channel=email&minutes_before=15").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    expect_problem(
        delete(app, 11, &t, "channel=email&minutes_before=15").await,
        404,
        "NOT_FOUND",
    )
    .await;
    expect_problem(
        delete(app, 12, &t, "channel=app&minutes_before=60").await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_eq!(mine(app, 11).await.len(), 2);

    // Due reminders found only after the sale started are dropped, not sent late.
    app.clock.set(start);
    app.drain().await;
    assert!(f.hooks.lock().map(|v| v.is_empty()).unwrap_or(false));
    // A day after the sale started the rows are purged (`reminder.retention_hours`).
    app.clock.set(start + SignedDuration::from_hours(23));
    app.drain().await;
    let r = delete(app, 11, &t, "channel=app&minutes_before=60").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "kept for a day");
    app.clock.set(start + SignedDuration::from_hours(25));
    app.drain().await;
    expect_problem(
        delete(app, 11, &t, "channel=webhook&minutes_before=5").await,
        404,
        "NOT_FOUND",
    )
    .await;
}

#[tokio::test]
async fn bad_requests_are_refused_with_clear_codes() {
    let f = fixture().await;
    let app = &f.app;
    let (t, _) = template_starting_in(app, 2).await;
    let path = format!("/api/v1/templates/{t}/reminders");

    for (body, fields) in [
        (json!({}), vec!["channel", "minutes_before"]),
        (
            json!({"channel": "sms", "minutes_before": 5}),
            vec!["channel"],
        ),
        (
            json!({"channel": "app", "minutes_before": 7}),
            vec!["minutes_before"],
        ),
        (
            json!({"channel": "app", "minutes_before": 0}),
            vec!["minutes_before"],
        ),
        (
            json!({"channel": "app", "minutes_before": 65}),
            vec!["minutes_before"],
        ),
        (
            json!({"channel": "app", "minutes_before": "5"}),
            vec!["minutes_before"],
        ),
        (
            json!({"channel": "app", "minutes_before": 5.5}),
            vec!["minutes_before"],
        ),
        (
            json!({"channel": 1, "minutes_before": 5, "colour": "red"}),
            vec!["channel", "colour"],
        ),
    ] {
        let v = expect_problem(put(app, 1, &t, &body).await, 422, "VALIDATION_FAILED").await;
        assert_eq!(error_fields(&v), fields, "{body}");
    }
    let r = app
        .client
        .put(app.url(&path))
        .bearer_auth(app.user_n(1))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    expect_problem(r, 400, "MALFORMED_REQUEST").await;

    // Unknown or malformed template ids.
    let body = json!({"channel": "app", "minutes_before": 5});
    expect_problem(put(app, 1, "999999999", &body).await, 404, "NOT_FOUND").await;
    expect_problem(put(app, 1, "abc", &body).await, 404, "NOT_FOUND").await;

    // Users only.
    let r = app
        .client
        .put(app.url(&path))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    expect_problem(r, 401, "UNAUTHENTICATED").await;
    let r = app
        .client
        .put(app.url(&path))
        .bearer_auth(app.merchant(7))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    expect_problem(r, 403, "FORBIDDEN").await;
    expect_problem(
        app.get("/api/v1/me/reminders", &app.admin()).await,
        403,
        "FORBIDDEN",
    )
    .await;

    // Bad delete queries.
    for (q, fields) in [
        ("", vec!["channel", "minutes_before"]),
        ("channel=sms&minutes_before=5", vec!["channel"]),
        ("channel=app&minutes_before=x", vec!["minutes_before"]),
        ("channel=app&minutes_before=61", vec!["minutes_before"]),
    ] {
        let v = expect_problem(delete(app, 1, &t, q).await, 422, "VALIDATION_FAILED").await;
        assert_eq!(error_fields(&v), fields, "{q}");
    }
}

#[tokio::test]
async fn reminders_must_be_due_ahead_and_channels_configured() {
    let f = fixture().await;
    let app = &f.app;
    // Starts in 30 minutes: 60 and 30 minutes before are already past or now.
    let mut body = app.template_body("soon");
    let start = app.now() + SignedDuration::from_mins(30);
    body["claim_start"] = json!(start.to_string());
    let t = id_of(&app.create(&app.merchant(7), &body).await);
    for m in [60, 30] {
        let v = expect_problem(
            put(app, 1, &t, &json!({"channel": "app", "minutes_before": m})).await,
            409,
            "REMINDER_TOO_LATE",
        )
        .await;
        assert!(
            v["detail"].as_str().unwrap_or("").contains("shorter"),
            "{v}"
        );
    }
    set(app, 1, &t, "app", 25).await;

    // Started: nothing to remind of.
    app.advance(SignedDuration::from_mins(31));
    expect_problem(
        put(app, 1, &t, &json!({"channel": "app", "minutes_before": 5})).await,
        409,
        "CLAIM_STARTED",
    )
    .await;
    assert!(
        mine(app, 1).await.is_empty(),
        "started sales are not listed"
    );

    // Terminated: refused, and existing reminders disappear from the list.
    let (t2, _) = template_starting_in(app, 3).await;
    set(app, 2, &t2, "app", 10).await;
    terminate(app, &t2).await;
    expect_problem(
        put(app, 2, &t2, &json!({"channel": "app", "minutes_before": 5})).await,
        409,
        "TEMPLATE_TERMINATED",
    )
    .await;
    assert!(mine(app, 2).await.is_empty());

    // A deployment without a webhook URL or SMTP relay refuses those channels.
    let plain = spawn_app().await;
    let (t3, _) = template_starting_in(&plain, 2).await;
    for c in ["webhook", "email"] {
        let v = expect_problem(
            put(&plain, 1, &t3, &json!({"channel": c, "minutes_before": 5})).await,
            422,
            "VALIDATION_FAILED",
        )
        .await;
        assert_eq!(error_fields(&v), vec!["channel"]);
    }
    set(&plain, 1, &t3, "app", 5).await;
}

#[tokio::test]
async fn due_reminders_go_out_on_time_through_every_channel() {
    let f = fixture().await;
    let app = &f.app;
    let (t, start) = template_starting_in(app, 2).await;
    for user in 1..=7 {
        set(app, user, &t, "webhook", 30).await;
    }
    set(app, 1, &t, "email", 30).await;
    set(app, 1, &t, "app", 30).await;
    set(app, 1, &t, "webhook", 10).await;

    // One millisecond early: nothing.
    app.clock
        .set(start - SignedDuration::from_mins(30) - SignedDuration::from_millis(1));
    app.drain().await;
    assert!(f.hooks.lock().map(|v| v.is_empty()).unwrap_or(false));
    assert!(f.mails.lock().map(|v| v.is_empty()).unwrap_or(false));

    // Due: 7 webhook reminders in batches of 3, one email, one app event.
    app.advance(SignedDuration::from_millis(1));
    app.drain().await;
    let ids = hook_ids(&f.hooks);
    assert_eq!(ids.len(), 7);
    assert!(ids.values().all(|n| *n == 1));
    assert!(ids.contains_key(&format!("reminder:1:{t}:webhook:30")));
    // Batches of at most 3 (one per partition at least: MySQL has one per shard table).
    for (_, body) in f.hooks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let n = v["reminders"].as_array().map_or(0, Vec::len);
        assert!((1..=3).contains(&n), "{n} reminders in one POST");
    }
    {
        let hooks = f.hooks.lock().unwrap_or_else(|p| p.into_inner());
        let (headers, body) = &hooks[0];
        assert_eq!(header(headers, "x-stampede-event"), "reminder.due");
        assert_signed(headers, body, b"stampede-reminder:");
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        assert_eq!(v["event"], "reminder.due");
        let r = &v["reminders"][0];
        assert_eq!(r["template_name"], "flash sale");
        assert_eq!(r["minutes_before"], 30);
        assert_eq!(
            r["remind_at"],
            (start - SignedDuration::from_mins(30)).to_string()
        );
    }
    let mails = f.mails.lock().map(|v| v.clone()).unwrap_or_default();
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0].contains("1@users.stampede.invalid"),
        "{}",
        mails[0]
    );
    assert!(mails[0].contains(&format!("reminder.1.{t}.email.30")));
    let events = app
        .coupons
        .outbox_events("reminder.due", 10)
        .await
        .unwrap_or_default();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id, format!("reminder:1:{t}:app:30"));
    crate::event_schemas::assert_documented(&events);
    let listed = mine(app, 1).await;
    let delivered: Vec<bool> = listed.iter().map(|i| i["delivered"] == true).collect();
    assert_eq!(delivered, vec![true, true, true, false]);

    // Nothing goes twice; the 10-minute one goes at its time.
    app.drain().await;
    assert_eq!(hook_ids(&f.hooks).len(), 7);
    app.clock.set(start - SignedDuration::from_mins(10));
    app.drain().await;
    let ids = hook_ids(&f.hooks);
    assert_eq!(ids.len(), 8);
    assert!(ids.values().all(|n| *n == 1));
    assert_eq!(f.mails.lock().map(|v| v.len()).unwrap_or(0), 1);

    let metrics = app.metrics_text().await;
    for name in [
        "stampede_reminders_due_total",
        "stampede_reminders_delivered_total",
        "stampede_reminder_lag_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test]
async fn deleted_or_terminated_before_due_is_never_sent() {
    let f = fixture().await;
    let app = &f.app;
    let (t, start) = template_starting_in(app, 2).await;
    let (t2, start2) = template_starting_in(app, 2).await;
    assert_eq!(start, start2);
    set(app, 1, &t, "webhook", 20).await;
    set(app, 2, &t, "webhook", 20).await;
    set(app, 3, &t2, "webhook", 20).await;
    set(app, 3, &t2, "app", 20).await;
    // Just before due: user 1 deletes, t2 is terminated.
    app.clock
        .set(start - SignedDuration::from_mins(20) - SignedDuration::from_millis(1));
    let r = delete(app, 1, &t, "channel=webhook&minutes_before=20").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    terminate(app, &t2).await;
    app.advance(SignedDuration::from_millis(1));
    app.drain().await;
    let ids = hook_ids(&f.hooks);
    assert_eq!(
        ids.keys().cloned().collect::<Vec<_>>(),
        vec![format!("reminder:2:{t}:webhook:20")]
    );
    assert!(
        app.coupons
            .outbox_events("reminder.due", 10)
            .await
            .unwrap_or_default()
            .is_empty()
    );
    // And never later either.
    app.advance(SignedDuration::from_mins(30));
    app.drain().await;
    assert_eq!(hook_ids(&f.hooks).len(), 1);
}

#[tokio::test]
async fn a_failing_webhook_is_retried_with_backoff_then_given_up_at_the_start() {
    use std::sync::atomic::Ordering;
    let f = fixture().await;
    let app = &f.app;
    let (t, start) = template_starting_in(app, 2).await;
    set(app, 1, &t, "webhook", 5).await;
    set(app, 2, &t, "webhook", 10).await;
    f.failing.store(usize::MAX, Ordering::SeqCst);
    app.clock.set(start - SignedDuration::from_mins(10));
    app.drain().await;
    let tries = || f.hooks.lock().map(|v| v.len()).unwrap_or(0);
    assert_eq!(tries(), 1);
    // The retry waits its backoff (1 s).
    app.drain().await;
    assert_eq!(tries(), 1);
    app.advance(SignedDuration::from_secs(1));
    app.drain().await;
    assert_eq!(tries(), 2);
    // Recovered: delivered with the same dedupe id.
    f.failing.store(0, Ordering::SeqCst);
    app.advance(SignedDuration::from_secs(1));
    app.drain().await;
    let ids = hook_ids(&f.hooks);
    assert_eq!(ids.get(&format!("reminder:2:{t}:webhook:10")), Some(&3));
    assert_eq!(tries(), 3);
    // User 1's fails until the sale starts, then is given up.
    f.failing.store(usize::MAX, Ordering::SeqCst);
    app.clock.set(start - SignedDuration::from_mins(5));
    app.drain().await;
    assert_eq!(tries(), 4);
    app.clock.set(start - SignedDuration::from_millis(1));
    app.drain().await;
    assert_eq!(tries(), 5, "retried up to the start");
    app.clock.set(start);
    app.drain().await;
    assert_eq!(tries(), 5, "the sale started: dropped, not sent");
    app.advance(SignedDuration::from_mins(10));
    app.drain().await;
    assert_eq!(tries(), 5, "given up");
}

#[tokio::test]
async fn two_nodes_never_deliver_the_same_batch() {
    let sink = crate::common::webhook_sink(std::time::Duration::ZERO).await;
    let (hook_url, hooks) = (sink.url, sink.seen);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (mut s, urls) = test_settings(dir.path(), false);
    s.reminder.webhook_url = Some(hook_url);
    s.reminder.webhook_batch = 50;
    s.reminder.batch_size = 100;
    let a = spawn_app_from(dir, s, urls).await;
    let b = spawn_sibling(&a).await;
    let (t, start) = template_starting_in(&a, 2).await;
    let users: Vec<u64> = (1..=600).collect();
    futures::future::join_all(users.chunks(60).map(|chunk| {
        let (a, t) = (&a, &t);
        async move {
            for u in chunk {
                set(a, *u, t, "webhook", 15).await;
            }
        }
    }))
    .await;
    let due = start - SignedDuration::from_mins(15);
    a.clock.set(due);
    b.clock.set(due);
    tokio::join!(a.drain(), b.drain());
    let ids = hook_ids(&hooks);
    assert_eq!(ids.len(), 600);
    let twice: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
}
