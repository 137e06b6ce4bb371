//! `spawn_app`: a real server on port 0 with its own storage (a temp dir, or fresh MySQL
//! databases), a manual clock, and typed request helpers.

use jiff::{SignedDuration, Timestamp};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use stampede_core::auth::TokenService;
use stampede_core::clock::{Clock, ManualClock};
use stampede_domain::auth::{Principal, Role};
use stampede_domain::ids::ShopId;
use stampede_server::Application;
use stampede_server::config::{Backend, Secret, Settings};
use stampede_workers::Runner;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

const LONG: SignedDuration = SignedDuration::from_hours(24 * 3650);

pub const SECRET: &str = "test-secret-test-secret-test-secret-0123456789";

pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub clock: Arc<ManualClock>,
    pub settings: Settings,
    pub config_file: std::path::PathBuf,
    tokens: TokenService,
    pub catalog: Arc<stampede_core::catalog::Catalog>,
    pub discovery: Arc<stampede_core::discovery::Discovery>,
    pub coupons: Arc<dyn stampede_core::claim_ports::CouponStore>,
    runner: Runner,
    shutdown: CancellationToken,
    mysql_urls: Vec<String>,
    _dir: tempfile::TempDir,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    Sqlite,
    Mysql { databases: usize, tables: u32 },
}

pub fn backend() -> TestBackend {
    match std::env::var("STAMPEDE_TEST_BACKEND").as_deref() {
        Ok("mysql-1x1") => TestBackend::Mysql {
            databases: 1,
            tables: 1,
        },
        Ok("mysql-2x4") => TestBackend::Mysql {
            databases: 2,
            tables: 4,
        },
        Ok("sqlite") | Err(_) => TestBackend::Sqlite,
        Ok(other) => panic!("unknown STAMPEDE_TEST_BACKEND {other}"),
    }
}

/// The seed nodes of the Redis Cluster the distributed suite runs on, when
/// `STAMPEDE_TEST_REDIS_CLUSTER` names one (comma-separated URLs; `scripts/redis-cluster.sh`
/// starts a private one); otherwise the distributed suite uses the single Redis.
pub fn redis_cluster() -> Option<Vec<String>> {
    let urls = crate::common::env_list("STAMPEDE_TEST_REDIS_CLUSTER");
    (!urls.is_empty()).then_some(urls)
}

/// The sentinels and master name of the Sentinel group the distributed suite runs on, when
/// `STAMPEDE_TEST_REDIS_SENTINEL` names one (`scripts/redis-sentinel.sh` starts a private
/// group: master, replica, three sentinels).
pub fn redis_sentinel() -> Option<(Vec<String>, String)> {
    let sentinels = crate::common::env_list("STAMPEDE_TEST_REDIS_SENTINEL");
    let master =
        std::env::var("STAMPEDE_TEST_REDIS_SENTINEL_MASTER").unwrap_or_else(|_| "stampede".into());
    (!sentinels.is_empty()).then_some((sentinels, master))
}

