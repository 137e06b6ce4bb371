//! The services every entry point (server, CLI) builds from settings: the stores, this
//! node's identity and ids, authentication and the back-office.

use crate::config::{Backend, Settings};
use crate::node::{NodeId, WorkerLease, lease_worker};
use crate::secrets::jwt_secret;
use crate::storage::{self, Stores};
use anyhow::Context;
use stampede_core::auth::{AuthService, TokenService};
use stampede_core::backoffice::BackOffice;
use stampede_core::clock::{Clock, SystemClock};
use stampede_core::ids::IdGenerator;
use stampede_core::login::{LoginAttempts, LoginThrottle};
use stampede_core::ports::Dependency;
use stampede_resilience::Breakers;
use std::sync::Arc;

pub struct Services {
    pub stores: Stores,
    pub clock: Arc<dyn Clock>,
    /// This process among the nodes: minted here, once, and handed to every lease owner.
    pub node: NodeId,
    pub ids: Arc<IdGenerator>,
    pub tokens: Arc<TokenService>,
    pub auth: Arc<AuthService>,
    pub backoffice: Arc<BackOffice>,
    /// Distributed mode: the worker-id lease this node must keep renewing.
    pub worker_lease: Option<WorkerLease>,
    /// One circuit breaker per dependency, shared by every adapter of it on this node.
    pub breakers: Breakers,
    /// Distributed mode: this node's Redis connection (under the Redis breaker).
    pub redis: Option<stampede_hot_redis::Connection>,
}

impl Services {
    pub async fn build(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Services> {
        let secret = jwt_secret(settings)?;
        let breakers = Breakers::new(settings.resilience.breaker());
        let stores = storage::open_with(settings, &breakers).await?;
        let node = NodeId::mint();
        let redis = match settings.storage.backend {
            Backend::Mysql => {
                let topology = settings.redis.topology()?;
                let conn = stampede_hot_redis::connect_topology(
                    &topology,
                    &redis_resilience(settings, &breakers),
                )
                .await
                .with_context(|| format!("connecting to Redis ({topology:?})"))?;
                Some(conn)
            }
            Backend::Sqlite => None,
        };
        let mut worker_lease = lease_worker(settings, &node, redis.as_ref()).await?;
        let worker_id = worker_lease
            .as_ref()
            .map_or(settings.ids.worker_id, |l| l.id);
        // Ids follow the machine's clock, not the business clock tests move by hand: a frozen
        // clock would run a millisecond's 4,096 ids dry.
        let mut ids = IdGenerator::new(
            worker_id,
            Arc::new(SystemClock),
            settings.ids.max_clock_backwards,
        )
        .context("starting the id generator")?;
        if let Some(lease) = &worker_lease {
            ids = ids.with_gate(lease.gate.clone());
        }
        let ids = Arc::new(ids);
        if let Some(lease) = &mut worker_lease {
            lease.attach(ids.clone());
        }
        let tokens = Arc::new(TokenService::new(&secret, clock.clone()));
        let auth = Arc::new(
            AuthService::new(
                stores.accounts.clone(),
                tokens.clone(),
                ids.clone(),
                clock.clone(),
                settings.auth.access_ttl,
                settings.auth.refresh_ttl,
            )
            .context("starting the auth service")?
            .with_throttle(login_throttle(settings, redis.as_ref())),
        );
        let backoffice = Arc::new(BackOffice::new(
            stores.templates.clone(),
            ids.clone(),
            clock.clone(),
        ));
        Ok(Services {
            stores,
            clock,
            node,
            ids,
            tokens,
            auth,
            backoffice,
            worker_lease,
            breakers,
            redis,
        })
    }
}

/// How this node's Redis connections fail fast: `[resilience]` deadlines and its Redis
/// breaker.
pub fn redis_resilience(
    settings: &Settings,
    breakers: &Breakers,
) -> stampede_hot_redis::RedisResilience {
    let r = &settings.resilience;
    stampede_hot_redis::RedisResilience {
        connect_timeout: r.redis_connect,
        command_deadline: r.redis_command,
        breaker: breakers.get(Dependency::Redis).clone(),
    }
}

/// Login throttling: failed-attempt counts in Redis in distributed mode (limits hold across
/// nodes), in process otherwise; the argon2 cap is per node.
fn login_throttle(
    settings: &Settings,
    redis: Option<&stampede_hot_redis::Connection>,
) -> LoginThrottle {
    let attempts: Arc<dyn LoginAttempts> = match redis {
        Some(conn) => Arc::new(stampede_hot_redis::RedisLoginAttempts::new(
            conn.clone(),
            &settings.redis.prefix,
        )),
        None => Arc::new(stampede_hot_memory::MemoryLoginAttempts::new()),
    };
    let a = &settings.auth;
    LoginThrottle::new(
        attempts,
        a.login_policy(false),
        a.login_policy(true),
        a.login_max_in_flight,
        a.login_queue_wait,
    )
}
