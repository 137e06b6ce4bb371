//! Fault suite: two nodes of the real `stampede` binary in distributed mode, each talking to
//! a private MariaDB and a private Redis (append-only file) through `stampede-faultkit`
//! proxies, under a claim load. Each scenario injects one fault (MySQL cut, Redis cut, Redis
//! connections reset, Redis killed and restarted, slow MySQL, a node killed, 1,000
//! connections), records every answer
//! (status, code, latency, coupon) and `/readyz`, prints one `FAULT-RESULT {json}` line, and
//! then asserts the invariants of the stores exactly: every 201 coupon is in MySQL, stock +
//! issued = total, Redis stock = MySQL stock, no duplicate coupon ids, nobody over the limit.
//!
//! The availability bars of issue 12 (a fault answered within 1 s, fail fast within 50 ms once
//! detected, `/readyz` within 1 s naming the dependency, recovery within 5 s) are always
//! measured and printed, and asserted only with `STAMPEDE_FAULTS_STRICT=1`.
//!
//! It drives the release binary: `cargo test --release -p stampede-server --test faults --
//! --test-threads=1` (`scripts/faults.sh` prints the table). A debug build skips it unless
//! `STAMPEDE_FAULTS=1`, so the workspace's debug test run stays short.

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use stampede_core::auth::TokenService;
use stampede_core::clock::SystemClock;
use stampede_domain::auth::Role;
use stampede_faultkit::{FaultProxy, Mode, PrivateMariadb, PrivateRedis};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

#[allow(dead_code)] // the webhook sink is for the crash test
mod common;
use common::token;

const SECRET: &str = "fault-secret-fault-secret-fault-secret-0123456";
const STOCK: i64 = 1_000_000;
const SHOP: i64 = 7;
const PREFIX: &str = "faults";
const DBS: [&str; 2] = ["faults_0", "faults_1"];
const TABLES: usize = 2;
/// A client gives up after this: an answer this late counts as `timeout`.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

fn enabled() -> bool {
    let on = !cfg!(debug_assertions) || std::env::var("STAMPEDE_FAULTS").is_ok_and(|v| v == "1");
    if !on {
        eprintln!("fault suite skipped: debug build (run it with --release, or STAMPEDE_FAULTS=1)");
    }
    on
}

