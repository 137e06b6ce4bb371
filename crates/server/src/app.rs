//! `Application`: builds every component from `Settings`, binds the listener before returning
//! (so tests on port 0 know their address), and runs the API and the background jobs under
//! one cancellation token. Shutdown stops accepting, lets in-flight requests and job steps
//! finish, and gives up after `server.shutdown_grace_secs`.

use crate::config::{Backend, Settings};
use crate::storage::{self, DatabaseCheck, Stores};
use anyhow::Context;
use stampede_api::{AppState, HealthCheck, HttpLimits};
use stampede_core::auth::{AuthService, TokenService, random_token};
use stampede_core::backoffice::BackOffice;
use stampede_core::clock::{Clock, SystemClock};
use stampede_core::distributions::Distributions;
use stampede_core::ids::IdGenerator;
use stampede_core::reminder_ports::ReminderNotifier;
use stampede_core::reminders::Reminders;
use stampede_core::settlements::Settlements;
use stampede_domain::reminder::Channel;
use stampede_workers::{
    DistributionRunner, EmailConfig, EmailNotifier, EndTemplates, NotifyConfig,
    NotifyDistributions, PurgeIdempotencyKeys, PurgeReminders, ReleaseExpiredLocks,
    ReminderScheduler, Runner, RunnerConfig, SchedulerConfig, WebhookConfig, WebhookNotifier,
};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub struct Application {
    catalog: Arc<stampede_core::catalog::Catalog>,
    background: Vec<crate::engine::Background>,
    listener: TcpListener,
    router: axum::Router,
    runner: Runner,
    settings: Settings,
    stores: Stores,
    stop_jobs: CancellationToken,
}

