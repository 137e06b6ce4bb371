//! Crash test: the real `stampede` binary is killed with SIGKILL in the middle of a claim
//! load and started again; every claim that was answered 201 must exist, nothing may be
//! oversold, and `stock + issued = stock_total` must hold. The test command runs this file
//! with `--release`, so it exercises the release binary, once per mode: embedded (SQLite),
//! and with `STAMPEDE_TEST_BACKEND=mysql-2x4` distributed, where Redis stays up while the
//! node (and the persister inside it, possibly mid-batch) dies.

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use stampede_core::auth::TokenService;
use stampede_core::clock::SystemClock;
use stampede_domain::auth::Role;
use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[allow(dead_code)] // the list helper is for the three-node test
mod common;
use common::{create_template, token};

const SECRET: &str = "crash-secret-crash-secret-crash-secret-0123456";

fn start(config: &std::path::Path) -> (common::Server, String) {
    let server = common::serve(config);
    let base = server.base.clone();
    (server, base)
}

/// Creates a template through the API; its id.
fn write_config(
    dir: &std::path::Path,
    tag: u64,
    extra: &str,
) -> (std::path::PathBuf, bool, Vec<String>) {
    let config = dir.join("stampede.toml");
    let distributed = std::env::var("STAMPEDE_TEST_BACKEND").is_ok_and(|b| b.starts_with("mysql"));
    let mut toml = format!(
        "[server]\ndata_dir = \"{}\"\n[auth]\njwt_secret = \"{SECRET}\"\n",
        dir.display()
    );
    let dbs: Vec<String> = (0..2)
        .map(|i| format!("stampede_t_{tag:016x}_{i}"))
        .collect();
    if distributed {
        let urls: Vec<String> = dbs
            .iter()
            .map(|d| format!("\"mysql://root@127.0.0.1:3306/{d}\""))
            .collect();
        toml.push_str(&format!(
            "[storage]\nbackend = \"mysql\"\n[storage.mysql]\ndatabases = [{}]\ntables_per_database = 4\n\
             [redis]\nprefix = \"stampede_t_{tag:016x}\"\npersister_interval_ms = 5\n",
            urls.join(", ")
        ));
    }
    if let Ok(seeds) = std::env::var("STAMPEDE_TEST_REDIS_CLUSTER")
        && distributed
    {
        // On a private Redis Cluster (scripts/redis-cluster.sh) instead of the single Redis.
        let urls: Vec<String> = seeds.split(',').map(|u| format!("\"{u}\"")).collect();
        toml.push_str(&format!(
            "mode = \"cluster\"\nurls = [{}]\n",
            urls.join(", ")
        ));
    }
    toml.push_str(extra);
    std::fs::write(&config, toml).unwrap_or_else(|e| panic!("{e}"));
    (config, distributed, dbs)
}

/// What the load recorded as acknowledged: (user, coupon id).
type Acked = Arc<Mutex<Vec<(u64, String)>>>;

