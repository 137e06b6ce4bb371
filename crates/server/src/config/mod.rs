//! Configuration in layers: built-in defaults → optional TOML file (`--config`) →
//! `STAMPEDE_<SECTION>__<KEY>` environment variables → command-line flags (`load`). One
//! struct per concern, one file each, every default documented. Keys carry their unit
//! (`…_ms`, `…_secs`, `…_hours`); fields hold typed durations (`units`). With nothing
//! configured, Stampede runs embedded (SQLite in `./stampede-data/`, on 127.0.0.1:8080).

mod auth;
mod discovery;
mod distribution;
mod engine;
mod events;
mod flow;
mod load;
mod reminder;
mod resilience;
mod server;
mod settlement;
mod storage;
pub mod units;
mod workers;

pub use auth::{AuthSettings, IdSettings, Secret};
pub use discovery::DiscoverySettings;
pub use distribution::DistributionSettings;
pub use engine::{EngineSettings, RedisMode, RedisSettings};
pub use events::EventSettings;
pub use flow::FlowSettings;
pub use load::{Loaded, Overrides};
pub use reminder::ReminderSettings;
pub use resilience::ResilienceSettings;
pub use server::{HttpSettings, LogFormat, LogSettings, ServerSettings, TracingSettings};
pub use settlement::SettlementSettings;
pub use storage::{Backend, MysqlSettings, StorageSettings};
pub use workers::WorkerSettings;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub auth: AuthSettings,
    pub ids: IdSettings,
    pub http: HttpSettings,
    pub log: LogSettings,
    pub tracing: TracingSettings,
    pub workers: WorkerSettings,
    pub engine: EngineSettings,
    pub redis: RedisSettings,
    pub distribution: DistributionSettings,
    pub settlement: SettlementSettings,
    pub reminder: ReminderSettings,
    pub resilience: ResilienceSettings,
    pub flow: FlowSettings,
    pub discovery: DiscoverySettings,
    pub events: EventSettings,
}

/// The claim journal's directory, under the data dir.
pub const CLAIM_JOURNAL_DIR: &str = "claim-journal";

impl Settings {
    /// The embedded mode's SQLite file.
    pub fn sqlite_path(&self) -> PathBuf {
        self.server.data_dir.join("stampede.db")
    }

    /// The embedded claim journal's segment files.
    pub fn claim_journal_dir(&self) -> PathBuf {
        self.server.data_dir.join(CLAIM_JOURNAL_DIR)
    }

    /// Where distribution files are uploaded to and cached while a task runs.
    pub fn distribution_dir(&self) -> PathBuf {
        self.server.data_dir.join("distributions")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn known_keys_cover_nested_sections() {
        let k = Settings::known_keys();
        for key in [
            "server.listen",
            "storage.mysql.databases",
            "auth.jwt_secret",
            "workers.enabled",
        ] {
            assert!(k.contains(key), "{key}");
        }
    }

    #[test]
    fn keys_keep_their_units() {
        let k = Settings::known_keys();
        for key in [
            "server.shutdown_grace_secs",
            "auth.access_ttl_secs",
            "ids.max_clock_backwards_ms",
            "workers.idempotency_retention_hours",
            "engine.negative_cache_ttl_ms",
            "redis.persister_interval_ms",
            "distribution.poll_interval_ms",
            "distribution.notify_max_backoff_secs",
            "settlement.quote_cache_ttl_ms",
            "reminder.webhook_timeout_ms",
            "reminder.retention_hours",
        ] {
            assert!(k.contains(key), "{key}");
        }
    }

    #[test]
    fn durations_load_from_their_unit_keys() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("s.toml");
        std::fs::write(
            &file,
            "[distribution]\npoll_interval_ms = 50\nlease_secs = 3\n\
             [settlement]\nquote_cache_ttl_ms = 7\n[workers]\nidempotency_retention_hours = 30\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let s = Settings::load(Some(&file), &Overrides::default())
            .unwrap_or_else(|e| panic!("{e:#}"))
            .settings;
        assert_eq!(s.distribution.poll_interval, Duration::from_millis(50));
        assert_eq!(s.distribution.lease, Duration::from_secs(3));
        assert_eq!(
            s.settlement.quote_cache_ttl(Backend::Mysql),
            Duration::from_millis(7)
        );
        assert_eq!(
            s.workers.idempotency_retention,
            jiff::SignedDuration::from_hours(30)
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn defaults_are_embedded() {
        let s = Settings::default();
        assert_eq!(s.storage.backend, Backend::Sqlite);
        assert_eq!(s.server.listen, "127.0.0.1:8080");
        assert_eq!(
            s.settlement.quote_cache_ttl(Backend::Sqlite),
            Duration::from_secs(300)
        );
        assert_eq!(
            s.settlement.quote_cache_ttl(Backend::Mysql),
            Duration::from_secs(10)
        );
    }
}
