//! Availability of a distributed node when its Redis goes away, against the real server (port
//! 0), the shared MariaDB (a database of its own) and a PRIVATE `redis-server` started here on
//! a spare port and killed by its PID: claims fail fast with 503 `UNAVAILABLE` naming redis,
//! settlement keeps working, `/readyz` says so within a second, and claims come back within
//! 5 s of Redis returning. The same with a PRIVATE `mariadbd` killed under a distributed
//! node: claims go on, `/readyz` says `degraded`, writes that need MySQL fail fast, and it
//! recovers. Also: a node that cannot renew its worker-id lease stops minting ids before the
//! lease can lapse, and leases again (another id if its own was taken).

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use helpers::*;
use jiff::SignedDuration;
use serde_json::{Value, json};
use stampede_core::clock::SystemClock;
use stampede_core::ids::{IdError, IdGenerator};
use stampede_server::config::{Backend, Settings};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A redis-server of this test's own, on a port nobody else uses; killed on drop.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start() -> Self {
        let mut r = Self {
            port: spare_port(),
            child: None,
        };
        r.restart();
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on the same port, empty, and waits until it answers.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting redis-server: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "private redis did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills this server (by its PID) and waits until it is gone.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A mariadbd of this test's own (fresh data dir, no grant tables), killed on drop.
struct PrivateMariaDb {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateMariaDb {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let data = dir.path().join("data");
        let status = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg("--user=root")
            .arg(format!("--datadir={}", data.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("mariadb-install-db: {e}"));
        assert!(status.success(), "mariadb-install-db failed");
        let mut m = Self {
            port: spare_port(),
            dir,
            child: None,
        };
        m.restart();
        m
    }

    fn url(&self, database: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{database}", self.port)
    }