/// The JWT secret: configured, or (embedded mode only) generated once into the data dir so
/// that `stampede token` and the server agree without any setup.
pub fn jwt_secret(settings: &Settings) -> anyhow::Result<Vec<u8>> {
    if let Some(s) = &settings.auth.jwt_secret {
        if s.expose().len() < 32 {
            anyhow::bail!("auth.jwt_secret must be at least 32 bytes");
        }
        return Ok(s.expose().as_bytes().to_vec());
    }
    if settings.storage.backend == Backend::Mysql {
        anyhow::bail!(
            "distributed mode needs auth.jwt_secret (STAMPEDE_AUTH__JWT_SECRET) shared by every node"
        );
    }
    let path = settings.server.data_dir.join("jwt-secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => Ok(s.trim().as_bytes().to_vec()),
        Ok(_) => anyhow::bail!(
            "{} is too short; delete it to generate a new one",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_secret(&path),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let secret = random_token(48);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(mut f) => {
            f.write_all(secret.as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(secret.into_bytes())
        }
        // Another process (a concurrent `stampede token`) created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let theirs = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok(theirs.trim().as_bytes().to_vec())
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// An outgoing-webhook signing key (completion callbacks, reminders): configured, or derived
/// from the JWT secret under `label` (so a deployment has one without setup; configure it to
/// hand receivers a key of their own).
fn signing_secret(
    settings: &Settings,
    configured: Option<&crate::config::Secret>,
    label: &[u8],
) -> anyhow::Result<String> {
    use sha2::Digest;
    if let Some(s) = configured {
        return Ok(s.expose().to_owned());
    }
    let jwt = jwt_secret(settings)?;
    let mut h = sha2::Sha256::new();
    h.update(label);
    h.update(&jwt);
    Ok(hex::encode(h.finalize()))
}

type Notifiers = Vec<Arc<dyn ReminderNotifier>>;

/// The reminder notifiers the configuration asks for, and so the channels delivered.
fn reminder_notifiers(settings: &Settings) -> anyhow::Result<(Notifiers, Vec<Channel>)> {
    let r = &settings.reminder;
    let mut notifiers: Notifiers = Vec::new();
    if let Some(url) = &r.webhook_url {
        notifiers.push(Arc::new(
            WebhookNotifier::new(WebhookConfig {
                url: url.clone(),
                secret: signing_secret(settings, r.webhook_secret.as_ref(), b"stampede-reminder:")?,
                batch: r.webhook_batch as usize,
                concurrency: r.webhook_concurrency as usize,
                attempts: r.webhook_attempts,
                timeout: Duration::from_millis(r.webhook_timeout_ms),
            })
            .context("building the reminder webhook client")?,
        ));
    }
    if let Some(url) = &r.smtp_url {
        notifiers.push(Arc::new(
            EmailNotifier::new(&EmailConfig {
                url: url.expose().to_owned(),
                from: r.email_from.clone(),
                to: r.email_to.clone(),
                concurrency: r.email_concurrency as usize,
            })
            .context("building the reminder SMTP client")?,
        ));
    }
    let mut channels = vec![Channel::App];
    channels.extend(notifiers.iter().map(|n| n.channel()));
    Ok((notifiers, channels))
}

/// The services every entry point (server, CLI) builds from settings.
pub struct Services {
    pub stores: Stores,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<IdGenerator>,
    pub tokens: Arc<TokenService>,
    pub auth: Arc<AuthService>,
    pub backoffice: Arc<BackOffice>,
    /// Distributed mode: the worker-id lease this node must keep renewing.
    pub worker_lease: Option<crate::engine::WorkerLease>,
}

impl Services {
    pub async fn build(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Services> {
        let secret = jwt_secret(settings)?;
        let stores = storage::open(settings).await?;
        // Ids follow the machine's clock, not the business clock tests move by hand: a frozen
        // clock would run a millisecond's 4,096 ids dry.
        let worker_lease = crate::engine::lease_worker(settings).await?;
        let worker_id = worker_lease
            .as_ref()
            .map_or(settings.ids.worker_id, |l| l.id);
        let ids = Arc::new(
            IdGenerator::new(
                worker_id,
                Arc::new(SystemClock),
                Duration::from_millis(settings.ids.max_clock_backwards_ms),
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
                jiff::SignedDuration::from_secs(settings.auth.access_ttl_secs),
                jiff::SignedDuration::from_secs(settings.auth.refresh_ttl_secs),
            )
            .context("starting the auth service")?,
        );
        let backoffice = Arc::new(BackOffice::new(
            stores.templates.clone(),
            ids.clone(),
            clock.clone(),
        ));
        Ok(Services {
            stores,
            clock,
            ids,
            tokens,
            auth,
            backoffice,
            worker_lease,
        })
    }
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
        let services = Services::build(&settings, clock.clone()).await?;
        let limiter = stampede_api::flow::ClaimLimiter::new(
            settings.engine.claim_rate_per_user,
            settings.engine.claim_burst_per_user,
        );
        let mut engine = crate::engine::build(&settings, &services).await?;
        if let Some(lease) = services.worker_lease.clone() {
            engine.background.push(lease.renewal());
        }
        services.backoffice.set_observer(engine.observer.clone());
        // Embedded mode has one process per data dir, so a restart may keep its leases;
        // distributed nodes get a fresh name per process.
        let node = match settings.storage.backend {
            Backend::Sqlite => "embedded".to_owned(),
            Backend::Mysql => format!("node-{:016x}", rand::random::<u64>()),
        };
        let d = &settings.distribution;
        let distributions = Arc::new(Distributions::new(
            services.stores.distributions.clone(),
            services.stores.templates.clone(),
            services.ids.clone(),
            clock.clone(),
            d.batch_size,
            node.clone(),
        ));
        let work_dir = settings.server.data_dir.join("distributions");
        let limits = stampede_sheet::Limits {
            max_rows: d.max_rows,
            ..stampede_sheet::Limits::default()
        };
        let uploads = stampede_api::routes::distributions::UploadConfig {
            upload_dir: work_dir.join("uploads"),
            work_dir: work_dir.clone(),
            max_bytes: d.max_upload_bytes,
            limits: limits.clone(),
        };
        let settlements = Arc::new(Settlements::new(
            services.stores.settlements.clone(),
            services.stores.coupons.clone(),
            engine.catalog.clone(),
            engine.hot.clone(),
            clock.clone(),
            jiff::SignedDuration::from_secs(
                i64::try_from(settings.settlement.lock_ttl_secs).unwrap_or(i64::MAX / 2),
            ),
            engine.quote_cache.clone(),
        ));
        let (notifiers, channels) = reminder_notifiers(&settings)?;
        let reminders = Arc::new(Reminders::new(
            services.stores.reminders.clone(),
            engine.catalog.clone(),
            clock.clone(),
            channels,
        ));
        let checks: Vec<Arc<dyn HealthCheck>> =
            vec![Arc::new(DatabaseCheck(services.stores.templates.clone()))];
        let state = AppState {
            backoffice: services.backoffice.clone(),
            auth: services.auth.clone(),
            claims: engine.claims.clone(),
            distributions,
            settlements: settlements.clone(),
            reminders,
            uploads,
            claim_limiter: limiter.clone(),
            checks: Arc::new(checks),
            metrics: crate::telemetry::metrics_renderer(&engine),
        };
        let router = stampede_api::router(
            state,
            &HttpLimits {
                max_body_bytes: settings.http.max_body_bytes,
            },
        );

        // Long job steps (a distribution task) watch this; it follows the shutdown token
        // given to `run_until_stopped`.
        let shutdown_token = CancellationToken::new();
        let mut runner = Runner::new();
        let w = &settings.workers;
        runner.register(Arc::new(EndTemplates {
            backoffice: services.backoffice.clone(),
            interval: Duration::from_millis(w.end_sweep_interval_ms),
            batch: 500,
        }));
        runner.register(Arc::new(PurgeIdempotencyKeys {
            backoffice: services.backoffice.clone(),
            interval: Duration::from_secs(w.purge_interval_secs),
            retention: jiff::SignedDuration::from_hours(
                i64::try_from(w.idempotency_retention_hours).unwrap_or(i64::MAX / 3600),
            ),
        }));

        runner.register(Arc::new(ReleaseExpiredLocks {
            settlements,
            interval: Duration::from_millis(settings.settlement.expiry_interval_ms),
            batch: 200,
        }));
        let r = &settings.reminder;
        runner.register(Arc::new(ReminderScheduler {
            store: services.stores.reminders.clone(),
            templates: services.stores.templates.clone(),
            clock: clock.clone(),
            notifiers,
            config: SchedulerConfig {
                // Unique per process, also embedded: the lease token fences owners, so a
                // second process (or a restart) must never pass for the first.
                owner: format!("{node}-{:08x}", rand::random::<u32>()),
                batch: r.batch_size,
                lease: Duration::from_secs(r.lease_secs),
                interval: Duration::from_millis(r.poll_interval_ms),
                parallel: 2,
            },
        }));
        runner.register(Arc::new(PurgeReminders {
            store: services.stores.reminders.clone(),
            clock: clock.clone(),
            retention: jiff::SignedDuration::from_hours(
                i64::try_from(r.retention_hours).unwrap_or(i64::MAX / 3600),
            ),
            interval: Duration::from_secs(w.purge_interval_secs),
        }));
        stampede_workers::distribution::clean_work_dir(&work_dir).await;
        runner.register(Arc::new(DistributionRunner {
            quote_cache: engine.quote_cache.clone(),
            store: services.stores.distributions.clone(),
            templates: services.stores.templates.clone(),
            hot: engine.hot.clone(),
            ids: services.ids.clone(),
            clock: clock.clone(),
            config: RunnerConfig {
                owner: node,
                work_dir,
                lease: Duration::from_secs(d.lease_secs),
                interval: Duration::from_millis(d.poll_interval_ms),
                limits,
            },
            shutdown: shutdown_token.clone(),
        }));
        runner.register(Arc::new(
            NotifyDistributions::new(
                services.stores.distributions.clone(),
                clock.clone(),
                NotifyConfig {
                    secret: signing_secret(
                        &settings,
                        settings.distribution.notify_secret.as_ref(),
                        b"stampede-notify:",
                    )?,
                    max_attempts: d.notify_max_attempts,
                    base_backoff: Duration::from_millis(d.notify_backoff_ms),
                    max_backoff: Duration::from_secs(d.notify_max_backoff_secs),
                    timeout: Duration::from_secs(d.notify_timeout_secs),
                    interval: Duration::from_millis(d.poll_interval_ms.max(100)),
                },
            )
            .context("building the callback HTTP client")?,
        ));

        let listener = TcpListener::bind(&settings.server.listen)
            .await
            .with_context(|| format!("binding {}", settings.server.listen))?;
        runner.register(Arc::new(crate::engine::ShrinkLimiter(limiter)));
        for job in engine.jobs {
            runner.register(job);
        }
        Ok(Application {
            catalog: engine.catalog.clone(),
            background: engine.background,
            listener,
            router,
            runner,
            settings,
            stores: services.stores,
            stop_jobs: shutdown_token,
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
    pub fn catalog(&self) -> Arc<stampede_core::catalog::Catalog> {
        self.catalog.clone()
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
        let grace = Duration::from_secs(self.settings.server.shutdown_grace_secs);
        let token = shutdown.clone();
        let server = axum::serve(self.listener, self.router)
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