pub fn mysql_base() -> String {
    std::env::var("STAMPEDE_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// Settings for a fresh, isolated instance (no workers unless asked: tests drain by hand).
pub fn test_settings(dir: &std::path::Path, workers: bool) -> (Settings, Vec<String>) {
    let mut s = Settings::default();
    s.server.listen = "127.0.0.1:0".into();
    s.server.data_dir = dir.to_path_buf();
    s.server.shutdown_grace = std::time::Duration::from_secs(2);
    s.auth.jwt_secret = Some(Secret::new(SECRET));
    s.workers.enabled = workers;
    s.workers.end_sweep_interval = std::time::Duration::from_millis(50);
    s.log.level = "warn".into();
    let mut urls = Vec::new();
    if let TestBackend::Mysql { databases, tables } = backend() {
        let tag: u64 = rand::random();
        urls = (0..databases)
            .map(|i| format!("{}/stampede_t_{tag:016x}_{i}", mysql_base()))
            .collect();
        s.storage.backend = Backend::Mysql;
        s.storage.mysql.databases = urls.clone();
        s.storage.mysql.tables_per_database = tables;
        s.storage.mysql.max_connections_per_database = 8;
        // Debug builds racing hundreds of requests on a busy machine queue for connections
        // far longer than production; the fail-fast deadline is the availability tests' job.
        s.resilience.database_acquire = std::time::Duration::from_secs(10);
        s.resilience.redis_command = std::time::Duration::from_secs(5);
        s.resilience.database_read = std::time::Duration::from_secs(10);
        // A flow check that misses its Redis deadline falls back to the node's own bucket,
        // splitting a user's tokens in two: patient here, so limits are exact.
        s.flow.redis_deadline = std::time::Duration::from_millis(500);
        s.redis.prefix = format!("stampede_t_{tag:016x}");
        if let Some(seeds) = redis_cluster() {
            s.redis.mode = stampede_server::config::RedisMode::Cluster;
            s.redis.urls = seeds;
        } else if let Some((sentinels, master)) = redis_sentinel() {
            // The recommended Sentinel settings: acknowledged only once a replica holds it.
            s.redis.mode = stampede_server::config::RedisMode::Sentinel;
            s.redis.urls = sentinels;
            s.redis.sentinel_master = Some(master);
            s.redis.wait_replicas = 1;
        }
        // `app.drain()` must see every log: a hinted pass finds none when the background
        // pass of the same persister took the hints first, so the tests sweep every pass
        // (the hinted passes are tested in crates/hot-redis/tests/persister.rs).
        s.redis.persister_sweep = std::time::Duration::ZERO;
    }
    (s, urls)
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(false).await
}

pub async fn spawn_app_with(workers: bool) -> TestApp {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (settings, mysql_urls) = test_settings(dir.path(), workers);
    spawn_app_from(dir, settings, mysql_urls).await
}

/// A second instance over the same storage as `app` (a restart, or another node).
pub async fn spawn_sibling(app: &TestApp) -> TestApp {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let settings = app.settings.clone();
    // Same configured worker id on purpose: in distributed mode each node leases its own in
    // Redis (the three-node race checks the ids stay unique); embedded siblings are restarts.
    // The sibling must not drop the shared databases when it goes away.
    spawn_app_from(dir, settings, Vec::new()).await
}

pub async fn spawn_app_from(
    dir: tempfile::TempDir,
    settings: Settings,
    mysql_urls: Vec<String>,
) -> TestApp {
    stampede_server::telemetry::init(
        &stampede_server::config::LogSettings {
            format: stampede_server::config::LogFormat::Pretty,
            level: "warn".into(),
            ..Default::default()
        },
        &Default::default(),
    );
    let config_file = dir.path().join("stampede.toml");
    write_config(&settings, &config_file);
    let clock = Arc::new(ManualClock::default());
    let app = Application::build_with_clock(settings.clone(), clock.clone())
        .await
        .unwrap_or_else(|e| panic!("building the app: {e:#}"));
    let base = format!("http://127.0.0.1:{}", app.port());
    let runner = app.runner();
    let catalog = app.catalog();
    let discovery = app.discovery();
    let coupons = app.stores().coupons.clone();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp {
        base,
        client: crate::common::http_client(),
        tokens: TokenService::new(SECRET.as_bytes(), clock.clone()),
        catalog,
        discovery,
        coupons,
        clock,
        settings,
        config_file,
        runner,
        shutdown,
        mysql_urls,
        _dir: dir,
    }
}

/// The instance's settings as a TOML file, so the real binary (CLI tests) sees the same.
fn write_config(s: &Settings, path: &std::path::Path) {
    let dbs: Vec<String> = s
        .storage
        .mysql
        .databases
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect();
    let toml = format!(
        "[server]\ndata_dir = \"{}\"\n[storage]\nbackend = \"{}\"\n[storage.mysql]\ndatabases = [{}]\ntables_per_database = {}\n[auth]\njwt_secret = \"{SECRET}\"\n",
        s.server.data_dir.display(),
        match s.storage.backend {
            Backend::Sqlite => "sqlite",
            Backend::Mysql => "mysql",
        },
        dbs.join(", "),
        s.storage.mysql.tables_per_database,
    );
    std::fs::write(path, toml).unwrap_or_else(|e| panic!("writing config: {e}"));
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if self.mysql_urls.is_empty() {
            return;
        }
        // Drop this test's databases and Redis keys so repeated runs do not pile them up.
        let urls = std::mem::take(&mut self.mysql_urls);
        let pattern = format!("{}*", self.settings.redis.prefix);
        let _ = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "redis-cli --scan --pattern '{pattern}' | xargs -r redis-cli del > /dev/null"
            ))
            .status();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                use sqlx::Connection;
                let Ok(mut conn) = sqlx::MySqlConnection::connect(&mysql_base()).await else {
                    return;
                };
                // A connection of the app's pool left idle in a transaction (a rollback sqlx
                // queued for its next use) holds a metadata lock that DROP DATABASE would wait
                // on for a year: give up after 10 s instead; the test command drops leftover
                // test databases before its next run.
                let _ = sqlx::raw_sql("SET SESSION lock_wait_timeout = 10")
                    .execute(&mut conn)
                    .await;
                for url in urls {
                    if let Some(db) = url.rsplit('/').next() {
                        let sql = format!("DROP DATABASE IF EXISTS `{db}`");
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                            .execute(&mut conn)
                            .await;
                    }
                }
            });
        })
        .join();
    }
}

