//! Stampede's distributed hot path on Redis.
//!
//! This crate owns everything Stampede keeps in Redis for claims:
//!
//! - [`RedisHotState`], the [`HotState`](stampede_core::claim_ports::HotState) of the
//!   distributed mode: per template, the stock, the status and claim window, every user's
//!   coupon count, the claims' idempotency keys and the **claim log** (a Redis stream), all
//!   under the hash tag `{tpl:<id>}` and changed by one Lua script per claim (`lua/claim.lua`);
//!   plus each user's *pending* coupons (acknowledged, not yet in MySQL). Distribution
//!   batches reserve their coupons in the same keys, one script per batch
//!   (`lua/reserve.lua`, see "Distributions" below).
//! - [`Persister`], the background job that drains the claim logs into the system of record
//!   exactly once (see its module for the crash analysis).
//! - [`Invalidation`], the pub/sub channel that tells every node a template changed.
//! - [`RedisRateLimiter`], flow control's fleet-wide GCRA limiter (see its module).
//!
//! # Key layout
//!
//! With `P` the configured prefix (production: `stampede`) and `T` a template id:
//!
//! | key | type | content |
//! |---|---|---|
//! | `P:{tpl:T}:meta` | hash | `status`, `claim_start_ms`, `claim_end_ms`, `per_user_limit`, `stock`, `shop_id` |
//! | `P:{tpl:T}:users` | hash | user id → coupons of `T` the user holds |
//! | `P:{tpl:T}:keys` | hash | `claim_key \x1f user_id` → coupon made by that claim |
//! | `P:{tpl:T}:log` | stream | the claim log: one entry per claimed coupon |
//! | `P:{tpl:T}:lease` | string | node id of the persister draining `T`'s log (expires) |
//! | `P:{tpl:T}:changed` | string | `updated_at` of a change made while `T` was not loaded |
//! | `P:{tpl:T}:dist:D:R` | string | answer of distribution `D`'s batch starting at row `R` (expires) |
//! | `P:{tpl:T}:distret:D:R` | string | set once that batch's refused stock went back (expires) |
//! | `P:{user:U}:pending` | hash | coupon id → coupon, acknowledged but perhaps not persisted |
//! | `P:claimlogs` | set | template ids that have a claim log (what persisters scan) |
//! | `P:tpl-invalidate` | channel | template ids whose cached copies are stale |
//! | `P:login:<acct:name or ip:addr>` | hash | failed logins `f` and lockout end `u` (expires) |
//! | `P:{flow}:K` | string | a flow-control bucket (`user:U`, `ip:A`, `tpl:T`, `route:R`), expires when full |
//!
//! Coupons are stored in the compact text form of the `codec` module.
//!
//! # Loading
//!
//! A template is loaded into Redis on its first claim: the meta from the `Template` the
//! caller passes (which must be read from the system of record, not an old cached copy; a
//! change made meanwhile is caught by the `:changed` marker and the load refused), plus the
//! per-user counts and keyed coupons of `CouponStore::claim_state`. The meta's `stock` is the
//! template's `stock` column. That column equals the hot stock only when the template's claim
//! log is fully applied; it holds at the first load because nothing was claimed through Redis
//! before. Once loaded, Redis is the authority for the template's stock until the hot state
//! is lost, which the durability settings below rule out.
//!
//! # Distributions
//!
//! A distribution batch (≈5,000 users) reserves its coupons with one `reserve.lua` call:
//! status and `claim_end` (not `claim_start`), each user's limit, then stock, in file order,
//! atomically with claims since it moves the same `:meta` stock and `:users` counts. It writes
//! no claim-log entry: the distribution runner inserts the coupons into the system of record
//! itself. The answer is stored under the batch's `(task, first row)` and replayed to any
//! later attempt, so a batch whose commit failed, or whose runner died, reserves nothing twice
//! (which is why `abandon_batch` gives nothing back). Coupons the system of record refuses go
//! back with `return.lua`, at most once per batch.
//!
//! # Durability: an acknowledged claim survives `kill -9`
//!
//! A claim is acknowledged when `claim.lua` returned: the stock decrement, the user's count
//! and the claim-log entry are one atomic script, so there is no "stock taken but message
//! lost" window. For the acknowledgement to survive a crash of Redis itself, Redis must run
//! with `appendonly yes` and `appendfsync always` (with `appendfsync everysec`, up to one
//! second of acknowledged claims can be lost in a power failure or `kill -9` of Redis), with
//! `maxmemory-policy noeviction` (an evicted meta or log would be reloaded stale or lost), and,
//! with replicas, with `min-replicas-to-write` / `min-replicas-max-lag` (and `WAIT` where a
//! failover must not lose the last writes), because replication is asynchronous. Pending
//! coupons are only a read-your-writes cache and may be lost without harm.
//!
//! # Deployment notes
//!
//! The client is `redis::aio::ConnectionManager` (standalone Redis, optionally with
//! replicas) or the redis crate's cluster client (`redis.mode = "cluster"`), behind
//! [`Connection`]: every command under the node's Redis circuit breaker and a deadline
//! (`connection`), so a Redis that is down fails calls fast. On a cluster:
//!
//! - every script's keys share one hash slot (`{tpl:<id>}` or `{flow}`); the one write of
//!   another slot a claim makes, the user's pending hash, is sent right after `claim.lua`
//!   instead of inside it (a second round trip, cluster only);
//! - multi-key reads and cleanups that span templates or users (`Connection::query_many`)
//!   send one command per key, concurrently, instead of one pipeline;
//! - pub/sub subscribers connect to any seed node (classic `PUBLISH` reaches every node of
//!   a cluster) and move to the next seed when one fails.
//!
//! Under Sentinel (`redis.mode = "sentinel"`) the connection asks the sentinels for the
//! master and asks again after a failure that says it moved; with a [`ReplicaWait`] a claim is
//! acknowledged only once a replica holds it (see `replica_wait`).
//!
//! A claim whose answer is lost (a timeout) may still have happened: the claim's
//! `Idempotency-Key` makes the retry safe.

