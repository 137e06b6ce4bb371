//! The one door to Redis: every command of this crate (claim scripts, reads, the persister,
//! the template cache, invalidation publishes, worker-id leases) goes through a
//! [`Connection`], which puts it under the node's Redis circuit breaker and a deadline. While
//! the breaker is open a command fails at once without touching the socket; a command that
//! times out or finds Redis unreachable counts against the breaker. Its errors are I/O
//! errors, so `crate::backend` turns them into `StoreError::Unavailable { Redis }`.

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::SentinelClient;
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use stampede_core::ports::Dependency;
use stampede_resilience::{Breaker, BreakerConfig, DeadlineExceeded, FailureKind};
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// A reconnecting, multiplexed Redis connection behind a circuit breaker and a deadline per
/// command. Clones share the socket and the breaker.
#[derive(Clone)]
pub struct Connection {
    inner: Inner,
    breaker: Arc<Breaker>,
    deadline: Duration,
}

/// The client underneath: one server (with `ConnectionManager`'s reconnects), a Redis
/// Cluster (the cluster client routes each command by its keys' slot and follows
/// `MOVED`/`ASK` redirections and topology changes by itself), or the master Sentinel names.
#[derive(Clone)]
enum Inner {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    /// The master Sentinel names, found again after a failure.
    Sentinel(SentinelMaster),
    /// One fixed socket to one server (see [`Connection::pinned`]).
    Pinned(MultiplexedConnection),
}

/// A connection to the master of a Sentinel-monitored group: resolved through the sentinels
/// on first use and again after any failure that says the master may have changed (the
/// socket died, or the server answers `READONLY` because it was demoted), so a node follows a
/// failover within one failed call plus Sentinel's own promotion time.
#[derive(Clone)]
pub(crate) struct SentinelMaster {
    resolver: Arc<tokio::sync::Mutex<SentinelClient>>,
    current: Arc<std::sync::Mutex<Option<MultiplexedConnection>>>,
    config: redis::AsyncConnectionConfig,
}

impl SentinelMaster {
    pub(crate) fn new(resolver: SentinelClient, config: redis::AsyncConnectionConfig) -> Self {
        Self {
            resolver: Arc::new(tokio::sync::Mutex::new(resolver)),
            current: Arc::new(std::sync::Mutex::new(None)),
            config,
        }
    }

    fn cached(&self) -> Option<MultiplexedConnection> {
        self.current.lock().map(|c| c.clone()).unwrap_or(None)
    }

    /// The master's connection, asking the sentinels where it is when there is none.
    pub(crate) async fn get(&self) -> Result<MultiplexedConnection, RedisError> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let mut resolver = self.resolver.lock().await;
        // Another caller may have resolved it while we waited.
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let client = resolver.async_get_client().await?;
        let conn = client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        if let Ok(mut current) = self.current.lock() {
            *current = Some(conn.clone());
        }
        Ok(conn)
    }

    /// Forgets the master after an error that says it may have moved.
    fn failed(&self, e: &RedisError) {
        let moved = is_unavailable(e)
            || matches!(
                e.kind(),
                redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
            );
        if moved && let Ok(mut current) = self.current.lock() {
            *current = None;
        }
    }
}

impl Connection {
    pub fn new(inner: ConnectionManager, breaker: Arc<Breaker>, deadline: Duration) -> Self {
        Self {
            inner: Inner::Single(inner),
            breaker,
            deadline,
        }
    }

    /// A connection to a Redis Cluster.
    pub fn cluster(inner: ClusterConnection, breaker: Arc<Breaker>, deadline: Duration) -> Self {
        Self {
            inner: Inner::Cluster(inner),
            breaker,
            deadline,
        }
    }

    /// A connection to a Sentinel-monitored master.
    pub(crate) fn sentinel(
        master: SentinelMaster,
        breaker: Arc<Breaker>,
        deadline: Duration,
    ) -> Self {
        Self {
            inner: Inner::Sentinel(master),
            breaker,
            deadline,
        }
    }

    /// This connection held to the one socket it uses now (the current master's, under
    /// Sentinel), so that a `WAIT` sent after a write counts that write: `WAIT` waits for the
    /// writes of its own connection. Other topologies return a clone.
    pub async fn pinned(&self) -> Result<Connection, RedisError> {
        let Inner::Sentinel(m) = &self.inner else {
            return Ok(self.clone());
        };
        let conn = self.run(m.get()).await.inspect_err(|e| m.failed(e))?;
        Ok(Self {
            inner: Inner::Pinned(conn),
            ..self.clone()
        })
    }

    /// Whether commands go to a Redis Cluster: a script's keys must then share one slot, so
    /// callers keep keys of other slots out of scripts.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner, Inner::Cluster(_))
    }

    /// The same connection and breaker, with another deadline per command (a persister's
    /// batch reads get longer than a claim).
    pub fn with_deadline(&self, deadline: Duration) -> Self {
        Self {
            deadline,
            ..self.clone()
        }
    }

    /// Runs `cmds` and returns their replies in order: one pipeline on a single server; on a
    /// cluster, where a pipeline must stay within one slot, every command on its own and all
    /// at once (the cluster client multiplexes them per node, so it is still a round trip or
    /// so, not one per command).
    pub async fn query_many<T: FromRedisValue>(&self, cmds: Vec<Cmd>) -> RedisResult<Vec<T>> {
        if self.is_cluster() {
            let calls = cmds.into_iter().map(|c| {
                let mut conn = self.clone();
                async move { c.query_async::<T>(&mut conn).await }
            });
            futures::future::try_join_all(calls).await
        } else {
            let mut pipe = redis::pipe();
            for c in cmds {
                pipe.add_command(c);
            }
            let mut conn = self.clone();
            pipe.query_async(&mut conn).await
        }
    }

    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    pub fn deadline(&self) -> Duration {
        self.deadline
    }
}

