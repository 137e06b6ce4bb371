//! Running the real `stampede` binary from tests (shared by the HTTP suite and the crash test).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// An HTTP client for tests. reqwest is built with `rustls-no-provider` (the server installs
/// ring's provider when it builds its callback client); a test process that makes a client
/// before any server exists must install it too.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A `stampede serve` child process; killed when dropped, so a failing assertion never
/// leaves it running.
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:<port>`, as the server printed it.
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `stampede serve --config <config> --listen 127.0.0.1:0` and waits for the line it
/// prints with its address. Its stdout keeps being drained, as a supervisor would.
pub fn serve(config: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stampede"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .env("STAMPEDE_LOG__LEVEL", "warn")
        .env_remove("STAMPEDE_TEST_BACKEND")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut reader = BufReader::new(stdout);
    let mut first = String::new();
    reader
        .read_line(&mut first)
        .unwrap_or_else(|e| panic!("{e}"));
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_owned();
    Server {
        child,
        base: format!("http://{addr}"),
    }
}

/// Requests a [`webhook_sink`] received: headers and body, in arrival order.
pub type Received = std::sync::Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, String)>>>;

/// A webhook receiver for callbacks and reminders.
pub struct Sink {
    /// `http://127.0.0.1:<port>/hook`.
    pub url: String,
    pub seen: Received,
    /// While positive, each request is answered 500 and takes one off.
    #[allow(dead_code)] // the crash test's receiver never fails
    pub fail_next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// Starts a [`Sink`] whose every answer waits `delay` (a slow receiver); 204 otherwise.
pub async fn webhook_sink(delay: std::time::Duration) -> Sink {
    use std::sync::atomic::Ordering;
    let seen: Received = Received::default();
    let fail_next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (s, f) = (seen.clone(), fail_next.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let (s, f) = (s.clone(), f.clone());
            async move {
                tokio::time::sleep(delay).await;
                s.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((headers, body));
                let failing = f
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if failing {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Sink {
        url: format!("http://{addr}/hook"),
        seen,
        fail_next,
    }
}

/// Reminders received by a sink: dedupe id → times received.
pub fn reminder_ids(seen: &Received) -> std::collections::HashMap<String, usize> {
    let mut out = std::collections::HashMap::new();
    for (_, body) in seen.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        for r in v["reminders"].as_array().into_iter().flatten() {
            *out.entry(r["dedupe_id"].as_str().unwrap_or("?").to_owned())
                .or_insert(0) += 1;
        }
    }
    out
}

/// A token for `sub` in `role` (merchants need `shop`), valid for an hour.
pub fn token(
    tokens: &stampede_core::auth::TokenService,
    role: stampede_domain::auth::Role,
    sub: &str,
    shop: Option<i64>,
) -> String {
    let p = stampede_domain::auth::Principal {
        subject: sub.into(),
        role,
        shop_id: shop.and_then(stampede_domain::ids::ShopId::new),
        session_id: None,
    };
    tokens
        .mint(&p, jiff::SignedDuration::from_hours(1))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `POST /api/v1/merchant/templates` with `body` on `base`; the new template's id.
pub async fn create_template(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    body: &serde_json::Value,
) -> String {
    let created: serde_json::Value = client
        .post(format!("{base}/api/v1/merchant/templates"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned()
}

/// The comma-separated list in environment variable `name` (empty when unset).
pub fn env_list(name: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect()
}