/// The list behind `m`, even if a load task panicked while holding it (its entries still count).
fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// SIGKILLs the server once `acked` holds `n` entries (or after `wait`), then lets the load's
/// tasks see it gone.
async fn kill_9_once(
    server: &mut common::Server,
    acked: &Acked,
    n: usize,
    wait: Duration,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) {
    let started = Instant::now();
    while guard(acked).len() < n && started.elapsed() < wait {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server
        .child
        .kill()
        .unwrap_or_else(|e| panic!("kill -9: {e}"));
    let _ = server.child.wait();
    for t in tasks {
        let _ = t.await;
    }
}

/// Drops the test's MySQL databases and Redis keys.
fn clean_up(distributed: bool, dbs: &[String], tag: u64) {
    if !distributed {
        return;
    }
    for d in dbs {
        let _ = Command::new("mariadb")
            .args([
                "-uroot",
                "-h127.0.0.1",
                "-e",
                &format!("DROP DATABASE IF EXISTS `{d}`"),
            ])
            .status();
    }
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "redis-cli --scan --pattern 'stampede_t_{tag:016x}*' | xargs -r redis-cli del > /dev/null"
        ))
        .status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_load_loses_no_acknowledged_claim() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let tag: u64 = rand::random();
    let (config, distributed, dbs) = write_config(dir.path(), tag, "");
    let tokens = TokenService::new(SECRET.as_bytes(), Arc::new(SystemClock));
    let client = common::http_client();
    let (mut child, base) = start(&config);

    let now = Timestamp::now();
    let body = json!({
        "name": "Crash sale", "kind": "fixed", "amount_off": 100, "stock_total": 3000, "per_user_limit": 1,
        "claim_start": (now - SignedDuration::from_secs(1)).to_string(),
        "claim_end": (now + SignedDuration::from_hours(1)).to_string(), "validity_hours": 24
    });
    let merchant = token(&tokens, Role::Merchant, "1", Some(7));
    let id = create_template(&client, &base, &merchant, &body).await;

    // 64 clients claim for distinct users until the server dies under them.
    let acked: Acked = Arc::new(Mutex::new(Vec::new()));
    let attempted: Arc<Mutex<HashSet<u64>>> = Arc::new(Mutex::new(HashSet::new()));
    let mut tasks = Vec::new();
    for w in 0..64u64 {
        let (client, base, id, acked, attempted) = (
            client.clone(),
            base.clone(),
            id.clone(),
            acked.clone(),
            attempted.clone(),
        );
        let tokens = TokenService::new(SECRET.as_bytes(), Arc::new(SystemClock));
        tasks.push(tokio::spawn(async move {
            for i in 0..10_000u64 {
                let user = 1 + w + 64 * i;
                guard(&attempted).insert(user);
                let t = token(&tokens, Role::User, &user.to_string(), None);
                let Ok(r) = client
                    .post(format!("{base}/api/v1/templates/{id}/claim"))
                    .bearer_auth(&t)
                    .header("Idempotency-Key", format!("crash-{user}"))
                    .send()
                    .await
                else {
                    return; // the server is gone
                };
                if r.status() == 201 {
                    let Ok(v) = r.json::<Value>().await else {
                        return;
                    };
                    let cid = v["coupon"]["id"].as_str().unwrap_or_default().to_owned();
                    guard(&acked).push((user, cid));
                }
            }
        }));
    }
    kill_9_once(&mut child, &acked, 800, Duration::from_secs(30), tasks).await;
    let acked = guard(&acked).clone();
    let attempted = guard(&attempted).clone();
    assert!(
        acked.len() >= 800,
        "the load never got going: {} acknowledged",
        acked.len()
    );

    let (child, base) = start(&config);
    // Distributed: the restarted node's persister drains what the dead one left in the log.
    let deadline = Instant::now() + Duration::from_secs(30);
    // Every acknowledged claim is there (from MySQL, or still pending in Redis).
    for (user, cid) in &acked {
        let t = token(&tokens, Role::User, &user.to_string(), None);
        let r = client
            .get(format!("{base}/api/v1/me/coupons/{cid}"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.status(),
            200,
            "acknowledged coupon {cid} of user {user} was lost"
        );
    }
    // Nothing oversold and stock + issued = total (in-flight claims may or may not have
    // landed). Distributed: a claim whose script ran just before the kill is in the log but
    // was never acknowledged; it becomes visible once the restarted persister drains it.
    let (stock, issued) = loop {
        let mut issued = 0i64;
        for user in &attempted {
            let t = token(&tokens, Role::User, &user.to_string(), None);
            let v: Value = client
                .get(format!("{base}/api/v1/me/coupons"))
                .bearer_auth(&t)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .json()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let n = v["items"].as_array().map_or(0, Vec::len) as i64;
            assert!(n <= 1, "user {user} holds {n} coupons with a limit of 1");
            issued += n;
        }
        let v: Value = client
            .get(format!("{base}/api/v1/merchant/templates/{id}"))
            .bearer_auth(&merchant)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let stock = v["stock"].as_i64().unwrap_or(-1);
        if stock + issued == 3000 || Instant::now() >= deadline {
            break (stock, issued);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(issued >= acked.len() as i64);
    assert!(issued <= 3000, "oversold: {issued}");
    assert_eq!(stock + issued, 3000, "stock {stock} + issued {issued}");
    // The restarted server keeps claiming from where it was.
    let t = token(&tokens, Role::User, "999999999", None);
    let r = client
        .post(format!("{base}/api/v1/templates/{id}/claim"))
        .bearer_auth(&t)
        .header("Idempotency-Key", "after-restart")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), if stock > 0 { 201 } else { 409 });
    drop(child);
    clean_up(distributed, &dbs, tag);
}

