//! Three `stampede` processes over MySQL 2×4, a Redis Cluster and NATS: one flash sale raced
//! from all three, one node `kill -9`ed mid-sale, and a JetStream consumer that must see every
//! acknowledged claim's `coupon.claimed` exactly once (after dedup by event id), each user's
//! coupons in the order they were claimed. Needs `STAMPEDE_TEST_REDIS_CLUSTER` (the test
//! command starts a private 3-master cluster) and the shared MariaDB and NATS.

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use stampede_core::auth::TokenService;
use stampede_core::clock::SystemClock;
use stampede_domain::auth::Role;
use stampede_events_nats::{NatsPublisher, NatsSettings};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[allow(dead_code)] // the webhook sink is for the crash test
mod common;
use common::token;

const SECRET: &str = "multi-node-secret-multi-node-secret-0123456789";
const STOCK: i64 = 1_200;
const USERS: u64 = 900;
const LIMIT: u64 = 2;

fn cluster_seeds() -> Vec<String> {
    let seeds = common::env_list("STAMPEDE_TEST_REDIS_CLUSTER");
    assert!(
        !seeds.is_empty(),
        "needs a Redis Cluster: eval \"$(scripts/redis-cluster.sh start)\" sets \
         STAMPEDE_TEST_REDIS_CLUSTER (scripts/test.sh does)"
    );
    seeds
}

