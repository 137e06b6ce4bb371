//! The `distribution` scenario against a tiny in-process fake of the distribution API on
//! port 0: the template, the multipart upload of a `--file`, the task polled until it ends,
//! then the SQLite insert ceiling; and a failed task, which gets no ceiling.

use axum::Router;
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use stampede_bench::client::Target;
use stampede_bench::distribution::{self, DistributionOptions, FileFormat};
use stampede_bench::insert_ceiling::Ceiling;
use stampede_domain::ids::ShopId;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

const SECRET: &str = "bench-test-secret-bench-test-secret-0123";
const TEMPLATE: &str = "5";
const TASK: &str = "77";

#[derive(Default)]
struct Fake {
    /// End the task `failed` instead of `completed`.
    fail: AtomicBool,
    polls: AtomicU64,
    /// The upload's fields: name → (file name, content).
    fields: Mutex<Vec<(String, Option<String>, String)>>,
    rows: AtomicU64,
    bad: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn authed(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes().starts_with(b"Bearer "))
}

async fn create_template(State(f): State<Arc<Fake>>, headers: HeaderMap, body: String) -> Response {
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    if !authed(&headers) || v["per_user_limit"] != 1 || v["stock_total"] != 4 {
        f.bad.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    }
    (StatusCode::CREATED, format!(r#"{{"id":"{TEMPLATE}"}}"#)).into_response()
}

fn task(status: &str, rows: u64, done: u64, finished: bool, reason: Option<&str>) -> Value {
    json!({
        "id": TASK, "template_id": TEMPLATE, "shop_id": "1", "name": "n", "status": status,
        "total_rows": rows, "processed_rows": done, "succeeded": done, "failed": 0,
        "created_at": "2025-01-01T00:00:00Z",
        "started_at": if done > 0 { Some("2025-01-01T00:00:00.100Z") } else { None },
        "finished_at": if finished { Some("2025-01-01T00:00:00.600Z") } else { None },
        "failure_reason": reason, "file_format": "csv",
    })
}

async fn upload(State(f): State<Arc<Fake>>, headers: HeaderMap, mut form: Multipart) -> Response {
    if !authed(&headers) {
        f.bad.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let mut fields = Vec::new();
    while let Ok(Some(field)) = form.next_field().await {
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let text = field.text().await.unwrap_or_default();
        fields.push((name, file_name, text));
    }
    let rows = fields
        .iter()
        .find(|(n, _, _)| n == "file")
        .map_or(0, |(_, _, t)| t.lines().skip(1).count() as u64);
    f.rows.store(rows, Ordering::Relaxed);
    *lock(&f.fields) = fields;
    let body = task("pending", rows, 0, false, None);
    (StatusCode::ACCEPTED, axum::Json(body)).into_response()
}

async fn read_task(State(f): State<Arc<Fake>>, Path(id): Path<String>) -> Response {
    if id != TASK {
        return StatusCode::NOT_FOUND.into_response();
    }
    let rows = f.rows.load(Ordering::Relaxed);
    let body = match f.polls.fetch_add(1, Ordering::Relaxed) {
        0 | 1 => task("running", rows, 1, false, None),
        _ if f.fail.load(Ordering::Relaxed) => task("failed", rows, 1, true, Some("disk full")),
        _ => task("completed", rows, rows, true, None),
    };
    axum::Json(body).into_response()
}

async fn spawn_fake() -> anyhow::Result<(Target, Arc<Fake>)> {
    let fake = Arc::new(Fake::default());
    let app = Router::new()
        .route("/api/v1/merchant/templates", post(create_template))
        .route("/api/v1/merchant/distributions", post(upload))
        .route("/api/v1/merchant/distributions/{id}", get(read_task))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((Target::resolve(&format!("http://{addr}")).await?, fake))
}

/// A temp directory with `users.csv` (a header and 4 users) and room for the ceiling.
fn scratch() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("bench-dist-{}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("users.csv"), "user_id\n1\n2\n3\n4\n")?;
    Ok(dir)
}

fn options(dir: &std::path::Path) -> anyhow::Result<DistributionOptions> {
    Ok(DistributionOptions {
        rows: 4,
        format: FileFormat::Csv,
        file: Some(dir.join("users.csv")),
        stampede_bin: "/nonexistent/stampede".into(),
        stock: None,
        shop_id: ShopId::new(1).ok_or_else(|| anyhow::anyhow!("shop id"))?,
        server_pid: std::process::id(),
        ceiling: Some(Ceiling::Sqlite(dir.join("ceiling"))),
        poll_interval: Duration::from_millis(10),
        timeout: Duration::from_secs(10),
    })
}

#[tokio::test]
async fn a_completed_distribution_is_timed_and_compared_with_the_ceiling() -> anyhow::Result<()> {
    let (target, fake) = spawn_fake().await?;
    let dir = scratch()?;
    let r = distribution::run(&target, SECRET.as_bytes(), &options(&dir)?).await;
    let _ = std::fs::remove_dir_all(&dir);
    let r = r?;

    assert_eq!(fake.bad.load(Ordering::Relaxed), 0);
    let fields = lock(&fake.fields).clone();
    let names: Vec<(&str, Option<&str>)> = fields
        .iter()
        .map(|(n, f, _)| (n.as_str(), f.as_deref()))
        .collect();
    assert_eq!(
        names,
        [
            ("template_id", None),
            ("name", None),
            ("file", Some("users.csv"))
        ]
    );
    assert_eq!(fields[0].2, TEMPLATE);
    assert_eq!(fields[1].2, "bench users.csv");
    assert_eq!(fake.polls.load(Ordering::Relaxed), 3);

    assert_eq!((r.task_id.as_str(), r.status.as_str()), (TASK, "completed"));
    assert_eq!((r.rows, r.succeeded, r.failed), (4, 4, 0));
    assert_eq!((r.format.as_str(), r.file_bytes), ("csv", 16));
    assert_eq!((r.queue_s, r.processing_s), (Some(0.1), Some(0.5)));
    assert!(r.wall_s >= r.upload_s && r.rows_per_s > 0.0, "{r:#?}");
    assert!(r.server.peak_rss_kb > 0 && r.server.max_sampled_rss_kb > 0);
    let ceiling = r.ceiling.as_ref().map(|c| (c.backend.as_str(), c.rows));
    assert_eq!(ceiling, Some(("sqlite", 4)));
    assert!(r.ceiling_ratio.is_some_and(|x| x > 0.0), "{r:#?}");
    let table = r.to_table();
    assert!(table.contains("sqlite insert ceiling"), "{table}");
    assert!(table.contains("of the sqlite insert ceiling"), "{table}");
    let v: Value = serde_json::from_str(&r.to_json_line())?;
    assert_eq!(v["status"], "completed");
    Ok(())
}

#[tokio::test]
async fn a_failed_task_is_reported_without_a_ceiling() -> anyhow::Result<()> {
    let (target, fake) = spawn_fake().await?;
    fake.fail.store(true, Ordering::Relaxed);
    let dir = scratch()?;
    let r = distribution::run(&target, SECRET.as_bytes(), &options(&dir)?).await;
    let _ = std::fs::remove_dir_all(&dir);
    let r = r?;
    assert_eq!(r.status, "failed");
    assert_eq!(r.failure_reason.as_deref(), Some("disk full"));
    assert!(r.ceiling.is_none() && r.ceiling_ratio.is_none(), "{r:#?}");
    assert!(r.to_table().contains("disk full"));
    Ok(())
}

#[tokio::test]
async fn a_missing_generator_is_named() -> anyhow::Result<()> {
    let (target, _fake) = spawn_fake().await?;
    let dir = scratch()?;
    let mut opts = options(&dir)?;
    opts.file = None;
    let err = distribution::run(&target, SECRET.as_bytes(), &opts).await;
    let _ = std::fs::remove_dir_all(&dir);
    let err = err.err().map(|e| format!("{e:#}")).unwrap_or_default();
    assert!(
        err.contains("running /nonexistent/stampede (--stampede-bin, or --file"),
        "{err}"
    );
    Ok(())
}