/// Settlement steps are group-committed with their neighbours: every lock and redeem answered
/// 200 before a `kill -9` is still there after the restart: a locked coupon is locked or used
/// (its redeem may have landed unanswered), a redeemed one used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_lock_and_redeem_loses_no_acknowledged_step() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let tag: u64 = rand::random();
    let (config, distributed, dbs) = write_config(dir.path(), tag, "");
    let tokens = TokenService::new(SECRET.as_bytes(), Arc::new(SystemClock));
    let client = common::http_client();
    let (mut child, base) = start(&config);
    let now = Timestamp::now();
    let body = json!({
        "name": "Crash checkout", "kind": "fixed", "amount_off": 100, "stock_total": 100000,
        "per_user_limit": 1,
        "claim_start": (now - SignedDuration::from_secs(1)).to_string(),
        "claim_end": (now + SignedDuration::from_hours(1)).to_string(), "validity_hours": 24
    });
    let merchant = token(&tokens, Role::Merchant, "1", Some(7));
    let id = create_template(&client, &base, &merchant, &body).await;
    let items = json!([{ "goods_id": "1001", "shop_id": "7", "unit_price": 5000, "quantity": 1 }]);

    // (user, coupon) of every lock and every redeem answered 200.
    let (locked, redeemed): (Acked, Acked) = Default::default();
    let mut tasks = Vec::new();
    for w in 0..32u64 {
        let (client, base, id, items) = (client.clone(), base.clone(), id.clone(), items.clone());
        let (locked, redeemed) = (locked.clone(), redeemed.clone());
        let tokens = TokenService::new(SECRET.as_bytes(), Arc::new(SystemClock));
        tasks.push(tokio::spawn(async move {
            for i in 0..10_000u64 {
                let user = 500_000 + w + 32 * i;
                let t = token(&tokens, Role::User, &user.to_string(), None);
                let Ok(r) = client
                    .post(format!("{base}/api/v1/templates/{id}/claim"))
                    .bearer_auth(&t)
                    .header("Idempotency-Key", format!("co-{user}"))
                    .send()
                    .await
                else {
                    return;
                };
                let Ok(v) = r.json::<Value>().await else {
                    return;
                };
                let Some(coupon) = v["coupon"]["id"].as_str().map(str::to_owned) else {
                    continue;
                };
                let order = format!("crash-{tag:x}-{user}");
                let lock =
                    json!({ "coupon_ids": [coupon], "items": items, "expected_discount": 100 });
                // Distributed: the claim reaches MySQL a moment after its 201.
                let mut status = 0;
                for _ in 0..50 {
                    let Ok(r) = client
                        .post(format!("{base}/api/v1/orders/{order}/coupons/lock"))
                        .bearer_auth(&t)
                        .json(&lock)
                        .send()
                        .await
                    else {
                        return;
                    };
                    status = r.status().as_u16();
                    if status != 409 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if status != 200 {
                    continue;
                }
                guard(&locked).push((user, coupon.clone()));
                let Ok(r) = client
                    .post(format!("{base}/api/v1/orders/{order}/coupons/redeem"))
                    .bearer_auth(&t)
                    .json(&json!({}))
                    .send()
                    .await
                else {
                    return;
                };
                if r.status() == 200 {
                    guard(&redeemed).push((user, coupon));
                }
            }
        }));
    }
    kill_9_once(&mut child, &redeemed, 300, Duration::from_secs(60), tasks).await;
    let locked = guard(&locked).clone();
    let redeemed = guard(&redeemed).clone();
    assert!(
        redeemed.len() >= 300,
        "the load never got going: {} redeemed",
        redeemed.len()
    );

    let (child, base) = start(&config);
    let done: HashSet<&String> = redeemed.iter().map(|(_, c)| c).collect();
    for (user, coupon) in &locked {
        let t = token(&tokens, Role::User, &user.to_string(), None);
        let v = get_json(&client, format!("{base}/api/v1/me/coupons/{coupon}"), &t).await;
        let status = v["status"].as_str().unwrap_or_default();
        if done.contains(coupon) {
            assert_eq!(
                status, "used",
                "redeemed coupon {coupon} of user {user}: {v}"
            );
        } else {
            assert!(
                status == "locked" || status == "used",
                "locked coupon {coupon} of user {user} is {status}: {v}"
            );
        }
    }
    drop(child);
    clean_up(distributed, &dbs, tag);
}