    fn restart(&mut self) {
        let d = self.dir.path();
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg("--user=root")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", d.join("sock").display()))
            .arg(format!("--pid-file={}", d.join("pid").display()))
            .arg(format!("--log-error={}", d.join("err.log").display()))
            .arg("--skip-grant-tables")
            .arg("--innodb-buffer-pool-size=16M")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting mariadbd: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "private mariadbd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spare_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("a spare port: {e}"))
}

fn distributed_settings(dir: &std::path::Path, redis: &PrivateRedis) -> (Settings, Vec<String>) {
    let (mut s, _) = test_settings(dir, false);
    let tag: u64 = rand::random();
    let base = std::env::var("STAMPEDE_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    let urls = vec![format!("{base}/stampede_av_{tag:016x}_0")];
    s.storage.backend = Backend::Mysql;
    s.storage.mysql.databases = urls.clone();
    s.storage.mysql.tables_per_database = 1;
    s.storage.mysql.max_connections_per_database = 4;
    s.redis.url = redis.url();
    s.redis.prefix = format!("stampede_av_{tag:016x}");
    s.ids.worker_lease = Duration::from_secs(4);
    (s, urls)
}

async fn claim(app: &TestApp, id: &str, user: u64) -> (u16, Value, Duration) {
    let started = Instant::now();
    let r = app
        .post(
            &format!("/api/v1/templates/{id}/claim"),
            &app.user_n(user),
            &json!({}),
        )
        .await;
    let (s, v) = read(r).await;
    (s.as_u16(), v, started.elapsed())
}

async fn quote(app: &TestApp, user: u64) -> (u16, Value) {
    let cart =
        json!({"items": [{"goods_id": "1", "shop_id": "7", "unit_price": 2000, "quantity": 2}]});
    let (s, v) = read(
        app.post("/api/v1/checkout/quote", &app.user_n(user), &cart)
            .await,
    )
    .await;
    (s.as_u16(), v)
}

async fn readyz(app: &TestApp) -> (u16, Value, Duration) {
    let started = Instant::now();
    let r = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (s, v) = read(r).await;
    (s.as_u16(), v, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_claims_fast_keeps_settlement_and_recovers() {
    let mut redis = PrivateRedis::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (settings, urls) = distributed_settings(dir.path(), &redis);
    let app = spawn_app_from(dir, settings, urls).await;

    let mut body = app.template_body("Available");
    body["claim_start"] = json!((app.now() - SignedDuration::from_mins(1)).to_string());
    body["stock_total"] = json!(1_000);
    body["per_user_limit"] = json!(1);
    let id = id_of(&app.create(&app.merchant(7), &body).await);
    let (s, v, _) = claim(&app, &id, 1).await;
    assert_eq!(s, 201, "{v}");
    app.drain().await;
    let (s, v) = quote(&app, 1).await;
    assert_eq!(s, 200, "{v}");
    let (s, v, _) = readyz(&app).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ready")), "{v}");
    let (s, v) = read(app.get("/api/v1/shops/7/templates", &app.user_n(1)).await).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["items"][0]["user_claimed"], 1, "{v}");
    assert!(v.get("partial").is_none(), "{v}");

    redis.kill();

    // The first claims wait at most a deadline. One sent on the connection Redis just
    // dropped may have left the node: OUTCOME_UNKNOWN; the rest are UNAVAILABLE naming redis.
    let mut user = 100;
    let mut fast = Vec::new();
    for i in 0..8 {
        user += 1;
        let (s, v, took) = claim(&app, &id, user).await;
        assert_eq!(s, 503, "{v}");
        if v["code"] == "OUTCOME_UNKNOWN" && i < 3 {
            assert!(took < Duration::from_secs(1), "claim took {took:?}");
            fast.push(took);
            continue;
        }
        assert_eq!(v["code"], "UNAVAILABLE", "{v}");
        assert_eq!(v["dependency"], "redis", "{v}");
        assert!(took < Duration::from_secs(1), "claim took {took:?}");
        fast.push(took);
    }
    // By now the breaker is open: the last answers come at once.
    let mut last: Vec<Duration> = fast[fast.len() - 5..].to_vec();
    last.sort();
    assert!(
        last[2] < Duration::from_millis(50),
        "median claim with the breaker open took {:?}",
        last[2]
    );

    // Settlement does not need Redis.
    let (s, v) = quote(&app, 1).await;
    assert_eq!(s, 200, "quote with redis down: {v}");

    // Discovery still lists (cached listing, stored stock), marked partial, without the
    // per-user fields it cannot know.
    let started = Instant::now();
    let r = app.get("/api/v1/shops/7/templates", &app.user_n(1)).await;
    let partial = r
        .headers()
        .get("x-partial")
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let (s, v) = read(r).await;
    assert_eq!(s, 200, "discovery with redis down: {v}");
    assert_eq!(partial.as_deref(), Some("true"), "{v}");
    assert_eq!(v["partial"], true, "{v}");
    assert_eq!(v["items"][0]["id"], id, "{v}");
    assert!(v["items"][0].get("user_claimed").is_none(), "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );

    // Readiness: 503, redis down by name, the database up, within a second.
    let (s, v, took) = readyz(&app).await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["status"], "unavailable", "{v}");
    assert_eq!(v["checks"]["redis"]["state"], "down", "{v}");
    assert_eq!(v["checks"]["database"]["state"], "up", "{v}");
    assert!(took < Duration::from_secs(1), "readyz took {took:?}");

    // Redis returns (empty): claims succeed again within 5 s.
    redis.restart();
    let back = Instant::now();
    loop {
        user += 1;
        let (s, v, _) = claim(&app, &id, user).await;
        if s == 201 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "claims still fail 5 s after redis returned: {s} {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, v, _) = readyz(&app).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ready")), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_ids_stop_before_the_lease_lapses_and_resume_under_a_new_lease() {
    let mut redis = PrivateRedis::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (mut settings, _) = distributed_settings(dir.path(), &redis);
    let lease = Duration::from_secs(2);
    settings.ids.worker_lease = lease;
    settings.ids.worker_id = 5;
    // Long enough that the other node below takes id 5 before our breaker lets a renewal by.
    settings.resilience.open = Duration::from_secs(3);
    let breakers = stampede_resilience::Breakers::new(settings.resilience.breaker());
    let resilience = stampede_server::services::redis_resilience(&settings, &breakers);
    let conn = stampede_hot_redis::connect_with(&redis.url(), &resilience)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let node = stampede_server::node::NodeId::mint();
    let mut worker = stampede_server::node::lease_worker(&settings, &node, Some(&conn))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
        .unwrap_or_else(|| panic!("distributed mode leases a worker id"));
    assert_eq!(worker.id, 5);
    let gate = worker.gate.clone();
    let ids = Arc::new(
        IdGenerator::new(5, Arc::new(SystemClock), Duration::from_millis(5))
            .unwrap_or_else(|e| panic!("{e}"))
            .with_gate(gate.clone()),
    );
    worker.attach(ids.clone());
    let token = tokio_util::sync::CancellationToken::new();
    let renewal = tokio::spawn((worker.renewal())(token.clone()));
    let first = ids.next().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((first >> 12) & 0x3ff, 5);

    // Redis goes away: the generator refuses before half the lease has passed since the
    // last renewal could have been sent, so well before the lease itself can lapse.
    redis.kill();
    let down = Instant::now();
    while ids.next().is_ok() {
        assert!(
            down.elapsed() < lease / 2 + Duration::from_millis(100),
            "still minting ids {:?} after redis went away",
            down.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(ids.next(), Err(IdError::NoWorkerLease)));

    // While it was away, another node took worker id 5 (the lease had lapsed).
    redis.restart();
    let other = stampede_hot_redis::connect(&redis.url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let taken = stampede_hot_redis::lease_worker_id(
        &other.into(),
        &settings.redis.prefix,
        "node-other",
        5,
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(taken, 5);

    // Our node notices, leases another id and mints with it within a few seconds.
    let back = Instant::now();
    let id = loop {
        if let Ok(id) = ids.next() {
            break id;
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "no ids 5 s after redis returned"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let worker_id = (id >> 12) & 0x3ff;
    assert_ne!(worker_id, 5, "minting with a worker id another node holds");
    token.cancel();
    let _ = renewal.await;
}

async fn create(app: &TestApp) -> (u16, Value, Duration) {
    let mut body = app.template_body("Written");
    body["claim_start"] = json!((app.now() - SignedDuration::from_mins(1)).to_string());
    let started = Instant::now();
    let r = app
        .post("/api/v1/merchant/templates", &app.merchant(7), &body)
        .await;
    let (s, v) = read(r).await;
    (s.as_u16(), v, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_down_degrades_readiness_keeps_claims_and_fails_writes_fast() {
    let redis = PrivateRedis::start();
    let mut mariadb = PrivateMariaDb::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (mut settings, _) = distributed_settings(dir.path(), &redis);
    settings.storage.mysql.databases = vec![mariadb.url("stampede_av")];
    // No URLs handed over: the private server goes away with its data dir.
    let app = spawn_app_from(dir, settings, Vec::new()).await;
    let (s, v, _) = create(&app).await;
    assert_eq!(s, 201, "{v}");
    let id = id_of(&v);
    let (s, v, _) = claim(&app, &id, 1).await;
    assert_eq!(s, 201, "{v}");

    mariadb.kill();

    // Claims need only Redis and the claim log.
    for user in 2..5 {
        let (s, v, took) = claim(&app, &id, user).await;
        assert_eq!(s, 201, "claim with MySQL down: {v}");
        assert!(took < Duration::from_secs(1), "claim took {took:?}");
    }
    // A write that needs MySQL: 503 naming the database, within a second.
    let (s, v, took) = create(&app).await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["dependency"], "database", "{v}");
    assert!(took < Duration::from_secs(1), "create took {took:?}");

    // The probe opens the database breaker; then such writes fail at once.
    let opened = Instant::now();
    loop {
        let (s, v, took) = readyz(&app).await;
        assert!(took < Duration::from_secs(1), "readyz took {took:?}");
        assert_eq!(s, 200, "MySQL down only degrades a distributed node: {v}");
        assert_eq!(v["status"], "degraded", "{v}");
        assert_eq!(v["checks"]["database"]["state"], "down", "{v}");
        assert_eq!(v["checks"]["redis"]["state"], "up", "{v}");
        if v["checks"]["database"]["breaker"] == "open" {
            break;
        }
        assert!(
            opened.elapsed() < Duration::from_secs(5),
            "breaker still closed: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut took: Vec<Duration> = Vec::new();
    for _ in 0..5 {
        let (s, v, t) = create(&app).await;
        assert_eq!(
            (s, v["dependency"].as_str()),
            (503, Some("database")),
            "{v}"
        );
        took.push(t);
    }
    took.sort();
    assert!(took[2] < Duration::from_millis(50), "median {:?}", took[2]);

    // MySQL returns: ready again and writes succeed within 5 s of it accepting connections.
    mariadb.restart();
    let back = Instant::now();
    loop {
        let (s, v, _) = create(&app).await;
        if s == 201 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "writes still fail: {s} {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, v, _) = readyz(&app).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ready")), "{v}");
}
