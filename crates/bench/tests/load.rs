//! The load engine against a tiny in-process axum server on port 0 that answers `/healthz`,
//! template creation and a fake claim endpoint (201, 409 problem+json, and a 503 that closes
//! the connection).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use stampede_bench::claim::{self, ClaimSetup};
use stampede_bench::client::Target;
use stampede_bench::load::{LoadOptions, Watch};
use stampede_bench::report::{Report, render_table};
use stampede_bench::{healthz_mix, measure};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const SECRET: &str = "bench-test-secret-bench-test-secret-0123";

#[derive(Default)]
struct Fake {
    templates: AtomicU64,
    claims: AtomicU64,
    bad_requests: AtomicU64,
}

fn problem(status: StatusCode, code: &str) -> Response {
    let body = format!(
        r#"{{"type":"about:blank","title":"{code}","status":{},"detail":"x","code":"{code}","request_id":"r"}}"#,
        status.as_u16()
    );
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body,
    )
        .into_response()
}

async fn create_template(State(f): State<Arc<Fake>>, headers: HeaderMap, body: String) -> Response {
    let ok = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "))
        && body.contains(r#""kind":"fixed""#)
        && body.contains(r#""stock_total":500"#)
        && body.contains(r#""per_user_limit":2"#);
    if !ok {
        return problem(StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED");
    }
    let n = f.templates.fetch_add(1, Ordering::Relaxed) + 1;
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"id":"{}","name":"bench"}}"#, 7000 + n),
    )
        .into_response()
}

async fn claim_coupon(
    State(f): State<Arc<Fake>>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Response {
    let authed = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes().starts_with(b"Bearer "));
    if !authed || !headers.contains_key(header::HOST) || !(7001..=7003).contains(&id) {
        f.bad_requests.fetch_add(1, Ordering::Relaxed);
        return problem(StatusCode::BAD_REQUEST, "BAD");
    }
    match f.claims.fetch_add(1, Ordering::Relaxed) % 10 {
        0..=5 => (
            StatusCode::CREATED,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"coupon":{"id":"1","status":"unused"}}"#,
        )
            .into_response(),
        6 | 7 => problem(StatusCode::CONFLICT, "SOLD_OUT"),
        8 => problem(StatusCode::CONFLICT, "LIMIT_REACHED"),
        _ => {
            let mut r = problem(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
            r.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            r
        }
    }
}

async fn spawn_fake() -> anyhow::Result<(String, Arc<Fake>)> {
    let fake = Arc::new(Fake::default());
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/v1/merchant/templates", post(create_template))
        .route("/api/v1/templates/{id}/claim", post(claim_coupon))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}"), fake))
}

fn opts(rate: Option<f64>) -> LoadOptions {
    LoadOptions {
        connections: 4,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        rate,
        timeout: Duration::from_secs(5),
        from_send: false,
        watch: Vec::new(),
    }
}

fn assert_consistent(r: &Report) {
    assert!(r.requests > 0, "{r:?}");
    assert_eq!(r.successes + r.errors, r.requests, "{r:?}");
    let answered: u64 = r.status.values().sum();
    assert_eq!(answered + r.transport_errors, r.requests, "{r:?}");
    let ok: u64 = r
        .status
        .iter()
        .filter(|(s, _)| s.starts_with('2'))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(ok, r.successes, "{r:?}");
    assert!(r.latency_ms.p50 > 0.0 && r.latency_ms.p50 <= r.latency_ms.p99);
    assert!(r.latency_ms.p99 <= r.latency_ms.p999 && r.latency_ms.p999 <= r.latency_ms.max);
}

