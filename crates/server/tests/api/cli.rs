//! The real binary: `token`, `account create`, `migrate`, and `serve` with SIGTERM.

use crate::helpers::*;
use serde_json::json;
use std::process::Command;

fn run(mut c: Command, args: &[&str]) -> (bool, String, String) {
    let out = c
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running stampede: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn token_minted_by_the_cli_is_accepted() {
    let app = spawn_app().await;
    let mut c = Command::new(env!("CARGO_BIN_EXE_stampede"));
    c.arg("token").arg("--config").arg(&app.config_file);
    let (ok, token, err) = run(
        c,
        &[
            "--role",
            "merchant",
            "--sub",
            "5",
            "--shop-id",
            "7",
            "--ttl",
            "10m",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(token.lines().count(), 1, "only the token on stdout");
    let t = app.create_named(&token, "From CLI token").await;
    assert_eq!(t["shop_id"], "7");

    let (ok, _, err) = run(
        stampede_sub(&app, "token"),
        &["--role", "merchant", "--sub", "5"],
    );
    assert!(!ok && err.contains("shop-id"), "{err}");
    let (ok, _, _) = run(
        stampede_sub(&app, "token"),
        &["--role", "root", "--sub", "5"],
    );
    assert!(!ok);
    let (ok, _, _) = run(
        stampede_sub(&app, "token"),
        &["--role", "user", "--sub", "5", "--ttl", "-1h"],
    );
    assert!(!ok);
}

fn stampede_sub(app: &TestApp, sub: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stampede"));
    c.arg(sub).arg("--config").arg(&app.config_file);
    c
}

#[tokio::test]
async fn account_created_by_the_cli_can_log_in() {
    let app = spawn_app().await;
    let mut c = Command::new(env!("CARGO_BIN_EXE_stampede"));
    c.args(["account", "create", "--config"])
        .arg(&app.config_file);
    let (ok, out, err) = run(
        c,
        &[
            "--username",
            "ops",
            "--password",
            "long enough pw",
            "--role",
            "admin",
        ],
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    assert_eq!(v["username"], "ops");
    let r = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"username": "ops", "password": "long enough pw"}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    let mut again = Command::new(env!("CARGO_BIN_EXE_stampede"));
    again
        .args(["account", "create", "--config"])
        .arg(&app.config_file);
    let (ok, _, err) = run(
        again,
        &[
            "--username",
            "ops",
            "--password",
            "long enough pw",
            "--role",
            "admin",
        ],
    );
    assert!(!ok && err.contains("taken"), "{err}");
}

#[tokio::test]
async fn migrate_is_repeatable() {
    let app = spawn_app().await;
    for _ in 0..2 {
        let (ok, out, err) = run(stampede_sub(&app, "migrate"), &[]);
        assert!(ok, "{err}");
        assert!(out.contains("migrations applied"), "{out}");
    }
}

#[tokio::test]
async fn serve_prints_its_address_and_stops_on_sigterm() {
    let app = spawn_app().await;
    let mut server = crate::common::serve(&app.config_file);
    let r = app
        .client
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success())
    );
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            break s;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "serve did not stop on SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn gen_users_writes_csv_and_xlsx_files() {
    use calamine::{DataType, Reader, open_workbook_auto};
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let csv = dir.path().join("users.csv");
    let xlsx = dir.path().join("users.xlsx");
    let generate = |format: &str, out: &std::path::Path| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_stampede"));
        c.args([
            "gen",
            "users",
            "--rows",
            "1000",
            "--first-id",
            "42",
            "--format",
            format,
            "--out",
        ])
        .arg(out);
        run(c, &[])
    };
    let (ok, _, err) = generate("csv", &csv);
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&csv).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1001);
    assert_eq!((lines[0], lines[1], lines[1000]), ("user_id", "42", "1041"));

    let (ok, _, err) = generate("xlsx", &xlsx);
    assert!(ok, "{err}");
    let mut wb = open_workbook_auto(&xlsx).unwrap_or_else(|e| panic!("{e}"));
    let sheet = wb
        .worksheet_range_at(0)
        .unwrap_or_else(|| panic!("no sheet"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sheet.height(), 1001);
    assert_eq!(
        sheet.get((0, 0)).map(|c| c.to_string()),
        Some("user_id".to_owned())
    );
    assert_eq!(sheet.get((1000, 0)).and_then(|c| c.as_f64()), Some(1041.0));

    let mut c = Command::new(env!("CARGO_BIN_EXE_stampede"));
    c.args(["gen", "users", "--rows", "0", "--format", "csv", "--out"])
        .arg(dir.path().join("none.csv"));
    let (ok, _, err) = run(c, &[]);
    assert!(!ok && err.contains("at least 1"), "{err}");
}

#[tokio::test]
async fn migrate_against_an_unreachable_mysql_prints_the_cause() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("stampede.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nbackend = \"mysql\"\n[storage.mysql]\n\
             databases = [\"mysql://root@127.0.0.1:{port}/stampede_unreachable\"]\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut c = Command::new(env!("CARGO_BIN_EXE_stampede"));
    c.args(["migrate", "--config"]).arg(&config);
    let started = std::time::Instant::now();
    let (ok, _, err) = run(c, &[]);
    assert!(!ok);
    // The real cause, at once: not the pool's "timed out" after it retried for 30 s.
    assert!(err.contains("opening MySQL: storage failed: "), "{err}");
    assert!(
        err.to_lowercase().contains("connection refused"),
        "the driver's cause is printed: {err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{err}"
    );
}