mod codec;
pub mod connection;
mod flow;
mod hot_state;
mod invalidation;
pub mod keys;
mod login;
mod persister;
mod replica_wait;
mod scripts;
mod template_cache;
mod user_invalidation;
mod worker_lease;

pub use connection::{Connection, is_unavailable};
pub use flow::RedisRateLimiter;
pub use hot_state::RedisHotState;
pub use invalidation::{Invalidation, Seeds};
pub use login::RedisLoginAttempts;
pub use persister::{ClaimLogHints, LogBatch, Persister};
pub use replica_wait::ReplicaWait;
pub use template_cache::RedisTemplateCache;
pub use user_invalidation::UserInvalidation;
pub use worker_lease::{lease_worker_id, renew_worker_id};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use stampede_core::ports::{Dependency, StoreError};
use stampede_resilience::Breaker;
use std::sync::Arc;
use std::time::Duration;

/// Default deadline of a command on a bare connection (tests, tools). Servers configure
/// theirs (`resilience.redis_command_ms`).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a server's Redis connection fails fast: connect timeout, per-command deadline, and
/// the node's Redis breaker shared by every connection.
#[derive(Clone, Debug)]
pub struct RedisResilience {
    pub connect_timeout: Duration,
    pub command_deadline: Duration,
    pub breaker: Arc<Breaker>,
}

/// Where this node's Redis is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisTopology {
    /// One server (`redis://host:port[/db]`), possibly with replicas nobody reads from.
    Single(String),
    /// A Redis Cluster, found through any of these seed nodes.
    Cluster(Vec<String>),
    /// The master of the group Sentinel calls `master`, found through these sentinels
    /// (`redis://host:26379`) and again after a failover.
    Sentinel {
        sentinels: Vec<String>,
        master: String,
    },
}

impl RedisTopology {
    /// Where pub/sub subscribers connect.
    pub fn subscribe_seeds(&self) -> Seeds {
        match self {
            Self::Single(url) => Seeds::Urls(vec![url.clone()]),
            Self::Cluster(urls) => Seeds::Urls(urls.clone()),
            Self::Sentinel { sentinels, master } => Seeds::Sentinel {
                sentinels: sentinels.clone(),
                master: master.clone(),
            },
        }
    }
}