#[tokio::test]
async fn claim_closed_loop_counts_add_up() -> anyhow::Result<()> {
    let (base, fake) = spawn_fake().await?;
    let target = Target::resolve(&base).await?;
    let setup = ClaimSetup {
        users: 50,
        first_user: 1,
        templates: 3,
        stock: 500,
        limit: 2,
    };
    let mix = claim::setup(&target, SECRET.as_bytes(), &setup).await?;
    assert_eq!(fake.templates.load(Ordering::Relaxed), 3);
    assert_eq!(mix.uris.len(), 3);
    assert_eq!(mix.auths.len(), 50);

    let r = measure("claim", &target, Arc::new(mix), &opts(None), 1, None).await?;
    assert_consistent(&r);
    assert_eq!(fake.bad_requests.load(Ordering::Relaxed), 0);
    assert_eq!(r.transport_errors, 0, "{r:?}");
    assert!(r.status.get("201").copied().unwrap_or(0) > 0, "{r:?}");
    assert_eq!(
        r.codes.get("SOLD_OUT").copied().unwrap_or(0)
            + r.codes.get("LIMIT_REACHED").copied().unwrap_or(0),
        r.status.get("409").copied().unwrap_or(0),
        "{r:?}"
    );
    assert_eq!(
        r.codes.get("UNAVAILABLE").copied(),
        r.status.get("503").copied(),
        "{r:?}"
    );
    // The server saw every counted request (and the warmup's, and maybe a few abandoned).
    assert!(fake.claims.load(Ordering::Relaxed) >= r.requests);
    assert!((r.requests_per_s - r.requests as f64).abs() < 1.0);
    Ok(())
}

#[tokio::test]
async fn healthz_open_loop_keeps_the_rate() -> anyhow::Result<()> {
    let (base, _fake) = spawn_fake().await?;
    let target = Target::resolve(&base).await?;
    let r = measure(
        "healthz",
        &target,
        Arc::new(healthz_mix(&target)?),
        &opts(Some(400.0)),
        1,
        Some(std::process::id()),
    )
    .await?;
    assert_consistent(&r);
    assert_eq!(r.successes, r.requests);
    assert_eq!(r.shape.mode, "open");
    assert!(
        (340..=430).contains(&r.requests),
        "expected about 400 requests in 1 s, got {}",
        r.requests
    );
    let server = r.server.as_ref().map(|s| s.peak_rss_kb).unwrap_or(0);
    assert!(server > 0, "{r:?}");
    Ok(())
}

/// `--watch-pid`: another process's CPU over the window, reported and rendered by name.
#[tokio::test]
async fn a_watched_process_gets_its_cpu_reported() -> anyhow::Result<()> {
    let (base, _fake) = spawn_fake().await?;
    let target = Target::resolve(&base).await?;
    let mut o = opts(None);
    o.watch = vec![Watch {
        name: "mariadb".into(),
        pid: std::process::id(),
    }];
    let r = measure(
        "healthz",
        &target,
        Arc::new(healthz_mix(&target)?),
        &o,
        1,
        None,
    )
    .await?;
    assert_eq!(r.watched.len(), 1, "{r:?}");
    assert_eq!(r.watched[0].name, "mariadb");
    // This process ran the load (and the fake server) during the window.
    assert!(r.watched[0].cpu_cores.is_some_and(|c| c > 0.0), "{r:?}");
    assert!(render_table(&[&r]).contains("mariadb CPU"));
    Ok(())
}

#[tokio::test]
async fn unreachable_server_is_an_error() -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let base = format!("http://{}", listener.local_addr()?);
    drop(listener);
    let target = Target::resolve(&base).await?;
    let err = measure(
        "healthz",
        &target,
        Arc::new(healthz_mix(&target)?),
        &opts(None),
        1,
        None,
    )
    .await;
    assert!(err.is_err());
    Ok(())
}

/// The binary end to end: claim then the healthz ceiling; the last stdout line is the JSON.
#[tokio::test]
async fn binary_prints_table_and_json() -> anyhow::Result<()> {
    let (base, _fake) = spawn_fake().await?;
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_stampede-bench"))
            .args([
                "claim",
                "--base",
                &base,
                "--jwt-secret",
                SECRET,
                "--users",
                "5",
                "--templates",
                "3",
                "--stock",
                "500",
                "--limit",
                "2",
                "--connections",
                "2",
                "--duration",
                "700ms",
                "--warmup",
                "100ms",
                "--compare-healthz",
            ])
            .output()
    })
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(last)?;
    assert_eq!(v["scenario"], "claim");
    assert_eq!(v["ceiling"]["scenario"], "healthz");
    let n = |x: &serde_json::Value| x.as_u64().unwrap_or(u64::MAX);
    assert_eq!(n(&v["successes"]) + n(&v["errors"]), n(&v["requests"]));
    assert!(v["rps_ratio"].as_f64().is_some_and(|r| r > 0.0));
    assert!(stdout.contains("latency p99.9"), "{stdout}");
    assert!(stdout.contains("code SOLD_OUT"), "{stdout}");
    assert!(stdout.contains("of the healthz ceiling"), "{stdout}");
    Ok(())
}