fn strict() -> bool {
    std::env::var("STAMPEDE_FAULTS_STRICT").is_ok_and(|v| v == "1")
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

// ---------------------------------------------------------------------------------------
// The cluster: private services, proxies, two nodes.
// ---------------------------------------------------------------------------------------

/// Fields drop in order: nodes first, the services' directory last.
struct Cluster {
    nodes: Vec<Option<common::Server>>,
    config: PathBuf,
    mysql_proxy: FaultProxy,
    redis_proxy: FaultProxy,
    redis: PrivateRedis,
    mysql: PrivateMariadb,
    /// Each node's base URL (a restarted node gets a new port); the load reads it per request.
    bases: Arc<RwLock<Vec<String>>>,
    tokens: Arc<TokenService>,
    client: reqwest::Client,
    next_user: Arc<AtomicU64>,
    /// Set when node 2 did not see the scenario's template (see `create_template`).
    visibility_miss: Option<String>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mysql = PrivateMariadb::start(&dir.path().join("mysql"))
            .unwrap_or_else(|e| panic!("private MariaDB: {e}"));
        let redis = PrivateRedis::start(&dir.path().join("redis"))
            .unwrap_or_else(|e| panic!("private Redis: {e}"));
        let mysql_proxy = FaultProxy::start(mysql.addr())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let redis_proxy = FaultProxy::start(redis.addr())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let urls: Vec<String> = DBS
            .iter()
            .map(|d| format!("\"mysql://root@127.0.0.1:{}/{d}\"", mysql_proxy.port()))
            .collect();
        let config = dir.path().join("stampede.toml");
        let toml = format!(
            "[server]\ndata_dir = \"{data}\"\n[auth]\njwt_secret = \"{SECRET}\"\n\
             [storage]\nbackend = \"mysql\"\n[storage.mysql]\ndatabases = [{dbs}]\n\
             tables_per_database = {TABLES}\n\
             [redis]\nurl = \"redis://127.0.0.1:{rport}\"\nprefix = \"{PREFIX}\"\n\
             persister_interval_ms = 5\n\
             [engine]\nclaim_rate_per_user = 0\n",
            data = dir.path().join("data").display(),
            dbs = urls.join(", "),
            rport = redis_proxy.port(),
        );
        std::fs::write(&config, toml).unwrap_or_else(|e| panic!("{e}"));
        let _ = common::http_client(); // installs the TLS provider before any client is built
        let client = reqwest::Client::builder()
            .timeout(CLIENT_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut c = Self {
            _dir: dir,
            config,
            mysql,
            redis,
            mysql_proxy,
            redis_proxy,
            nodes: vec![None, None],
            bases: Arc::new(RwLock::new(vec![String::new(), String::new()])),
            tokens: Arc::new(TokenService::new(SECRET.as_bytes(), Arc::new(SystemClock))),
            client,
            next_user: Arc::new(AtomicU64::new(1_000_000)),
            visibility_miss: None,
        };
        c.start_node(0);
        c.start_node(1);
        c
    }

    fn start_node(&mut self, i: usize) {
        // Waiting for the node's first line blocks: keep the load's workers running meanwhile.
        let server = tokio::task::block_in_place(|| common::serve(&self.config));
        self.bases.write().unwrap_or_else(|p| p.into_inner())[i] = server.base.clone();
        self.nodes[i] = Some(server);
    }

    /// `kill -9` of node `i`.
    fn kill_node(&mut self, i: usize) {
        if let Some(mut s) = self.nodes[i].take() {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }

    fn base(&self, i: usize) -> String {
        self.bases.read().unwrap_or_else(|p| p.into_inner())[i].clone()
    }

    fn token(&self, role: Role, sub: &str, shop: Option<i64>) -> String {
        token(&self.tokens, role, sub, shop)
    }

    /// Creates the sale's template on node 1 and waits until node 2 sees it too. A node that
    /// does not within 3 s is a finding (recorded in `visibility_miss`) and is restarted (its
    /// bloom filter is rebuilt from MySQL at start) so that the scenario still measures its
    /// fault.
    async fn create_template(&mut self) -> String {
        let id = self.create_template_on_node_0().await;
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if self.sees(1, &id).await {
                return id;
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.visibility_miss = Some(
            "a template created on node 1 visible on node 2 within 3 s (node 2 answered 404; restarted)"
                .into(),
        );
        self.kill_node(1);
        self.start_node(1);
        assert!(
            self.sees(1, &id).await,
            "node 2 does not see the template even after a restart"
        );
        id
    }

    async fn sees(&self, node: usize, template: &str) -> bool {
        let r = self
            .client
            .get(format!("{}/api/v1/templates/{template}", self.base(node)))
            .bearer_auth(self.token(Role::User, "1", None))
            .send()
            .await;
        r.is_ok_and(|r| r.status() == 200)
    }

    async fn create_template_on_node_0(&self) -> String {
        let now = Timestamp::now();
        let body = json!({
            "name": "Fault sale", "kind": "fixed", "amount_off": 100, "stock_total": STOCK,
            "per_user_limit": 1,
            "claim_start": (now - SignedDuration::from_secs(1)).to_string(),
            "claim_end": (now + SignedDuration::from_hours(2)).to_string(), "validity_hours": 24
        });
        let r = self
            .client
            .post(format!("{}/api/v1/merchant/templates", self.base(0)))
            .bearer_auth(self.token(Role::Merchant, "1", Some(SHOP)))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let v: Value = r.json().await.unwrap_or_else(|e| panic!("{e}"));
        v["id"].as_str().unwrap_or_else(|| panic!("{v}")).to_owned()
    }

    /// Straight to the private Redis, not through its proxy.
    async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://{}", self.redis.addr()))
            .unwrap_or_else(|e| panic!("{e}"))
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Claims acknowledged and not yet in MySQL (the template's claim-log length); `None`
    /// while Redis does not answer.
    async fn backlog(&self, template: &str) -> Option<i64> {
        let client = redis::Client::open(format!("redis://{}", self.redis.addr())).ok()?;
        let mut c = tokio::time::timeout(
            Duration::from_millis(500),
            client.get_multiplexed_async_connection(),
        )
        .await
        .ok()?
        .ok()?;
        redis::cmd("XLEN")
            .arg(format!("{PREFIX}:{{tpl:{template}}}:log"))
            .query_async::<i64>(&mut c)
            .await
            .ok()
    }

    /// Waits until the claim log is empty; how long after `since` that was.
    async fn wait_drained(&self, template: &str, since: Instant, limit: Duration) -> Option<f64> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.backlog(template).await == Some(0) {
                return Some(ms(since.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// One keyed claim for a new user on `node`.
    async fn claim_new_user(&self, node: usize, template: &str) -> Answer {
        let user = self.next_user.fetch_add(1, Ordering::Relaxed);
        let t0 = Instant::now();
        claim(
            &self.client,
            &self.tokens,
            &self.base(node),
            template,
            node,
            user,
            t0,
        )
        .await
    }

    /// Locks and redeems `coupon` of `user` as the order service; each step's status and
    /// latency.
    async fn settle(&self, node: usize, user: u64, coupon: &str, order: &str) -> Vec<(u16, f64)> {
        let base = self.base(node);
        let service = self.token(Role::Service, "orders", None);
        let mut out = Vec::new();
        let steps = [
            (
                format!("{base}/api/v1/orders/{order}/coupons/lock"),
                json!({"user_id": user.to_string(), "coupon_ids": [coupon],
                       "items": [{"goods_id": "1", "shop_id": SHOP.to_string(), "unit_price": 1000, "quantity": 1}]}),
            ),
            (
                format!("{base}/api/v1/orders/{order}/coupons/redeem"),
                json!({}),
            ),
        ];
        for (url, body) in steps {
            let started = Instant::now();
            let status = match self
                .client
                .post(url)
                .bearer_auth(&service)
                .json(&body)
                .send()
                .await
            {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            };
            out.push((status, ms(started.elapsed())));
            if status != 200 {
                break; // nothing to redeem without a lock
            }
        }
        out
    }

    /// A coupon claimed and persisted before any fault, for settlement during one.
    async fn persisted_coupon(&self, template: &str) -> (u64, String) {
        let a = self.claim_new_user(0, template).await;
        assert_eq!(a.status, 201, "the warm-up claim failed: {a:?}");
        let since = Instant::now();
        self.wait_drained(template, since, Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("the warm-up claim never reached MySQL"));
        (a.user, a.coupon.unwrap_or_default())
    }
}

// ---------------------------------------------------------------------------------------
// The load: claims with an Idempotency-Key, every answer recorded.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Answer {
    node: usize,
    user: u64,
    /// When the request was sent, ms after the scenario's start.
    sent_ms: f64,
    latency_ms: f64,
    status: u16,
    /// `201`, `503 UNAVAILABLE`, `timeout`, `connect error`…
    code: String,
    coupon: Option<String>,
}

impl Answer {
    fn done_ms(&self) -> f64 {
        self.sent_ms + self.latency_ms
    }
}

fn claim_key(user: u64) -> String {
    format!("fault-{user}")
}

async fn claim(
    client: &reqwest::Client,
    tokens: &TokenService,
    base: &str,
    template: &str,
    node: usize,
    user: u64,
    t0: Instant,
) -> Answer {
    let t = token(tokens, Role::User, &user.to_string(), None);
    let sent = Instant::now();
    let r = client
        .post(format!("{base}/api/v1/templates/{template}/claim"))
        .bearer_auth(t)
        .header("Idempotency-Key", claim_key(user))
        .send()
        .await;
    let (status, code, coupon) = match r {
        Ok(r) => {
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            let code = if status < 300 {
                status.to_string()
            } else {
                format!("{status} {}", v["code"].as_str().unwrap_or("?"))
            };
            let coupon = v["coupon"]["id"].as_str().map(str::to_owned);
            (status, code, coupon)
        }
        Err(e) if e.is_timeout() => (0, "timeout".to_owned(), None),
        Err(e) if e.is_connect() => (0, "connect error".to_owned(), None),
        Err(_) => (0, "transport error".to_owned(), None),
    };
    Answer {
        node,
        user,
        sent_ms: ms(sent.duration_since(t0)),
        latency_ms: ms(sent.elapsed()),
        status,
        code,
        coupon,
    }
}

struct Load {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `workers` clients claiming in a loop, each for a new user, spread over `nodes`.
    fn start(cl: &Cluster, template: &str, workers: usize, nodes: &[usize], t0: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for w in 0..workers {
            let node = nodes[w % nodes.len()];
            let (stop, answers, client, tokens, bases, users, template) = (
                stop.clone(),
                answers.clone(),
                cl.client.clone(),
                cl.tokens.clone(),
                cl.bases.clone(),
                cl.next_user.clone(),
                template.to_owned(),
            );
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let base = bases.read().unwrap_or_else(|p| p.into_inner())[node].clone();
                    let user = users.fetch_add(1, Ordering::Relaxed);
                    let a = claim(&client, &tokens, &base, &template, node, user, t0).await;
                    let failed_at_once = a.status == 0 && a.latency_ms < 5.0;
                    answers.lock().unwrap_or_else(|p| p.into_inner()).push(a);
                    if failed_at_once {
                        // A refused connection: do not spin.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }));
        }
        Self {
            stop,
            answers,
            tasks,
        }
    }

    fn count_201(&self) -> usize {
        self.answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|a| a.status == 201)
            .count()
    }

    async fn finish(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let mut v = self
            .answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        v.sort_by(|a, b| a.sent_ms.total_cmp(&b.sent_ms));
        v
    }
}

// ---------------------------------------------------------------------------------------
// /readyz, probed through the run.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Probe {
    sent_ms: f64,
    latency_ms: f64,
    /// 0: no answer within 3 s.
    status: u16,
    body: Value,
}

impl Probe {
    /// The body names `dep` as failing (the ADR's `checks.<dep>.state`, or the older
    /// `checks.<dep>` string, or the problem's `dependency` / `detail`).
    fn names_down(&self, dep: &str) -> bool {
        let c = &self.body["checks"][dep];
        c["state"].as_str().is_some_and(|s| s != "up")
            || c.as_str().is_some_and(|s| s != "ok")
            || self.body["dependency"].as_str() == Some(dep)
            || self.body["detail"]
                .as_str()
                .is_some_and(|d| d.contains(dep))
    }

    fn ready(&self) -> bool {
        self.status == 200 && self.body["status"] == "ready"
    }
}

struct Prober {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Probe>>,
}

impl Prober {
    fn start(cl: &Cluster, node: usize, t0: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, bases, client) = (stop.clone(), cl.bases.clone(), cl.client.clone());
        let task = tokio::spawn(async move {
            let mut out = Vec::new();
            while !s.load(Ordering::Relaxed) {
                let base = bases.read().unwrap_or_else(|p| p.into_inner())[node].clone();
                let sent = Instant::now();
                let r = client
                    .get(format!("{base}/readyz"))
                    .timeout(Duration::from_secs(3))
                    .send()
                    .await;
                let (status, body) = match r {
                    Ok(r) => (
                        r.status().as_u16(),
                        r.json::<Value>().await.unwrap_or(Value::Null),
                    ),
                    Err(_) => (0, Value::Null),
                };
                out.push(Probe {
                    sent_ms: ms(sent.duration_since(t0)),
                    latency_ms: ms(sent.elapsed()),
                    status,
                    body,
                });
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            out
        });
        Self { stop, task }
    }

    async fn finish(self) -> Vec<Probe> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------
// Figures and invariants.
// ---------------------------------------------------------------------------------------

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn latencies<'a>(answers: impl Iterator<Item = &'a Answer>) -> Vec<f64> {
    let mut v: Vec<f64> = answers.map(|a| a.latency_ms).collect();
    v.sort_by(f64::total_cmp);
    v
}

fn by_code<'a>(answers: impl Iterator<Item = &'a Answer>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for a in answers {
        *m.entry(a.code.clone()).or_insert(0) += 1;
    }
    m
}

fn lat_json(v: &[f64]) -> Value {
    json!({"n": v.len(), "p50_ms": percentile(v, 0.5), "p99_ms": percentile(v, 0.99),
           "max_ms": v.last().copied().unwrap_or(0.0)})
}

/// What the stores hold once everything is back and drained.
#[derive(Debug, Default)]
struct Invariants {
    acked: usize,
    missing: Vec<String>,
    duplicate_ids: usize,
    stock_mysql: i64,
    stock_total: i64,
    issued: i64,
    stock_redis: Option<i64>,
    over_limit: Vec<u64>,
    /// Claims that made a coupon although the client was answered a plain failure.
    happened_but_failed: Vec<String>,
}

impl Invariants {
    fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        if !self.missing.is_empty() {
            v.push(format!(
                "{} acknowledged coupons not in MySQL, e.g. {:?}",
                self.missing.len(),
                &self.missing[..self.missing.len().min(5)]
            ));
        }
        if self.duplicate_ids > 0 {
            v.push(format!("{} duplicate coupon ids", self.duplicate_ids));
        }
        if self.stock_mysql + self.issued != self.stock_total {
            v.push(format!(
                "stock {} + issued {} != total {}",
                self.stock_mysql, self.issued, self.stock_total
            ));
        }
        if self.stock_redis != Some(self.stock_mysql) {
            v.push(format!(
                "Redis stock {:?} != MySQL stock {}",
                self.stock_redis, self.stock_mysql
            ));
        }
        if !self.over_limit.is_empty() {
            v.push(format!("users over their limit: {:?}", self.over_limit));
        }
        v
    }

    fn json(&self) -> Value {
        let broken = self.violations();
        json!({"ok": broken.is_empty(), "violations": broken, "acked": self.acked,
               "issued": self.issued, "stock": self.stock_mysql, "stock_redis": self.stock_redis,
               "happened_but_failed": self.happened_but_failed.len()})
    }
}

async fn invariants(cl: &Cluster, template: &str, answers: &[Answer]) -> Invariants {
    use sqlx::Connection;
    let tid: i64 = template.parse().unwrap_or_else(|e| panic!("{e}"));
    let mut ids: Vec<i64> = Vec::new();
    let mut per_user: HashMap<i64, i64> = HashMap::new();
    let mut keys: HashSet<String> = HashSet::new();
    let mut stock = None;
    for d in DBS {
        let url = format!("mysql://root@{}/{d}", cl.mysql.addr());
        let mut c = sqlx::MySqlConnection::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for t in 0..TABLES {
            let sql = format!(
                "SELECT id, user_id, claim_key FROM user_coupons_{t} WHERE template_id = ?"
            );
            let rows: Vec<(i64, i64, Option<String>)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(tid)
                .fetch_all(&mut c)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            for (id, user, key) in rows {
                ids.push(id);
                *per_user.entry(user).or_insert(0) += 1;
                if let Some(k) = key {
                    keys.insert(format!("{user}/{k}"));
                }
            }
            let sql = format!("SELECT stock, stock_total FROM templates_{t} WHERE id = ?");
            let row: Option<(i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(tid)
                .fetch_optional(&mut c)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            stock = stock.or(row);
        }
    }
    let (stock_mysql, stock_total) = stock.unwrap_or_else(|| panic!("template {tid} not in MySQL"));
    let stored: HashSet<String> = ids.iter().map(i64::to_string).collect();
    let acked: Vec<&Answer> = answers.iter().filter(|a| a.status == 201).collect();
    let acked_ids: HashSet<&str> = acked.iter().filter_map(|a| a.coupon.as_deref()).collect();
    let mut redis = cl.redis().await;
    let stock_redis: Option<i64> = redis::cmd("HGET")
        .arg(format!("{PREFIX}:{{tpl:{template}}}:meta"))
        .arg("stock")
        .query_async(&mut redis)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    Invariants {
        acked: acked.len(),
        missing: acked
            .iter()
            .filter_map(|a| a.coupon.clone())
            .filter(|c| !stored.contains(c))
            .collect(),
        duplicate_ids: (ids.len() - stored.len()) + (acked.len() - acked_ids.len()),
        stock_mysql,
        stock_total,
        issued: ids.len() as i64,
        stock_redis,
        over_limit: per_user
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(u, _)| u as u64)
            .collect(),
        // A timeout is the client's own giving up, and OUTCOME_UNKNOWN says "retry with the
        // key"; any other failure answer for a claim that happened is a wrong answer.
        happened_but_failed: answers
            .iter()
            .filter(|a| a.status >= 400 && !a.code.contains("OUTCOME_UNKNOWN"))
            .filter(|a| keys.contains(&format!("{}/{}", a.user, claim_key(a.user))))
            .map(|a| format!("user {} answered {}", a.user, a.code))
            .collect(),
    }
}

/// A scenario's figures; printed as one `FAULT-RESULT` line, then asserted.
struct Outcome {
    scenario: &'static str,
    injected: &'static str,
    fields: serde_json::Map<String, Value>,
    bars_missed: Vec<String>,
    /// Goals not met yet: printed in the table, never asserted (see RELIABILITY.md).
    goals_missed: Vec<String>,
}

impl Outcome {
    fn new(scenario: &'static str, injected: &'static str, cl: &Cluster) -> Self {
        Self {
            scenario,
            injected,
            fields: serde_json::Map::new(),
            bars_missed: cl.visibility_miss.iter().cloned().collect(),
            goals_missed: Vec::new(),
        }
    }

    fn set(&mut self, k: &str, v: Value) {
        self.fields.insert(k.to_owned(), v);
    }

    /// An availability bar of issue 12: recorded, asserted only when strict.
    fn bar(&mut self, ok: bool, what: String) {
        if !ok {
            self.bars_missed.push(what);
        }
    }

    /// No claim that happened was answered as a plain failure.
    fn no_happened_claim_failed(&mut self, inv: &Invariants) {
        let failed = &inv.happened_but_failed;
        self.bar(
            failed.is_empty(),
            format!(
                "no claim that happened answered as a failure ({} were, e.g. {:?})",
                failed.len(),
                &failed[..failed.len().min(2)]
            ),
        );
    }

    /// A goal this machine does not reach yet (overload latency on 2 shared cores): recorded
    /// and printed as "goal missed", not asserted even when strict.
    fn goal(&mut self, ok: bool, what: String) {
        if !ok {
            self.goals_missed.push(what);
        }
    }

    /// The answers of the whole run and of the fault window `[from, to)` (ms).
    fn answers(&mut self, answers: &[Answer], from: f64, to: f64) {
        let all = latencies(answers.iter());
        let during: Vec<&Answer> = answers
            .iter()
            .filter(|a| a.done_ms() >= from && a.sent_ms < to)
            .collect();
        let fault = latencies(during.iter().copied());
        self.set("answers", json!(by_code(answers.iter())));
        self.set("latency", lat_json(&all));
        self.set("fault_answers", json!(by_code(during.iter().copied())));
        self.set("fault_latency", lat_json(&fault));
        self.bar(
            fault.last().copied().unwrap_or(0.0) <= 1000.0,
            format!(
                "every answer during the fault within 1 s (max {} ms)",
                fault.last().copied().unwrap_or(0.0)
            ),
        );
    }

    /// `/readyz` during `[from, to)`: within 1 s, naming `dep`, with `want` status; and the
    /// first `ready` after `to`.
    fn readiness(&mut self, probes: &[Probe], from: f64, to: f64, dep: &str, want: u16) {
        let during: Vec<&Probe> = probes
            .iter()
            .filter(|p| p.sent_ms >= from + 1000.0 && p.sent_ms + p.latency_ms < to)
            .collect();
        let mut lat: Vec<f64> = during.iter().map(|p| p.latency_ms).collect();
        lat.sort_by(f64::total_cmp);
        let mut statuses = BTreeMap::new();
        for p in &during {
            let key = match p.status {
                0 => "no answer in 3 s".to_owned(),
                s => s.to_string(),
            };
            *statuses.entry(key).or_insert(0) += 1;
        }
        let named = during.iter().filter(|p| p.names_down(dep)).count();
        let ready_again = probes
            .iter()
            .find(|p| p.sent_ms >= to && p.ready())
            .map(|p| p.sent_ms + p.latency_ms - to);
        self.set(
            "readyz",
            json!({"statuses": statuses, "max_ms": lat.last().copied().unwrap_or(0.0),
                   "named": named, "probes": during.len(), "ready_again_ms": ready_again}),
        );
        self.bar(
            lat.last().copied().unwrap_or(0.0) <= 1000.0,
            format!(
                "/readyz within 1 s (max {} ms)",
                lat.last().copied().unwrap_or(0.0)
            ),
        );
        self.bar(
            !during.is_empty() && during.iter().all(|p| p.status == want && p.names_down(dep)),
            format!("/readyz {want} naming {dep} ({statuses:?}, {named} named it)"),
        );
    }

    /// Recovery: the first 201 sent after `back` (ms), and the claim log drained.
    fn recovery(&mut self, answers: &[Answer], back: f64, drained: Option<f64>) {
        let first = answers
            .iter()
            .filter(|a| a.sent_ms >= back && a.status == 201)
            .map(|a| a.done_ms() - back)
            .reduce(f64::min);
        self.set(
            "recovery",
            json!({"first_success_ms": first, "drained_ms": drained}),
        );
        self.bar(
            first.is_some_and(|f| f <= 5000.0),
            format!("a claim succeeds within 5 s of recovery ({first:?} ms)"),
        );
    }

    /// Prints the result line, then asserts the invariants (always) and the bars (strict).
    fn conclude(mut self, inv: &Invariants) {
        self.set("invariants", inv.json());
        self.set("bars_missed", json!(self.bars_missed));
        self.set("goals_missed", json!(self.goals_missed));
        self.set("strict", json!(strict()));
        let mut line = serde_json::Map::new();
        line.insert("scenario".into(), json!(self.scenario));
        line.insert("injected".into(), json!(self.injected));
        line.extend(self.fields);
        let line = Value::Object(line);
        println!("FAULT-RESULT {line}");
        println!("FAULT-ROW {}", table_row(&line));
        let line = line.to_string();
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("faults-results.jsonl");
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
        {
            use std::io::Write;
            let _ = writeln!(f, "{line}");
        }
        let broken = inv.violations();
        assert!(
            broken.is_empty(),
            "{}: invariants broken: {broken:?}",
            self.scenario
        );
        if strict() {
            assert!(
                self.bars_missed.is_empty(),
                "{}: bars missed: {:?}",
                self.scenario,
                self.bars_missed
            );
        }
    }
}

fn codes_text(v: &Value) -> String {
    let Some(m) = v.as_object() else {
        return "-".into();
    };
    m.iter()
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ms_text(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |f| format!("{f:.0} ms"))
}

/// The scenario as a row of the Markdown table in RELIABILITY.md.
fn table_row(r: &Value) -> String {
    let inv = &r["invariants"];
    let invariants = if inv["ok"] == true {
        format!("hold ({} acked, {} issued)", inv["acked"], inv["issued"])
    } else {
        format!("BROKEN: {}", inv["violations"])
    };
    let mut bars: Vec<String> = r["bars_missed"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b.as_str().map(str::to_owned))
        .collect();
    bars.extend(
        r["goals_missed"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b.as_str().map(|g| format!("goal missed: {g}"))),
    );
    format!(
        "| {} | {} | {} | {} | {} / {} (max {}) | {} / {} | {} | {} |",
        r["scenario"].as_str().unwrap_or("?"),
        r["injected"].as_str().unwrap_or("?"),
        codes_text(&r["answers"]),
        codes_text(&r["fault_answers"]),
        ms_text(&r["fault_latency"]["p99_ms"]),
        ms_text(&r["latency"]["p99_ms"]),
        ms_text(&r["fault_latency"]["max_ms"]),
        ms_text(&r["recovery"]["first_success_ms"]),
        ms_text(&r["recovery"]["drained_ms"]),
        invariants,
        if bars.is_empty() {
            "none".to_owned()
        } else {
            bars.join("; ").replace('|', "/")
        },
    )
}

/// Load until `n` claims are acknowledged (the load got going before the fault).
async fn warm_up(load: &Load, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while load.count_201() < n {
        assert!(Instant::now() < deadline, "the load never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn since(t0: Instant) -> f64 {
    ms(t0.elapsed())
}

/// The end of every scenario: stop, drain, check the stores.
async fn drain_and_check(
    cl: &Cluster,
    template: &str,
    answers: &[Answer],
    back: Instant,
) -> (Option<f64>, Invariants) {
    let drained = cl
        .wait_drained(template, back, Duration::from_secs(60))
        .await;
    let inv = invariants(cl, template, answers).await;
    (drained, inv)
}

// ---------------------------------------------------------------------------------------
// Scenarios.
// ---------------------------------------------------------------------------------------

const WORKERS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_cut_20s_under_claim_load() {
    if !enabled() {
        return;
    }
    let mut cl = Cluster::start().await;
    let template = cl.create_template().await;
    let t0 = Instant::now();
    let load = Load::start(&cl, &template, WORKERS, &[0, 1], t0);
    let probes = Prober::start(&cl, 0, t0);
    warm_up(&load, 200).await;
    let from = since(t0);
    cl.mysql_proxy
        .set_mode(Mode::Cut)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_secs(20)).await;
    let back = Instant::now();
    cl.mysql_proxy
        .set_mode(Mode::Pass)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let to = since(t0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let answers = load.finish().await;
    let probes = probes.finish().await;
    let mut o = Outcome::new(
        "mysql_cut",
        "MySQL proxy cut 20 s (live connections closed, port refused)",
        &cl,
    );
    o.answers(&answers, from, to);
    let during: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.sent_ms >= from && a.sent_ms < to)
        .collect();
    let ok = during.iter().filter(|a| a.status == 201).count();
    o.bar(
        !during.is_empty() && ok == during.len(),
        format!(
            "claims keep succeeding without MySQL ({ok} of {} were 201)",
            during.len()
        ),
    );
    o.readiness(&probes, from, to, "database", 200);
    o.bar(
        probes
            .iter()
            .filter(|p| p.sent_ms >= from + 1000.0 && p.sent_ms + p.latency_ms < to)
            .all(|p| p.body["status"] == "degraded"),
        "/readyz says degraded while MySQL is down".into(),
    );
    let (drained, inv) = drain_and_check(&cl, &template, &answers, back).await;
    o.recovery(&answers, to, drained);
    let ready_again = probes
        .iter()
        .find(|p| p.sent_ms >= to && p.ready())
        .map(|p| p.sent_ms + p.latency_ms - to);
    o.bar(
        ready_again.is_some_and(|r| r <= 5000.0),
        format!("/readyz ready within 5 s of MySQL's return ({ready_again:?} ms)"),
    );
    o.conclude(&inv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cut_10s_fails_fast_and_settlement_goes_on() {
    if !enabled() {
        return;
    }
    let mut cl = Cluster::start().await;
    let template = cl.create_template().await;
    let (user, coupon) = cl.persisted_coupon(&template).await;
    let t0 = Instant::now();
    let load = Load::start(&cl, &template, WORKERS, &[0, 1], t0);
    let probes = Prober::start(&cl, 0, t0);
    warm_up(&load, 200).await;
    let from = since(t0);
    cl.redis_proxy
        .set_mode(Mode::Cut)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = tokio::time::timeout(
        Duration::from_secs(20),
        cl.settle(1, user, &coupon, "fault-redis-cut"),
    )
    .await
    .unwrap_or_default();
    let left = Duration::from_secs(10)
        .saturating_sub(Duration::from_secs_f64((since(t0) - from) / 1000.0));
    tokio::time::sleep(left).await;
    let back = Instant::now();
    cl.redis_proxy
        .set_mode(Mode::Pass)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let to = since(t0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let answers = load.finish().await;
    let probes = probes.finish().await;
    let mut o = Outcome::new(
        "redis_cut",
        "Redis proxy cut 10 s (live connections closed, port refused)",
        &cl,
    );
    o.answers(&answers, from, to);
    // Fail fast once the outage is known: the 503s sent after its first second.
    let open: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.sent_ms >= from + 1000.0 && a.sent_ms < to)
        .collect();
    let fast = latencies(open.iter().copied());
    o.set("fail_fast_latency", lat_json(&fast));
    // A claim the node cannot tell about (its half-open probe timed out after being sent)
    // is answered OUTCOME_UNKNOWN: a right answer too (the client retries with its key).
    let unavailable = open
        .iter()
        .filter(|a| a.code == "503 UNAVAILABLE" || a.code == "503 OUTCOME_UNKNOWN")
        .count();
    o.bar(
        !open.is_empty() && unavailable == open.len(),
        format!(
            "claims sent while Redis was out answered 503 UNAVAILABLE or OUTCOME_UNKNOWN (got {:?})",
            by_code(open.iter().copied())
        ),
    );
    o.bar(
        percentile(&fast, 0.99) <= 50.0,
        format!(
            "fail fast: p99 {} ms ≤ 50 ms once open",
            percentile(&fast, 0.99)
        ),
    );
    o.set("settlement", json!(settled));
    o.bar(
        settled.len() == 2 && settled.iter().all(|(s, l)| *s == 200 && *l <= 1000.0),
        format!("settlement (lock, redeem) keeps working without Redis: {settled:?}"),
    );
    o.readiness(&probes, from, to, "redis", 503);
    let (drained, inv) = drain_and_check(&cl, &template, &answers, back).await;
    o.recovery(&answers, to, drained);
    o.no_happened_claim_failed(&inv);
    o.conclude(&inv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_on_its_append_only_file() {
    if !enabled() {
        return;
    }
    let mut cl = Cluster::start().await;
    let template = cl.create_template().await;
    let t0 = Instant::now();
    let load = Load::start(&cl, &template, WORKERS, &[0, 1], t0);
    let probes = Prober::start(&cl, 0, t0);
    warm_up(&load, 200).await;
    let from = since(t0);
    cl.redis.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| cl.redis.restart()).unwrap_or_else(|e| panic!("{e}"));
    let back = Instant::now();
    let to = since(t0);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let answers = load.finish().await;
    let probes = probes.finish().await;
    let mut o = Outcome::new(
        "redis_restart",
        "Redis SIGKILLed under load, restarted on the same AOF (appendfsync always) after 3 s",
        &cl,
    );
    o.answers(&answers, from, to);
    o.readiness(&probes, from, to, "redis", 503);
    let (drained, inv) = drain_and_check(&cl, &template, &answers, back).await;
    o.recovery(&answers, to, drained);
    o.no_happened_claim_failed(&inv);
    o.conclude(&inv);
}

/// Redis connections reset (RST) mid-claim, five times a second apart: the ambiguous outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_connections_reset_mid_claim() {
    if !enabled() {
        return;
    }
    let mut cl = Cluster::start().await;
    let template = cl.create_template().await;
    let t0 = Instant::now();
    let load = Load::start(&cl, &template, WORKERS, &[0, 1], t0);
    let probes = Prober::start(&cl, 0, t0);
    warm_up(&load, 200).await;
    let from = since(t0);
    for _ in 0..5 {
        cl.redis_proxy
            .set_mode(Mode::Reset)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        cl.redis_proxy
            .set_mode(Mode::Pass)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_millis(900)).await;
    }
    let back = Instant::now();
    let to = since(t0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let answers = load.finish().await;
    let _ = probes.finish().await;
    let mut o = Outcome::new(
        "redis_reset",
        "Redis connections reset (RST) 5 times, 1 s apart, each reset lasting 100 ms",
        &cl,
    );
    o.answers(&answers, from, to);
    let (drained, inv) = drain_and_check(&cl, &template, &answers, back).await;
    o.recovery(&answers, to, drained);
    o.no_happened_claim_failed(&inv);
    o.conclude(&inv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_mysql_500ms_per_packet() {
    if !enabled() {
        return;
    }
    let mut cl = Cluster::start().await;
    let template = cl.create_template().await;
    let t0 = Instant::now();
    let load = Load::start(&cl, &template, WORKERS, &[0, 1], t0);
    let probes = Prober::start(&cl, 0, t0);
    warm_up(&load, 200).await;
    let from = since(t0);
    cl.mysql_proxy
        .set_mode(Mode::Delay(Duration::from_millis(500)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_secs(8)).await;
    let back = Instant::now();
    cl.mysql_proxy
        .set_mode(Mode::Pass)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let to = since(t0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let answers = load.finish().await;
    let probes = probes.finish().await;
    let mut o = Outcome::new(
        "slow_mysql",
        "MySQL proxy delays every packet 500 ms each way for 8 s",
        &cl,
    );
    o.answers(&answers, from, to);
    let during: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.sent_ms >= from && a.sent_ms < to)
        .collect();
    let ok = during.iter().filter(|a| a.status == 201).count();
    o.bar(
        !during.is_empty() && ok == during.len(),
        format!(
            "claims keep succeeding with MySQL slow ({ok} of {} were 201)",
            during.len()
        ),
    );
    // Slow is not down: /readyz answers within 1 s, either way.
    let late = probes
        .iter()
        .filter(|p| p.sent_ms >= from && p.sent_ms < to)
        .map(|p| p.latency_ms)
        .fold(0.0, f64::max);
    o.set("readyz", json!({"max_ms": late}));
    o.bar(
        late <= 1000.0,
        format!("/readyz within 1 s (max {late} ms)"),
    );
    let (drained, inv) = drain_and_check(&cl, &template, &answers, back).await;
    o.recovery(&answers, to, drained);
    o.conclude(&inv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_kill_9_under_load_the_other_node_serves() {
    if !enabled() {
        return;
    }
    let mut cl = Cluster::start().await;
    let template = cl.create_template().await;
    let t0 = Instant::now();
    let load = Load::start(&cl, &template, WORKERS, &[0, 1], t0);
    let probes = Prober::start(&cl, 0, t0);
    warm_up(&load, 400).await;
    let from = since(t0);
    cl.kill_node(1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restart = since(t0);
    let back = Instant::now();
    cl.start_node(1);
    let to = since(t0);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let answers = load.finish().await;
    let probes = probes.finish().await;
    let mut o = Outcome::new(
        "node_kill",
        "node 2 of 2 SIGKILLed under load, restarted after 3 s",
        &cl,
    );
    // Node 1's answers while node 2 was gone: the fault as the surviving node saw it.
    let survivor: Vec<Answer> = answers.iter().filter(|a| a.node == 0).cloned().collect();
    o.answers(&survivor, from, to);
    o.set("answers_all_nodes", json!(by_code(answers.iter())));
    let served = survivor
        .iter()
        .filter(|a| a.sent_ms >= from && a.sent_ms < to && a.status == 201)
        .count();
    o.bar(
        served > 0,
        format!("the other node kept serving ({served} claims)"),
    );
    let ready = probes
        .iter()
        .filter(|p| p.sent_ms >= from && p.sent_ms < to)
        .all(|p| p.status == 200);
    o.bar(ready, "the surviving node stays ready".into());
    let (drained, inv) = drain_and_check(&cl, &template, &answers, back).await;
    let restarted: Vec<Answer> = answers.iter().filter(|a| a.node == 1).cloned().collect();
    let first = restarted
        .iter()
        .filter(|a| a.sent_ms >= restart && a.status == 201)
        .map(|a| a.done_ms() - restart)
        .reduce(f64::min);
    o.set(
        "recovery",
        json!({"first_success_ms": first, "drained_ms": drained,
               "note": "from the restart's spawn to the restarted node's first 201"}),
    );
    o.bar(
        first.is_some_and(|f| f <= 5000.0),
        format!("the restarted node claims within 5 s ({first:?} ms)"),
    );
    o.conclude(&inv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_1000_connections_answers_fast_and_settlement_succeeds() {
    if !enabled() {
        return;
    }
    let mut cl = Cluster::start().await;
    let template = cl.create_template().await;
    let (user, coupon) = cl.persisted_coupon(&template).await;
    let t0 = Instant::now();
    let from = since(t0);
    // 1,000 clients at once on one node, each on its own connection.
    let load = Load::start(&cl, &template, 1000, &[0], t0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = tokio::time::timeout(
        Duration::from_secs(20),
        cl.settle(0, user, &coupon, "fault-overload"),
    )
    .await
    .unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let back = Instant::now();
    let to = since(t0);
    let answers = load.finish().await;
    let mut o = Outcome::new(
        "overload",
        "1,000 concurrent connections claiming on one node for 5 s",
        &cl,
    );
    o.answers(&answers, from, to);
    let codes = by_code(answers.iter());
    let odd: Vec<&String> = codes
        .keys()
        .filter(|c| !(c.starts_with("201") || c.starts_with("429") || c.starts_with("503")))
        .collect();
    o.bar(
        odd.is_empty(),
        format!("answers are only 201/429/503 (also {odd:?})"),
    );
    let admitted = latencies(answers.iter().filter(|a| a.status == 201));
    let refused = latencies(
        answers
            .iter()
            .filter(|a| a.status == 429 || a.status == 503),
    );
    o.set("admitted_latency", lat_json(&admitted));
    o.set("refused_latency", lat_json(&refused));
    // The latency goals under overload are not reached with the load generator,
    // two nodes, MariaDB and Redis on the same 2 cores: measured, reported, not asserted.
    o.goal(
        percentile(&admitted, 0.99) <= 50.0,
        format!("admitted p99 {} ms ≤ 50 ms", percentile(&admitted, 0.99)),
    );
    o.goal(
        refused.is_empty() || percentile(&refused, 0.99) <= 10.0,
        format!("refused p99 {} ms ≤ 10 ms", percentile(&refused, 0.99)),
    );
    let slowest = admitted
        .last()
        .copied()
        .unwrap_or(0.0)
        .max(refused.last().copied().unwrap_or(0.0));
    o.bar(
        slowest <= 2000.0,
        format!("no answer takes over 2 s under overload (slowest {slowest} ms)"),
    );
    o.set("settlement", json!(settled));
    o.bar(
        settled.len() == 2 && settled.iter().all(|(s, l)| *s == 200 && *l <= 1000.0),
        format!("settlement (lock, redeem) succeeds under overload: {settled:?}"),
    );
    let (drained, inv) = drain_and_check(&cl, &template, &answers, back).await;
    o.set("recovery", json!({"drained_ms": drained}));
    o.conclude(&inv);
}