/// A client that asks `sentinels` where the master of `master` is.
pub(crate) fn sentinel_client(
    sentinels: &[String],
    master: &str,
) -> Result<redis::sentinel::SentinelClient, StoreError> {
    redis::sentinel::SentinelClient::build(
        sentinels.to_vec(),
        master.to_owned(),
        None,
        redis::sentinel::SentinelServerType::Master,
    )
    .map_err(backend)
}

/// [`connect_with`] for any topology: a cluster gets the cluster client (slot routing,
/// `MOVED`/`ASK` redirections, topology refresh), under the same breaker and deadline.
pub async fn connect_topology(
    topology: &RedisTopology,
    r: &RedisResilience,
) -> Result<Connection, StoreError> {
    match topology {
        RedisTopology::Single(url) => connect_with(url, r).await,
        RedisTopology::Cluster(urls) => {
            let client = redis::cluster::ClusterClientBuilder::new(urls.iter().map(String::as_str))
                .connection_timeout(r.connect_timeout)
                .response_timeout(r.command_deadline.max(RESPONSE_TIMEOUT))
                .build()
                .map_err(backend)?;
            let inner = client.get_async_connection().await.map_err(backend)?;
            Ok(Connection::cluster(
                inner,
                r.breaker.clone(),
                r.command_deadline,
            ))
        }
        RedisTopology::Sentinel { sentinels, master } => {
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(r.connect_timeout))
                .set_response_timeout(Some(r.command_deadline.max(RESPONSE_TIMEOUT)));
            let m = connection::SentinelMaster::new(sentinel_client(sentinels, master)?, config);
            // Like the other topologies, start only once the master answers.
            m.get().await.map_err(backend)?;
            Ok(Connection::sentinel(
                m,
                r.breaker.clone(),
                r.command_deadline,
            ))
        }
    }
}

/// A connection of its own to `topology`, with its own breaker and the default deadline
/// (flow control's limiter, tests, tools).
pub async fn connect_bare(topology: &RedisTopology) -> Result<Connection, StoreError> {
    let r = RedisResilience {
        connect_timeout: Duration::from_secs(2),
        command_deadline: RESPONSE_TIMEOUT,
        breaker: Arc::new(Breaker::new(
            Dependency::Redis,
            stampede_resilience::BreakerConfig::default(),
        )),
    };
    connect_topology(topology, &r).await
}

/// Opens a reconnecting, multiplexed connection to the Redis at `url`
/// (`redis://[:password@]host:port[/db]`), without a shared breaker (tests, tools).
pub async fn connect(url: &str) -> Result<ConnectionManager, StoreError> {
    manager(url, Duration::from_secs(2), RESPONSE_TIMEOUT).await
}

/// [`connect`], with the server's deadlines and its Redis breaker.
pub async fn connect_with(url: &str, r: &RedisResilience) -> Result<Connection, StoreError> {
    // The manager's own response timeout is a backstop; `Connection` cuts at the deadline.
    let inner = manager(
        url,
        r.connect_timeout,
        r.command_deadline.max(RESPONSE_TIMEOUT),
    )
    .await?;
    Ok(Connection::new(
        inner,
        r.breaker.clone(),
        r.command_deadline,
    ))
}

async fn manager(
    url: &str,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Result<ConnectionManager, StoreError> {
    let client = redis::Client::open(url).map_err(backend)?;
    // Reconnect attempts back off to at most 1 s, so a Redis that returns is used again
    // within about a second.
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(connect_timeout))
        .set_max_delay(Duration::from_secs(1));
    ConnectionManager::new_with_config(client, config)
        .await
        .map_err(backend)
}

/// A Redis error as a `StoreError`: unreachable, slow, refused by the breaker or not
/// serving (loading, failing over) is `Unavailable { Redis }`; anything else is an answer
/// the caller could not use (`Backend`).
pub(crate) fn backend(e: redis::RedisError) -> StoreError {
    if is_unavailable(&e) {
        StoreError::Unavailable {
            dependency: Dependency::Redis,
            source: Box::new(e),
        }
    } else {
        StoreError::Backend(Box::new(e))
    }
}

pub(crate) fn backend_msg(msg: impl Into<String>) -> StoreError {
    StoreError::Backend(msg.into().into())
}