async fn get_json(client: &reqwest::Client, url: String, token: &str) -> Value {
    client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Coupons of `template` in the system of record, counted straight from the database(s).
async fn stored_coupons(
    dir: &std::path::Path,
    distributed: bool,
    dbs: &[String],
    template: &str,
) -> i64 {
    use sqlx::Connection;
    let template: i64 = template.parse().unwrap_or_else(|e| panic!("{e}"));
    if !distributed {
        let url = format!("sqlite://{}", dir.join("stampede.db").display());
        let mut c = sqlx::SqliteConnection::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM user_coupons WHERE template_id = ?")
                .bind(template)
                .fetch_one(&mut c)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        return n;
    }
    let mut total = 0;
    for d in dbs {
        let mut c = sqlx::MySqlConnection::connect(&format!("mysql://root@127.0.0.1:3306/{d}"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for t in 0..4 {
            let sql = format!("SELECT COUNT(*) FROM user_coupons_{t} WHERE template_id = ?");
            let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(template)
                .fetch_one(&mut c)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            total += n;
        }
    }
    total
}

/// A distribution killed with SIGKILL mid-run resumes from its checkpoint after a restart:
/// every row is decided exactly once (counters, report and stored coupons agree), nothing is
/// issued twice, and duplicates are still recognised across the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_distribution_resumes_from_the_checkpoint() {
    const USERS: u64 = 200_000;
    const DUPS: u64 = 1_000;
    const STOCK: i64 = 150_000;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let tag: u64 = rand::random();
    let (config, distributed, dbs) = write_config(
        dir.path(),
        tag,
        "[distribution]\nbatch_size = 2000\nlease_secs = 3\npoll_interval_ms = 50\n",
    );
    let tokens = TokenService::new(SECRET.as_bytes(), Arc::new(SystemClock));
    let client = common::http_client();
    let (child, base) = start(&config);
    let merchant = token(&tokens, Role::Merchant, "1", Some(7));
    let now = Timestamp::now();
    let body = json!({
        "name": "Crash push", "kind": "fixed", "amount_off": 100, "stock_total": STOCK, "per_user_limit": 1,
        "claim_start": (now + SignedDuration::from_hours(1)).to_string(),
        "claim_end": (now + SignedDuration::from_hours(2)).to_string(), "validity_hours": 24
    });
    let template = create_template(&client, &base, &merchant, &body).await;
    // Users 1..=200,000, then users 1..=1,000 again (duplicates of rows before the kill).
    let mut csv = String::from("user_id\n");
    for u in (1..=USERS).chain(1..=DUPS) {
        csv.push_str(&u.to_string());
        csv.push('\n');
    }
    let form = reqwest::multipart::Form::new()
        .text("template_id", template.clone())
        .text("name", "crash")
        .part(
            "file",
            reqwest::multipart::Part::bytes(csv.into_bytes()).file_name("u.csv"),
        );
    let task: Value = client
        .post(format!("{base}/api/v1/merchant/distributions"))
        .bearer_auth(&merchant)
        .multipart(form)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let id = task["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{task}"))
        .to_owned();
    let url = format!("{base}/api/v1/merchant/distributions/{id}");
    // Kill it once it is well under way.
    let started = Instant::now();
    let mut child = child;
    loop {
        let v = get_json(&client, url.clone(), &merchant).await;
        let done = v["processed_rows"].as_u64().unwrap_or(0);
        assert_ne!(
            v["status"], "completed",
            "finished before it could be killed: {v}"
        );
        if done >= 10_000 || started.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child
        .child
        .kill()
        .unwrap_or_else(|e| panic!("kill -9: {e}"));
    let _ = child.child.wait();
    drop(child);

    let (child, base) = start(&config);
    let url = format!("{base}/api/v1/merchant/distributions/{id}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let v = loop {
        let v = get_json(&client, url.clone(), &merchant).await;
        if v["status"] == "completed" || Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(v["status"], "completed", "{v}");
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k}: {v}"));
    let total = USERS + DUPS;
    assert_eq!(
        (n("total_rows"), n("processed_rows")),
        (total, total),
        "{v}"
    );
    assert_eq!(n("succeeded"), STOCK as u64, "{v}");
    assert_eq!(n("failed"), total - STOCK as u64, "{v}");
    // The report has exactly one line per failed row, with the right reasons.
    let text = client
        .get(format!("{url}/failures"))
        .bearer_auth(&merchant)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    let mut rows = HashSet::new();
    let (mut sold_out, mut dup) = (0u64, 0u64);
    for line in text.lines().skip(1) {
        let mut f = line.split(',');
        let row: u64 = f.next().and_then(|r| r.parse().ok()).unwrap_or(0);
        assert!(rows.insert(row), "row {row} reported twice");
        match f.nth(1) {
            Some("SOLD_OUT") => sold_out += 1,
            Some("DUPLICATE_IN_FILE") => dup += 1,
            other => panic!("row {row}: unexpected reason {other:?}"),
        }
    }
    assert_eq!((sold_out, dup), (USERS - STOCK as u64, DUPS));
    // Stock and the stored coupons agree with the counters: nothing issued twice.
    let t = get_json(
        &client,
        format!("{base}/api/v1/merchant/templates/{template}"),
        &merchant,
    )
    .await;
    assert_eq!(t["stock"], 0, "{t}");
    drop(child);
    assert_eq!(
        stored_coupons(dir.path(), distributed, &dbs, &template).await,
        STOCK
    );
    clean_up(distributed, &dbs, tag);
}

/// Reminders: the node is killed while delivering a batch; after a restart every reminder
/// arrives, and anything received twice carries the same dedupe id (at least once, nothing
/// lost, nothing invented).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_reminder_delivery_loses_none() {
    const USERS: u64 = 3_000;
    let sink = common::webhook_sink(Duration::from_millis(40)).await;
    let (hook, seen) = (sink.url, sink.seen);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let tag: u64 = rand::random();
    let (config, distributed, dbs) = write_config(
        dir.path(),
        tag,
        &format!(
            "[reminder]\nwebhook_url = \"{hook}\"\nwebhook_batch = 50\nwebhook_concurrency = 1\n\
             batch_size = 500\nlease_secs = 2\npoll_interval_ms = 50\n"
        ),
    );
    let tokens = TokenService::new(SECRET.as_bytes(), Arc::new(SystemClock));
    let client = common::http_client();
    let (child, base) = start(&config);
    let merchant = token(&tokens, Role::Merchant, "1", Some(7));
    // Due 15 s from now: time to set 3,000 reminders first.
    let now = Timestamp::now();
    let claim_start = now + SignedDuration::from_mins(5) + SignedDuration::from_secs(15);
    let body = json!({
        "name": "Remind me", "kind": "fixed", "amount_off": 100, "stock_total": 10, "per_user_limit": 1,
        "claim_start": claim_start.to_string(),
        "claim_end": (claim_start + SignedDuration::from_hours(1)).to_string(), "validity_hours": 24
    });
    let template = create_template(&client, &base, &merchant, &body).await;
    let users: Vec<u64> = (1..=USERS).collect();
    futures::future::join_all(users.chunks(100).map(|chunk| {
        let (client, base, template, tokens) = (&client, &base, &template, &tokens);
        async move {
            for u in chunk {
                let r = client
                    .put(format!("{base}/api/v1/templates/{template}/reminders"))
                    .bearer_auth(token(tokens, Role::User, &u.to_string(), None))
                    .json(&json!({"channel": "webhook", "minutes_before": 5}))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(r.status(), 200, "user {u}");
            }
        }
    }))
    .await;
    assert!(
        Timestamp::now() < claim_start - SignedDuration::from_mins(5),
        "setting the reminders took past their due time"
    );
    let count = || common::reminder_ids(&seen).len();
    // Kill it mid-delivery.
    let deadline = Instant::now() + Duration::from_secs(60);
    while count() < 1_200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut child = child;
    child
        .child
        .kill()
        .unwrap_or_else(|e| panic!("kill -9: {e}"));
    let _ = child.child.wait();
    drop(child);
    let at_kill = count();
    assert!(
        (1_200..USERS as usize).contains(&at_kill),
        "killed at {at_kill} of {USERS} delivered"
    );

    let (child, base) = start(&config);
    let deadline = Instant::now() + Duration::from_secs(90);
    while count() < USERS as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A moment more: nothing is delivered again once recorded.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = common::reminder_ids(&seen);
    let want: HashSet<String> = (1..=USERS)
        .map(|u| format!("reminder:{u}:{template}:webhook:5"))
        .collect();
    let received: HashSet<String> = got.keys().cloned().collect();
    assert_eq!(received, want, "every reminder once or more, nothing else");
    let duplicates: usize = got.values().map(|n| n - 1).sum();
    eprintln!("killed after {at_kill} reminders; {duplicates} redelivered with their dedupe id");
    // Recorded as delivered.
    let mine = get_json(
        &client,
        format!("{base}/api/v1/me/reminders"),
        &token(&tokens, Role::User, "1", None),
    )
    .await;
    assert_eq!(mine["items"][0]["delivered"], true, "{mine}");
    drop(child);
    clean_up(distributed, &dbs, tag);
}
