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
}

impl Services {
    pub async fn build(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Services> {
        let secret = jwt_secret(settings)?;
        let stores = storage::open(settings).await?;
        let node = NodeId::mint();
        let worker_lease = lease_worker(settings, &node).await?;
        let worker_id = worker_lease
            .as_ref()
            .map_or(settings.ids.worker_id, |l| l.id);
        // Ids follow the machine's clock, not the business clock tests move by hand: a frozen
        // clock would run a millisecond's 4,096 ids dry.
        let ids = Arc::new(
            IdGenerator::new(
                worker_id,
                Arc::new(SystemClock),
                settings.ids.max_clock_backwards,
            )
            .context("starting the id generator")?,
        );
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
            .with_throttle(login_throttle(settings).await?),
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
        })
    }
}

/// Login throttling: failed-attempt counts in Redis in distributed mode (limits hold across
/// nodes), in process otherwise; the argon2 cap is per node.
async fn login_throttle(settings: &Settings) -> anyhow::Result<LoginThrottle> {
    let attempts: Arc<dyn LoginAttempts> = match settings.storage.backend {
        Backend::Mysql => {
            let r = &settings.redis;
            let conn = stampede_hot_redis::connect(&r.url)
                .await
                .with_context(|| format!("connecting to Redis at {}", r.url))?;
            Arc::new(stampede_hot_redis::RedisLoginAttempts::new(conn, &r.prefix))
        }
        Backend::Sqlite => Arc::new(stampede_hot_memory::MemoryLoginAttempts::new()),
    };
    let a = &settings.auth;
    Ok(LoginThrottle::new(
        attempts,
        a.login_policy(false),
        a.login_policy(true),
        a.login_max_in_flight,
        a.login_queue_wait,
    ))
}
