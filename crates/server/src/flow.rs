//! Flow control's composition: the rate limiter for the mode (embedded: in-process;
//! distributed: Redis GCRA with the in-process limiter as its fallback), the rules in force
//! (`FlowControl`, starting from the saved set if there is one, else `[flow]`), and the task
//! that polls the stored version so an admin's change reaches this node within a second.

use crate::background::Background;
use crate::config::{Backend, Settings};
use crate::storage::Stores;
use anyhow::Context;
use futures::future::BoxFuture;
use stampede_api::flow::FlowControl;
use stampede_core::flow::RateLimiter;
use stampede_hot_memory::MemoryRateLimiter;
use stampede_hot_redis::RedisRateLimiter;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub struct Flow {
    pub control: Arc<FlowControl>,
    /// The in-process buckets (the whole limiter embedded, the fallback distributed).
    pub memory: Arc<MemoryRateLimiter>,
}

pub async fn build(settings: &Settings, stores: &Stores) -> anyhow::Result<Flow> {
    let f = &settings.flow;
    let memory = Arc::new(MemoryRateLimiter::new());
    let limiter: Arc<dyn RateLimiter> = match settings.storage.backend {
        Backend::Sqlite => memory.clone(),
        Backend::Mysql => {
            let r = &settings.redis;
            // A connection of its own: flow checks must not queue behind claim scripts.
            let topology = r.topology()?;
            let conn = stampede_hot_redis::connect_bare(&topology)
                .await
                .with_context(|| format!("connecting to Redis ({topology:?})"))?;
            Arc::new(RedisRateLimiter::new(
                conn,
                &r.prefix,
                f.redis_deadline,
                memory.clone(),
                f.fallback_nodes,
            ))
        }
    };
    let control = Arc::new(FlowControl::new(
        f.rules(&settings.engine),
        limiter,
        stores.flow_rules.clone(),
        f.trust_forwarded_for,
    ));
    // A restart starts from the saved set; an unreachable store leaves the defaults, and
    // the poller picks the saved set up once the store answers.
    if let Err(e) = control.refresh().await {
        tracing::warn!(error = %e, "cannot read the saved flow rules; using [flow] for now");
    }
    Ok(Flow { control, memory })
}

/// Polls the stored rules' version every `flow.poll_interval_ms` and applies a change.
pub fn rule_poller(settings: &Settings, flow: &Flow) -> Background {
    let every = settings.flow.poll_interval;
    let (control, memory) = (flow.control.clone(), flow.memory.clone());
    Box::new(move |token: CancellationToken| -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut failing = false;
            loop {
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
                match control.refresh().await {
                    Ok(changed) => {
                        failing = false;
                        if changed {
                            memory.keep_only(&control.rates());
                        }
                    }
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "cannot poll the flow rules; keeping the rules in force");
                    }
                    Err(_) => {}
                }
            }
        })
    })
}
