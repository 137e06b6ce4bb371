//! Backup under load: `stampede backup` runs against the real embedded server while 48
//! clients claim (and, for part of it, SQLite's write lock is held so that acknowledged claims
//! sit in the claim journal only), then `stampede restore` unpacks the archive into a new data
//! dir and a server started on it must keep every invariant: every claim acknowledged before the backup
//! began is there, nothing is oversold, no user holds more than the limit, `stock + issued =
//! stock_total`, a coupon redeemed before the backup is still used, the generated JWT secret
//! came along (the same tokens work), and the restored server keeps claiming. The test
//! command runs this file with `--release`.

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use stampede_core::auth::TokenService;
use stampede_core::clock::SystemClock;
use stampede_domain::auth::Role;
use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[allow(dead_code)] // the webhook sink is for other tests
mod common;
use common::token;

const STOCK: i64 = 100_000;

fn write_config(path: &Path, data_dir: &Path) {
    // No auth.jwt_secret: the server generates `jwt-secret` in the data dir, which the
    // backup must carry for tokens to survive a restore.
    std::fs::write(
        path,
        format!("[server]\ndata_dir = \"{}\"\n", data_dir.display()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

fn stampede(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stampede"))
        .args(args)
        .env("STAMPEDE_LOG__LEVEL", "warn")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.unwrap_or_else(|e| panic!("{e}"));
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_claim_load_restores_every_acknowledged_claim() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let live = dir.path().join("live");
    let config = dir.path().join("live.toml");
    write_config(&config, &live);
    let server = common::serve(&config);
    let base = server.base.clone();
    let secret = std::fs::read_to_string(live.join("jwt-secret")).unwrap_or_else(|e| panic!("{e}"));
    let tokens = Arc::new(TokenService::new(
        secret.trim().as_bytes(),
        Arc::new(SystemClock),
    ));
    let client = common::http_client();
    let merchant = token(&tokens, Role::Merchant, "1", Some(7));
    let now = Timestamp::now();
    let (status, template) = send(
        client
            .post(format!("{base}/api/v1/merchant/templates"))
            .bearer_auth(&merchant)
            .json(&json!({
                "name": "Backup sale", "kind": "fixed", "amount_off": 100,
                "stock_total": STOCK, "per_user_limit": 1,
                "claim_start": (now - SignedDuration::from_secs(1)).to_string(),
                "claim_end": (now + SignedDuration::from_hours(1)).to_string(),
                "validity_hours": 24
            })),
    )
    .await;
    assert_eq!(status, 201, "{template}");
    let id = template["id"].as_str().unwrap_or_default().to_owned();

    // One coupon claimed, locked and redeemed before the backup: it must come back used.
    let buyer = token(&tokens, Role::User, "424242", None);
    let (status, claimed) = send(
        client
            .post(format!("{base}/api/v1/templates/{id}/claim"))
            .bearer_auth(&buyer)
            .header("Idempotency-Key", "buyer"),
    )
    .await;
    assert_eq!(status, 201, "{claimed}");
    let spent = claimed["coupon"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let lock = json!({
        "coupon_ids": [spent],
        "items": [{"goods_id": "1001", "shop_id": "7", "unit_price": 10_000, "quantity": 1}],
        "expected_discount": 100
    });
    for (step, body) in [("lock", lock), ("redeem", json!({}))] {
        let (status, answer) = send(
            client
                .post(format!("{base}/api/v1/orders/backup-order/coupons/{step}"))
                .bearer_auth(&buyer)
                .json(&body),
        )
        .await;
        assert_eq!(status, 200, "{step}: {answer}");
    }

    // 48 clients claim for distinct users until told to stop.
    let acked: Arc<Mutex<Vec<(u64, String, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let attempted: Arc<Mutex<HashSet<u64>>> = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..48u64 {
        let (client, base, id, acked, attempted, stop, tokens) = (
            client.clone(),
            base.clone(),
            id.clone(),
            acked.clone(),
            attempted.clone(),
            stop.clone(),
            tokens.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let user = 1 + w + 48 * i;
                i += 1;
                guard(&attempted).insert(user);
                let t = token(&tokens, Role::User, &user.to_string(), None);
                let Ok(r) = client
                    .post(format!("{base}/api/v1/templates/{id}/claim"))
                    .bearer_auth(&t)
                    .header("Idempotency-Key", format!("backup-{user}"))
                    .send()
                    .await
                else {
                    continue;
                };
                if r.status() == 201 {
                    let answered = Instant::now();
                    if let Ok(v) = r.json::<Value>().await {
                        let cid = v["coupon"]["id"].as_str().unwrap_or_default().to_owned();
                        guard(&acked).push((user, cid, answered));
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    while guard(&acked).len() < 1_000 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Hold SQLite's write lock, so claims acknowledged from now on stay in the journal only
    // (its applier waits): the backup must carry them in the journal's segments.
    let mut blocker = {
        use sqlx::Connection;
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(live.join("stampede.db"))
            .busy_timeout(Duration::from_secs(30));
        sqlx::SqliteConnection::connect_with(&opts)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    };
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let locked_at = guard(&acked).len();
    let started = Instant::now();
    while guard(&acked).len() < locked_at + 500 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let archive = dir.path().join("stampede.backup.tar");
    let backup_began = Instant::now();
    let backup = {
        let (config, archive) = (config.clone(), archive.clone());
        tokio::task::spawn_blocking(move || {
            stampede(&[
                "backup",
                "--config",
                &config.display().to_string(),
                "--out",
                &archive.display().to_string(),
            ])
        })
    };
    let (ok, stdout, stderr) = backup.await.unwrap_or_else(|e| panic!("{e}"));
    let backup_took = backup_began.elapsed();
    sqlx::query("ROLLBACK")
        .execute(&mut blocker)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    drop(blocker);
    assert!(ok, "backup failed: {stderr}");
    let summary: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert!(
        summary["journal_segments"].as_u64().unwrap_or(0) >= 1,
        "{summary}"
    );
    // The load goes on a little past the backup, then stops.
    let during = guard(&acked).len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    drop(server);
    let acked = guard(&acked).clone();
    let before: Vec<_> = acked
        .iter()
        .filter(|(_, _, at)| *at < backup_began)
        .cloned()
        .collect();
    assert!(
        before.len() >= 1_000 && acked.len() > during.min(before.len()),
        "the load never got going: {} acknowledged before the backup, {} in all",
        before.len(),
        acked.len()
    );

    // A restore never mixes with existing data.
    let (ok, _, stderr) = stampede(&[
        "restore",
        "--from",
        &archive.display().to_string(),
        "--data-dir",
        &live.display().to_string(),
    ]);
    assert!(!ok && stderr.contains("not empty"), "{stderr}");

    let restored = dir.path().join("restored");
    let (ok, stdout, stderr) = stampede(&[
        "restore",
        "--from",
        &archive.display().to_string(),
        "--data-dir",
        &restored.display().to_string(),
    ]);
    assert!(ok, "restore failed: {stderr}");
    assert!(stdout.contains("\"files\""), "{stdout}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| {
            std::fs::metadata(p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(
            mode(&restored.join("jwt-secret")),
            mode(&live.join("jwt-secret")),
            "the secret keeps its owner-only mode"
        );
    }
    let restored_config = dir.path().join("restored.toml");
    write_config(&restored_config, &restored);
    let server = common::serve(&restored_config);
    let base = server.base.clone();

    // What RELIABILITY.md reports (`--nocapture` shows it).
    println!(
        "backup: {} claims acknowledged before it ({} while SQLite was locked), {} in all; \
         took {backup_took:?}; {summary}",
        before.len(),
        before.len().saturating_sub(locked_at),
        acked.len()
    );
    // Every claim acknowledged before the backup began is there, with the same coupon.
    for (user, cid, _) in &before {
        let t = token(&tokens, Role::User, &user.to_string(), None);
        let (status, body) = send(
            client
                .get(format!("{base}/api/v1/me/coupons/{cid}"))
                .bearer_auth(&t),
        )
        .await;
        assert_eq!(
            status, 200,
            "coupon {cid} of user {user}, acknowledged before the backup, is missing: {body}"
        );
    }
    // Nothing oversold, the per-user limit held, and stock + issued = total.
    let mut issued = 1i64; // the redeemed coupon of user 424242
    let attempted = guard(&attempted).clone();
    for user in &attempted {
        let t = token(&tokens, Role::User, &user.to_string(), None);
        let (status, v) = send(
            client
                .get(format!("{base}/api/v1/me/coupons"))
                .bearer_auth(&t),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        let n = v["items"].as_array().map_or(0, Vec::len) as i64;
        assert!(n <= 1, "user {user} holds {n} coupons with a limit of 1");
        issued += n;
    }
    let (_, t) = send(
        client
            .get(format!("{base}/api/v1/merchant/templates/{id}"))
            .bearer_auth(&merchant),
    )
    .await;
    let stock = t["stock"].as_i64().unwrap_or(-1);
    assert!(issued > before.len() as i64, "issued {issued}");
    assert_eq!(stock + issued, STOCK, "stock {stock} + issued {issued}");
    // The redeemed coupon is still used: it cannot be spent twice.
    let (status, c) = send(
        client
            .get(format!("{base}/api/v1/me/coupons/{spent}"))
            .bearer_auth(&buyer),
    )
    .await;
    assert_eq!((status, c["status"].as_str()), (200, Some("used")), "{c}");
    // The restored server keeps claiming, and refuses a repeat of a restored claim's user.
    let fresh = token(&tokens, Role::User, "999999999", None);
    let (status, body) = send(
        client
            .post(format!("{base}/api/v1/templates/{id}/claim"))
            .bearer_auth(&fresh)
            .header("Idempotency-Key", "after-restore"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (user, cid, _) = &before[0];
    let t = token(&tokens, Role::User, &user.to_string(), None);
    let (status, body) = send(
        client
            .post(format!("{base}/api/v1/templates/{id}/claim"))
            .bearer_auth(&t)
            .header("Idempotency-Key", format!("backup-{user}")),
    )
    .await;
    assert_eq!(status, 200, "a replay answers the original coupon: {body}");
    assert_eq!(body["coupon"]["id"].as_str(), Some(cid.as_str()));
    drop(server);
}

#[test]
fn backup_refuses_the_distributed_mode_and_a_missing_data_dir() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("mysql.toml");
    std::fs::write(
        &config,
        "[storage]\nbackend = \"mysql\"\n[storage.mysql]\ndatabases = [\"mysql://root@127.0.0.1:3306/x\"]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().join("b.tar");
    let (ok, _, stderr) = stampede(&[
        "backup",
        "--config",
        &config.display().to_string(),
        "--out",
        &out.display().to_string(),
    ]);
    assert!(!ok && stderr.contains("mysql"), "{stderr}");
    let (ok, _, stderr) = stampede(&[
        "backup",
        "--data-dir",
        &dir.path().join("nothing-here").display().to_string(),
        "--out",
        &out.display().to_string(),
    ]);
    assert!(!ok && stderr.contains("no embedded database"), "{stderr}");
    assert!(!out.exists());
}