fn nats_url() -> String {
    std::env::var("STAMPEDE_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// One node's config: its own data dir, the shared databases, cluster, stream.
fn node_config(dir: &std::path::Path, tag: u64, seeds: &[String]) -> std::path::PathBuf {
    let dbs: Vec<String> = (0..2)
        .map(|i| format!("\"mysql://root@127.0.0.1:3306/stampede_t_{tag:016x}_{i}\""))
        .collect();
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    let toml = format!(
        "[server]\ndata_dir = \"{}\"\n[auth]\njwt_secret = \"{SECRET}\"\n\
         [storage]\nbackend = \"mysql\"\n[storage.mysql]\ndatabases = [{}]\ntables_per_database = 4\n\
         [redis]\nmode = \"cluster\"\nurls = [{}]\nprefix = \"stampede_t_{tag:016x}\"\n\
         persister_interval_ms = 5\npersister_sweep_ms = 500\n\
         [events]\nnats_url = \"{}\"\nstream = \"T_{tag:016x}\"\nsubject_prefix = \"t{tag:016x}.events\"\n\
         lease_secs = 3\nrelay_interval_ms = 50\n",
        dir.display(),
        dbs.join(", "),
        seeds.join(", "),
        nats_url()
    );
    let path = dir.join("stampede.toml");
    std::fs::write(&path, toml).unwrap_or_else(|e| panic!("{e}"));
    path
}

/// What the clients saw: user → coupons acknowledged, in claim order.
type Acked = Arc<Mutex<BTreeMap<u64, Vec<String>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Claims with `key` until the outcome is known: 201 (its coupon), 409 (sold out), trying the
/// next live node after a transport error or a 503 (a retry with the same key is safe).
async fn claim_until_known(
    client: &reqwest::Client,
    bases: &[String],
    alive: &[Arc<AtomicBool>],
    template: &str,
    user_token: &str,
    key: &str,
    first: usize,
) -> Option<String> {
    for attempt in 0..600 {
        let node = (first + attempt) % bases.len();
        if !alive[node].load(Ordering::Relaxed) {
            continue;
        }
        let sent = client
            .post(format!("{}/api/v1/templates/{template}/claim", bases[node]))
            .bearer_auth(user_token)
            .header("Idempotency-Key", key)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let Ok(r) = sent else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        match r.status().as_u16() {
            201 | 200 => {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                return Some(v["coupon"]["id"].as_str().unwrap_or_default().to_owned());
            }
            409 => return None,
            // Not yet known to this node (the creation's broadcast), overloaded, or down.
            404 | 429 | 503 => tokio::time::sleep(Duration::from_millis(20)).await,
            s => panic!(
                "claim {key}: unexpected {s}: {}",
                r.text().await.unwrap_or_default()
            ),
        }
    }
    panic!("claim {key}: no outcome after 600 attempts");
}

/// Every `coupon.claimed` in the stream through a pull consumer: event ids in delivery order,
/// and how many repeats the consumer dropped.
async fn consume(reader: &NatsSettings, want: usize, within: Duration) -> (Vec<Value>, usize) {
    let p = NatsPublisher::connect(reader.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + within;
    let stream = loop {
        match p.jetstream().get_stream(&reader.stream).await {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no stream {}: {e}", reader.stream),
        }
    };
    let consumer: async_nats::jetstream::consumer::Consumer<pull::Config> = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            filter_subject: format!("{}.coupon.claimed", reader.subject_prefix),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut seen = BTreeSet::new();
    let mut events = Vec::new();
    let mut repeats = 0;
    while events.len() < want && Instant::now() < deadline {
        let mut batch = consumer
            .fetch()
            .max_messages(500)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        while let Some(m) = batch.next().await {
            let m = m.unwrap_or_else(|e| panic!("{e}"));
            let ce: Value = serde_json::from_slice(&m.payload).unwrap_or_else(|e| panic!("{e}"));
            m.ack().await.unwrap_or_else(|e| panic!("{e}"));
            let id = ce["id"].as_str().unwrap_or_default().to_owned();
            if seen.insert(id) {
                events.push(ce);
            } else {
                repeats += 1;
            }
        }
    }
    (events, repeats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_race_one_dies_and_every_claim_is_published_once_in_per_user_order() {
    let seeds = cluster_seeds();
    let tag: u64 = rand::random();
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")))
        .collect();
    // Started one after another: the first creates the databases and runs the migrations.
    let mut nodes: Vec<common::Server> = dirs
        .iter()
        .map(|d| common::serve(&node_config(d.path(), tag, &seeds)))
        .collect();
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let alive: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::new(AtomicBool::new(true))).collect();
    let tokens = TokenService::new(SECRET.as_bytes(), Arc::new(SystemClock));
    let client = common::http_client();

    let now = Timestamp::now();
    let merchant = token(&tokens, Role::Merchant, "1", Some(7));
    let body = json!({
        "name": "Three-node sale", "kind": "fixed", "amount_off": 100,
        "stock_total": STOCK, "per_user_limit": LIMIT,
        "claim_start": (now - SignedDuration::from_secs(1)).to_string(),
        "claim_end": (now + SignedDuration::from_hours(1)).to_string(), "validity_hours": 24
    });
    let template = common::create_template(&client, &bases[0], &merchant, &body).await;

    // 48 clients; each user claims LIMIT times in turn, spread over the nodes.
    let acked: Acked = Arc::new(Mutex::new(BTreeMap::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for w in 0..48u64 {
        let (client, bases, alive, template, acked, count) = (
            client.clone(),
            bases.clone(),
            alive.clone(),
            template.clone(),
            acked.clone(),
            count.clone(),
        );
        let tokens = TokenService::new(SECRET.as_bytes(), Arc::new(SystemClock));
        load.push(tokio::spawn(async move {
            let mut user = 1 + w;
            while user <= USERS {
                let t = token(&tokens, Role::User, &user.to_string(), None);
                for n in 1..=LIMIT {
                    let key = format!("mn-{user}-{n}");
                    let first = usize::try_from(user + n).unwrap_or(0);
                    match claim_until_known(&client, &bases, &alive, &template, &t, &key, first)
                        .await
                    {
                        Some(c) => {
                            lock(&acked).entry(user).or_default().push(c);
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        None => break,
                    }
                }
                user += 48;
            }
        }));
    }
    // Node 1 dies mid-sale, with claims in flight and partitions leased.
    let started = Instant::now();
    while count.load(Ordering::Relaxed) < 400 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    alive[1].store(false, Ordering::Relaxed);
    let _ = nodes[1].child.kill();
    let _ = nodes[1].child.wait();
    let killed_at = count.load(Ordering::Relaxed);
    for l in load {
        l.await.unwrap_or_else(|e| panic!("{e}"));
    }

    // The race: exactly the stock, nobody over the limit, no coupon twice.
    let acked = lock(&acked).clone();
    let coupons: Vec<&String> = acked.values().flatten().collect();
    let distinct: BTreeSet<&String> = coupons.iter().copied().collect();
    assert!(killed_at >= 400, "the sale never got going: {killed_at}");
    assert_eq!(coupons.len() as i64, STOCK, "sold exactly the stock");
    assert_eq!(distinct.len(), coupons.len(), "no coupon twice");
    assert!(acked.values().all(|c| c.len() as u64 <= LIMIT));

    // The consumer: every acknowledged claim once, each user's in claim order.
    let reader = NatsSettings {
        url: nats_url(),
        stream: format!("T_{tag:016x}"),
        subject_prefix: format!("t{tag:016x}.events"),
        ..NatsSettings::default()
    };
    let (events, repeats) = consume(&reader, coupons.len(), Duration::from_secs(120)).await;
    let published: BTreeSet<String> = events
        .iter()
        .map(|ce| ce["data"]["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let want: BTreeSet<String> = coupons.iter().map(|c| (*c).clone()).collect();
    assert_eq!(
        published.len(),
        events.len(),
        "one event per coupon after dedup"
    );
    assert_eq!(
        published, want,
        "every acknowledged claim is published, nothing else"
    );
    let mut position: HashMap<String, usize> = HashMap::new();
    for (i, ce) in events.iter().enumerate() {
        position.insert(ce["data"]["id"].as_str().unwrap_or_default().to_owned(), i);
    }
    for (user, cs) in &acked {
        let order: Vec<usize> = cs.iter().filter_map(|c| position.get(c).copied()).collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "user {user}: claims {cs:?} published at {order:?}"
        );
    }
    eprintln!(
        "three nodes: {} coupons sold ({} before node 1 was killed), {} users, {} events \
         consumed, {} repeats dropped by the consumer",
        coupons.len(),
        killed_at,
        acked.len(),
        events.len(),
        repeats
    );

    // Clean up: the stream and the databases.
    if let Ok(p) = NatsPublisher::connect(reader.clone()).await {
        let _ = p.jetstream().delete_stream(&reader.stream).await;
    }
    drop(nodes);
    for i in 0..2 {
        let _ = Command::new("mariadb")
            .args([
                "-uroot",
                "-h127.0.0.1",
                "-e",
                &format!("DROP DATABASE IF EXISTS `stampede_t_{tag:016x}_{i}`"),
            ])
            .status();
    }
}