/// A bare `ConnectionManager` (tests, tools): its own breaker, the default deadline.
impl From<ConnectionManager> for Connection {
    fn from(inner: ConnectionManager) -> Self {
        Self::new(
            inner,
            Arc::new(Breaker::new(Dependency::Redis, BreakerConfig::default())),
            crate::RESPONSE_TIMEOUT,
        )
    }
}

/// Whether `e` says Redis is unreachable, slow or not serving (not an answer to the command).
pub fn is_unavailable(e: &RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.kind(),
            ErrorKind::ClusterConnectionNotFound
                // Sentinel knows no live master (a failover is under way).
                | ErrorKind::MasterNameNotFoundBySentinel
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::TryAgain
                )
        )
}

/// A refusal by the open breaker reads as a refused connection: the command never left this
/// node, so a claim refused this way surely did not happen (not an unknown outcome).
fn refused(e: stampede_resilience::BreakerOpen) -> RedisError {
    RedisError::from(io::Error::new(io::ErrorKind::ConnectionRefused, e))
}

fn timed_out(deadline: Duration) -> RedisError {
    RedisError::from(io::Error::new(
        io::ErrorKind::TimedOut,
        DeadlineExceeded {
            dependency: Dependency::Redis,
            deadline,
        },
    ))
}

/// Histogram: seconds per Redis round trip (a command or a pipeline), as a caller waits.
pub const SECONDS: &str = "stampede_redis_command_seconds";
/// Counter: failed Redis calls by `kind` ([`ERROR_KINDS`]): `breaker_open` (refused without a
/// call), `timeout`, `unreachable`, `reply` (Redis answered with an error, e.g. a script's).
pub const ERRORS: &str = "stampede_redis_errors_total";
const BREAKER_OPEN: &str = "breaker_open";
const TIMEOUT: &str = "timeout";
const UNREACHABLE: &str = "unreachable";
const REPLY: &str = "reply";
const ERROR_KINDS: [&str; 4] = [BREAKER_OPEN, TIMEOUT, UNREACHABLE, REPLY];

/// Registers the Redis error counters at zero (alerts `rate()` them from the first scrape).
pub fn register_metrics() {
    for kind in ERROR_KINDS {
        metrics::counter!(ERRORS, "kind" => kind).increment(0);
    }
}

impl Connection {
    async fn run<T>(
        &self,
        call: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, RedisError> {
        let permit = match self.breaker.admit() {
            Ok(p) => p,
            Err(open) => {
                metrics::counter!(ERRORS, "kind" => BREAKER_OPEN).increment(1);
                return Err(refused(open));
            }
        };
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(self.deadline, call).await;
        metrics::histogram!(SECONDS).record(started.elapsed().as_secs_f64());
        match outcome {
            Ok(Ok(v)) => {
                permit.success();
                Ok(v)
            }
            Ok(Err(e)) => {
                let unavailable = is_unavailable(&e);
                metrics::counter!(ERRORS, "kind" => if unavailable { UNREACHABLE } else { REPLY })
                    .increment(1);
                permit.record(unavailable.then_some(FailureKind::Unreachable));
                Err(e)
            }
            Err(_) => {
                metrics::counter!(ERRORS, "kind" => TIMEOUT).increment(1);
                permit.failure(FailureKind::Timeout);
                Err(timed_out(self.deadline))
            }
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            match self.inner.clone() {
                Inner::Single(mut c) => self.run(c.req_packed_command(cmd)).await,
                Inner::Cluster(mut c) => self.run(c.req_packed_command(cmd)).await,
                Inner::Pinned(mut c) => self.run(c.req_packed_command(cmd)).await,
                Inner::Sentinel(m) => {
                    let call = async {
                        let mut c = m.get().await?;
                        c.req_packed_command(cmd).await
                    };
                    self.run(call).await.inspect_err(|e| m.failed(e))
                }
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            match self.inner.clone() {
                Inner::Single(mut c) => {
                    self.run(c.req_packed_commands(pipeline, offset, count))
                        .await
                }
                Inner::Cluster(mut c) => {
                    self.run(c.req_packed_commands(pipeline, offset, count))
                        .await
                }
                Inner::Pinned(mut c) => {
                    self.run(c.req_packed_commands(pipeline, offset, count))
                        .await
                }
                Inner::Sentinel(m) => {
                    let call = async {
                        let mut c = m.get().await?;
                        c.req_packed_commands(pipeline, offset, count).await
                    };
                    self.run(call).await.inspect_err(|e| m.failed(e))
                }
            }
        })
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Single(c) => c.get_db(),
            Inner::Cluster(c) => c.get_db(),
            Inner::Pinned(c) => c.get_db(),
            Inner::Sentinel(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_and_deadline_errors_read_as_unavailable() {
        let open = refused(stampede_resilience::BreakerOpen {
            dependency: Dependency::Redis,
        });
        assert!(is_unavailable(&open));
        assert!(is_unavailable(&timed_out(Duration::from_millis(5))));
        let script_error = RedisError::from((redis::ErrorKind::Client, "bad reply"));
        assert!(!is_unavailable(&script_error));
    }
}
