//! `Application`: builds every component from `Settings`, binds the listener before returning
//! (so tests on port 0 know their address), and runs the API and the background jobs under
//! one cancellation token. Shutdown stops accepting, lets in-flight requests and job steps
//! finish, and gives up after `server.shutdown_grace_secs`.

use crate::background::Background;
use crate::claim_path::ClaimPath;
use crate::config::Settings;
use crate::jobs::{self, JobInputs};
use crate::services::Services;
use crate::storage::Stores;
use crate::use_cases::UseCases;
use crate::{http, notifiers};
use anyhow::Context;
use stampede_core::catalog::Catalog;
use stampede_core::clock::{Clock, SystemClock};
use stampede_workers::Runner;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub struct Application {
    catalog: Arc<Catalog>,
    discovery: Arc<stampede_core::discovery::Discovery>,
    background: Vec<Background>,
    listener: TcpListener,
    router: axum::Router,
    runner: Runner,
    settings: Settings,
    stores: Stores,
    stop_jobs: CancellationToken,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Like `build`, with a clock of the caller's (tests drive time with `ManualClock`).
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Application> {
        let services = Services::build(&settings, clock).await?;
        let claim_path = ClaimPath::build(&settings, &services).await?;
        services
            .backoffice
            .set_observer(claim_path.observer.clone());
        let delivery = notifiers::reminder_delivery(&settings)?;
        let use_cases = UseCases::build(&settings, &services, &claim_path, delivery.channels);
        let flow = crate::flow::build(&settings, &services.stores).await?;
        let router = http::router(
            &settings,
            &services,
            &claim_path,
            &use_cases,
            flow.control.clone(),
        );
        // Follows the shutdown token given to `run_until_stopped`.
        let stop_jobs = CancellationToken::new();
        let runner = jobs::runner(JobInputs {
            settings: &settings,
            services: &services,
            claim_path: &claim_path,
            use_cases: &use_cases,
            reminder_notifiers: delivery.notifiers,
            flow_limiter: flow.memory.clone(),
            stop: stop_jobs.clone(),
        })
        .await?;
        let listener = TcpListener::bind(&settings.server.listen)
            .await
            .with_context(|| format!("binding {}", settings.server.listen))?;
        let mut background = claim_path.background;
        background.push(crate::flow::rule_poller(&settings, &flow));
        if let Some(lease) = services.worker_lease {
            background.push(lease.renewal());
        }
        Ok(Application {
            catalog: claim_path.catalog,
            discovery: claim_path.discovery,
            background,
            listener,
            router,
            runner,
            settings,
            stores: services.stores,
            stop_jobs,
        })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The job runner, so tests can drain background work deterministically.
    pub fn runner(&self) -> Runner {
        self.runner.clone()
    }

    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// The template read path (tests check its database query count).
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.clone()
    }

    /// Discovery's listings (tests count their store queries).
    pub fn discovery(&self) -> Arc<stampede_core::discovery::Discovery> {
        self.discovery.clone()
    }

    /// Serves until `shutdown` is cancelled, then drains with the configured deadline.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tracker = TaskTracker::new();
        let (stop_jobs, on_shutdown) = (self.stop_jobs.clone(), shutdown.clone());
        tracker.spawn(async move {
            on_shutdown.cancelled().await;
            stop_jobs.cancel();
        });
        if self.settings.workers.enabled {
            self.runner.start(&shutdown, &tracker);
        }
        for task in self.background {
            tracker.spawn(task(shutdown.clone()));
        }
        tracker.close();
        let grace = self.settings.server.shutdown_grace;
        let token = shutdown.clone();
        // Peer addresses reach handlers (login throttling per client IP).
        let service = self
            .router
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        let server = axum::serve(self.listener, service)
            .with_graceful_shutdown(async move { token.cancelled().await });
        let mut server = std::pin::pin!(server.into_future());
        tokio::select! {
            r = &mut server => r.context("HTTP server failed")?,
            () = shutdown.cancelled() => {
                tracing::info!(grace_secs = grace.as_secs(), "shutting down: draining requests and jobs");
                match tokio::time::timeout(grace, &mut server).await {
                    Ok(r) => r.context("HTTP server failed")?,
                    Err(_) => tracing::warn!("in-flight requests did not finish before the deadline"),
                }
            }
        }
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!("background jobs did not stop before the deadline");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Backend, Secret};

    fn mysql_settings(url: String) -> Settings {
        let mut s = Settings::default();
        s.storage.backend = Backend::Mysql;
        s.storage.mysql.databases = vec![url];
        s.auth.jwt_secret = Some(Secret::new("x".repeat(32)));
        s.server.listen = "127.0.0.1:0".into();
        s
    }

    /// An unreachable MySQL names the driver's cause, not only "storage failed". (A host
    /// that does not resolve fails at once; a closed port is retried by the driver's pool
    /// for its 30 s acquire timeout, see the CLI test.)
    #[tokio::test]
    async fn an_unreachable_database_reports_the_drivers_cause() {
        let url = "mysql://root@stampede-unreachable.invalid:3306/stampede_t".to_owned();
        let Err(e) = Application::build(mysql_settings(url)).await else {
            panic!("built against a host that does not exist");
        };
        let text = format!("{e:#}");
        assert!(
            text.starts_with("opening MySQL: storage failed: "),
            "{text}"
        );
        assert!(
            e.chain().any(|c| c.downcast_ref::<sqlx::Error>().is_some()),
            "the chain reaches the driver's error: {text}"
        );
        assert!(text.contains("failed to lookup address"), "{text}");
    }
}