pub fn shop(n: i64) -> ShopId {
    ShopId::new(n).unwrap_or_else(|| panic!("bad shop {n}"))
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn advance(&self, d: SignedDuration) {
        self.clock.advance(d);
    }

    pub fn token(
        &self,
        role: Role,
        sub: &str,
        shop_id: Option<ShopId>,
        ttl: SignedDuration,
    ) -> String {
        let p = Principal {
            subject: sub.into(),
            role,
            shop_id,
            session_id: None,
        };
        self.tokens
            .mint(&p, ttl)
            .unwrap_or_else(|e| panic!("mint: {e}"))
    }

    /// Helper tokens outlive any time travel a test does with the manual clock.
    pub fn merchant(&self, shop_id: i64) -> String {
        self.token(
            Role::Merchant,
            &format!("m{shop_id}"),
            Some(shop(shop_id)),
            LONG,
        )
    }

    pub fn admin(&self) -> String {
        self.token(Role::Admin, "1", None, LONG)
    }

    /// The `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn user(&self) -> String {
        self.token(Role::User, "42", None, LONG)
    }

    pub fn user_n(&self, id: u64) -> String {
        self.token(Role::User, &id.to_string(), None, LONG)
    }

    /// Stops serving (as a restart would, minus the process exit).
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    pub async fn drain(&self) {
        self.runner
            .drain()
            .await
            .unwrap_or_else(|e| panic!("draining jobs: {e}"));
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// POSTs `body`. A claim gets a fresh `Idempotency-Key`, as clients must send one
    /// (`engine.claim_key_required`); `post_with_key` chooses it, `post_unkeyed` sends none.
    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Response {
        if path.ends_with("/claim") {
            let key = format!("t-{:032x}", rand::random::<u128>());
            return self.post_with_key(path, token, &key, body).await;
        }
        self.post_unkeyed(path, token, body).await
    }

    pub async fn post_unkeyed(&self, path: &str, token: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    pub async fn post_with_key(
        &self,
        path: &str,
        token: &str,
        key: &str,
        body: &Value,
    ) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// A valid threshold-template body whose claim window opens in an hour.
    pub fn template_body(&self, name: &str) -> Value {
        let start = self.now() + SignedDuration::from_hours(1);
        let end = start + SignedDuration::from_hours(24);
        json!({
            "name": name,
            "kind": "threshold",
            "amount_off": 500,
            "threshold": 3000,
            "stock_total": 1000,
            "claim_start": start.to_string(),
            "claim_end": end.to_string(),
            "validity_hours": 72
        })
    }

    /// Creates a template and returns it (asserting 201).
    pub async fn create(&self, token: &str, body: &Value) -> Value {
        let r = self.post("/api/v1/merchant/templates", token, body).await;
        let (status, v) = read(r).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v
    }

    pub async fn create_named(&self, token: &str, name: &str) -> Value {
        let body = self.template_body(name);
        self.create(token, &body).await
    }
}

/// Status and JSON body (Null when the body is not JSON).
pub async fn read(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Asserts a problem+json error with `status` and `code`; returns the body.
pub async fn expect_problem(r: Response, status: u16, code: &str) -> Value {
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let rid = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let (s, v) = read(r).await;
    assert_eq!(s.as_u16(), status, "body: {v}");
    assert_eq!(v["code"], code, "body: {v}");
    assert_eq!(ct, "application/problem+json");
    assert_eq!(v["status"], status);
    assert!(
        !rid.is_empty() && v["request_id"] == rid.as_str(),
        "request id {rid} vs {v}"
    );
    v
}

/// The fields named in a VALIDATION_FAILED body.
pub fn error_fields(v: &Value) -> Vec<String> {
    v["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["field"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

pub fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_owned()
}

/// A header of a received webhook, as text ("" when absent).
pub fn header(headers: &axum::http::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Checks a webhook's signature: HMAC-SHA256 over "<timestamp>.<body>" with the deployment's
/// key, here derived from the JWT secret under `label` (configure the `*_secret` setting to
/// choose one).
pub fn assert_signed(headers: &axum::http::HeaderMap, body: &str, label: &[u8]) {
    use sha2::Digest;
    let ts: i64 = header(headers, "x-stampede-timestamp").parse().unwrap_or(0);
    let mut d = sha2::Sha256::new();
    d.update(label);
    d.update(SECRET.as_bytes());
    let key = hex::encode(d.finalize());
    assert_eq!(
        header(headers, "x-stampede-signature"),
        stampede_workers::notify::signature(&key, ts, body)
    );
}
