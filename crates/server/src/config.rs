//! Configuration in layers: built-in defaults → optional TOML file (`--config`) →
//! `STAMPEDE_<SECTION>__<KEY>` environment variables → command-line flags. One struct per
//! concern, each default documented. With nothing configured, Stampede runs embedded
//! (SQLite in `./stampede-data/`, listening on 127.0.0.1:8080).

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A secret: never printed by `Debug`.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub auth: AuthSettings,
    pub ids: IdSettings,
    pub http: HttpSettings,
    pub log: LogSettings,
    pub workers: WorkerSettings,
    pub engine: EngineSettings,
    pub redis: RedisSettings,
    pub distribution: DistributionSettings,
    pub settlement: SettlementSettings,
    pub reminder: ReminderSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to listen on. Default `127.0.0.1:8080`; port 0 picks a free port.
    pub listen: String,
    /// Where the embedded mode keeps its SQLite file and generated JWT secret.
    pub data_dir: PathBuf,
    /// How long SIGTERM waits for in-flight requests and jobs before exiting.
    pub shutdown_grace_secs: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./stampede-data"),
            shutdown_grace_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Embedded: one SQLite file in `server.data_dir`.
    Sqlite,
    /// Distributed: MySQL/MariaDB, N databases × M tables.
    Mysql,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    pub backend: Backend,
    /// Read connections of the SQLite pool (writes go through one connection).
    pub sqlite_read_connections: u32,
    /// fsync every SQLite commit (survives power loss). `false` keeps every acknowledged
    /// write safe from a killed process (WAL, `synchronous=NORMAL`) but not from power loss.
    pub sqlite_fsync: bool,
    pub mysql: MysqlSettings,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            backend: Backend::Sqlite,
            sqlite_read_connections: 4,
            sqlite_fsync: true,
            mysql: MysqlSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MysqlSettings {
    /// One URL per database (N); the first also holds the unsharded tables.
    pub databases: Vec<String>,
    /// Tables per database (M) for each sharded table.
    pub tables_per_database: u32,
    pub max_connections_per_database: u32,
}

impl Default for MysqlSettings {
    fn default() -> Self {
        Self {
            databases: Vec::new(),
            tables_per_database: 1,
            max_connections_per_database: 16,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// HS256 secret (≥ 32 bytes). Embedded mode generates one in the data dir when unset;
    /// distributed mode requires it so every node verifies every token.
    pub jwt_secret: Option<Secret>,
    pub access_ttl_secs: i64,
    pub refresh_ttl_secs: i64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            access_ttl_secs: 15 * 60,
            refresh_ttl_secs: 30 * 24 * 3600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdSettings {
    /// Snowflake worker id, 0–1023; every live node needs its own.
    pub worker_id: u16,
    /// A clock step back up to this is waited out; further back, ids are refused.
    pub max_clock_backwards_ms: u64,
}

impl Default for IdSettings {
    fn default() -> Self {
        Self {
            worker_id: 0,
            max_clock_backwards_ms: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Largest JSON request body. Default 64 KiB (a template is well under 8 KiB).
    pub max_body_bytes: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `stampede=debug,sqlx=warn`. `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Run background jobs in this process.
    pub enabled: bool,
    pub end_sweep_interval_ms: u64,
    /// Idempotency keys are kept at least this long (contract: ≥ 24 h).
    pub idempotency_retention_hours: u64,
    pub purge_interval_secs: u64,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            end_sweep_interval_ms: 1_000,
            idempotency_retention_hours: 48,
            purge_interval_secs: 3_600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// Most claims one group commit puts in a transaction (embedded mode).
    pub group_commit_max_batch: usize,
    /// Templates in the local read cache.
    pub cache_capacity: u64,
    /// TTL of a cached template (plus up to 25 % jitter).
    pub cache_ttl_secs: u64,
    /// TTL of "no such template" answers.
    pub negative_cache_ttl_ms: u64,
    /// Template ids the bloom filter is sized for (0.1 % false positives at that size).
    pub bloom_expected_items: usize,
    /// Claims one user may make per second on this node (0 = no limit); 429 beyond.
    pub claim_rate_per_user: u32,
    /// Claims one user may make in a burst before the rate applies.
    pub claim_burst_per_user: u32,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            group_commit_max_batch: 4_096,
            cache_capacity: 100_000,
            cache_ttl_secs: 60,
            negative_cache_ttl_ms: 5_000,
            bloom_expected_items: 1_000_000,
            claim_rate_per_user: 10,
            claim_burst_per_user: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// Distributed mode's hot store (stock, per-user counts, claim logs, invalidations).
    pub url: String,
    /// Prefix of every key and channel, so several deployments (or tests) share a server.
    pub prefix: String,
    /// Claim-log entries a persister writes to MySQL per transaction.
    pub persister_batch: usize,
    pub persister_interval_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "stampede".into(),
            persister_batch: 2_000,
            persister_interval_ms: 20,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistributionSettings {
    /// Largest accepted upload (bytes); 413 beyond, checked while the upload streams.
    pub max_upload_bytes: u64,
    /// Most data rows one file may hold.
    pub max_rows: u64,
    /// Rows per batch (one reservation, one commit, one checkpoint each).
    pub batch_size: u32,
    /// How long a runner's lease on a task lasts without a batch renewing it; a node that
    /// dies mid-task is replaced after this.
    pub lease_secs: u64,
    /// How often each node looks for due tasks: a scheduled task starts within this of
    /// its `send_at`.
    pub poll_interval_ms: u64,
    /// HMAC-SHA256 key of the completion callbacks (`X-Stampede-Signature`). Unset: derived
    /// from `auth.jwt_secret` (or the generated embedded secret), with a warning at start.
    pub notify_secret: Option<Secret>,
    pub notify_max_attempts: u32,
    /// First retry delay of a failed callback; doubles per attempt up to the maximum.
    pub notify_backoff_ms: u64,
    pub notify_max_backoff_secs: u64,
    pub notify_timeout_secs: u64,
}

impl DistributionSettings {
    /// What an uploaded file may hold (checked at upload, again by the runner).
    pub fn sheet_limits(&self) -> stampede_sheet::Limits {
        stampede_sheet::Limits {
            max_rows: self.max_rows,
            ..stampede_sheet::Limits::default()
        }
    }
}

impl Default for DistributionSettings {
    fn default() -> Self {
        Self {
            max_upload_bytes: 256 * 1024 * 1024,
            max_rows: 10_000_000,
            batch_size: 5_000,
            lease_secs: 30,
            poll_interval_ms: 250,
            notify_secret: None,
            notify_max_attempts: 8,
            notify_backoff_ms: 1_000,
            notify_max_backoff_secs: 300,
            notify_timeout_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SettlementSettings {
    /// How long a lock holds coupons for an order before the sweep releases them.
    pub lock_ttl_secs: u64,
    /// How often each node sweeps expired locks (a lock is released within this of expiry).
    pub expiry_interval_ms: u64,
    /// Users whose coupons a node keeps for quotes.
    pub quote_cache_users: u64,
    /// How long a cached user's coupons serve quotes: this node's own changes invalidate at
    /// once; other nodes' changes (distributed mode) show within this. Unset: 1 s
    /// distributed, 5 min embedded (one process makes every change, so only memory bounds it).
    pub quote_cache_ttl_ms: Option<u64>,
}

/// Reminders before a sale starts (SPEC §4 "Reminder"): how they are delivered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReminderSettings {
    /// How often each node looks for due reminders: one is delivered within this (plus
    /// the delivery itself) of its `remind_at`.
    pub poll_interval_ms: u64,
    /// Rows read and recorded per delivery step.
    pub batch_size: u32,
    /// How long a node's lease on a partition lasts without a step renewing it; a node that
    /// dies mid-delivery is replaced after this.
    pub lease_secs: u64,
    /// `webhook` channel: where reminders are POSTed (JSON, signed like completion
    /// callbacks). Unset: the channel is off and `PUT` refuses it.
    pub webhook_url: Option<String>,
    /// HMAC-SHA256 key of the webhook (`X-Stampede-Signature`). Unset: derived from
    /// `auth.jwt_secret` (or the generated embedded secret).
    pub webhook_secret: Option<Secret>,
    /// Reminders per webhook POST.
    pub webhook_batch: u32,
    /// Webhook POSTs in flight at once.
    pub webhook_concurrency: u32,
    /// Attempts per POST before the reminders are left for a later step (with backoff).
    pub webhook_attempts: u32,
    pub webhook_timeout_ms: u64,
    /// `email` channel: the SMTP relay, `smtp://host:port` (plain, for a local relay) or
    /// `smtps://host:port` / `smtp://host:port?tls=required` with credentials in the URL.
    /// Unset: the channel is off and `PUT` refuses it.
    pub smtp_url: Option<Secret>,
    pub email_from: String,
    /// The recipient; `{user_id}` is replaced. Stampede knows users by id only, so the
    /// relay (or its alias table) maps this address to the user's mailbox.
    pub email_to: String,
    /// Emails being sent at once.
    pub email_concurrency: u32,
    /// Reminder rows are deleted this long after their sale started (everything in them is
    /// delivered, given up or cancelled by then).
    pub retention_hours: u64,
}

impl Default for ReminderSettings {
    fn default() -> Self {
        Self {
            poll_interval_ms: 200,
            batch_size: 5_000,
            lease_secs: 30,
            webhook_url: None,
            webhook_secret: None,
            webhook_batch: 500,
            webhook_concurrency: 4,
            webhook_attempts: 3,
            webhook_timeout_ms: 10_000,
            smtp_url: None,
            email_from: "Stampede <reminders@stampede.invalid>".into(),
            email_to: "{user_id}@users.stampede.invalid".into(),
            email_concurrency: 8,
            retention_hours: 24,
        }
    }
}

impl Default for SettlementSettings {
    fn default() -> Self {
        Self {
            lock_ttl_secs: 15 * 60,
            expiry_interval_ms: 1_000,
            quote_cache_users: 100_000,
            quote_cache_ttl_ms: None,
        }
    }
}

/// Flags that override every other layer.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
}

/// Settings plus the warnings found while loading them (printed once logging is up).
pub struct Loaded {
    pub settings: Settings,
    pub warnings: Vec<String>,
}

const ENV_PREFIX: &str = "STAMPEDE_";

fn leaf_paths(prefix: &str, v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_paths(&p, x, out);
            }
        }
        _ => {
            out.insert(prefix.to_owned());
        }
    }
}

impl Settings {
    /// Every configurable key, as `section.key` (`storage.mysql.databases`).
    pub fn known_keys() -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        leaf_paths(
            "",
            &serde_json::to_value(Settings::default()).unwrap_or_default(),
            &mut out,
        );
        out
    }

    pub fn load(config_file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Loaded> {
        let known = Self::known_keys();
        let mut warnings = Vec::new();
        for (name, _) in std::env::vars() {
            if let Some(rest) = name.strip_prefix(ENV_PREFIX) {
                let key = rest.to_ascii_lowercase().replace("__", ".");
                if !known.contains(&key) {
                    warnings.push(format!("ignoring unknown configuration variable {name}"));
                }
            }
        }
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = config_file {
            if !path.exists() {
                anyhow::bail!("configuration file {} does not exist", path.display());
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        let env = Env::prefixed(ENV_PREFIX)
            .split("__")
            .filter(move |k| known.contains(&k.as_str().to_ascii_lowercase()));
        fig = fig.merge(env);
        if let Some(l) = &overrides.listen {
            fig = fig.merge(("server.listen", l));
        }
        if let Some(d) = &overrides.data_dir {
            fig = fig.merge(("server.data_dir", d));
        }
        let settings: Settings = fig.extract().context("invalid configuration")?;
        settings.check()?;
        Ok(Loaded { settings, warnings })
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.ids.worker_id > stampede_domain::snowflake::MAX_WORKER {
            anyhow::bail!(
                "ids.worker_id must be 0..={}",
                stampede_domain::snowflake::MAX_WORKER
            );
        }
        if self.storage.backend == Backend::Mysql {
            if self.storage.mysql.databases.is_empty() {
                anyhow::bail!("storage.mysql.databases must list at least one database URL");
            }
            if self.storage.mysql.tables_per_database == 0 {
                anyhow::bail!("storage.mysql.tables_per_database must be at least 1");
            }
        }
        if self.auth.access_ttl_secs <= 0 || self.auth.refresh_ttl_secs <= 0 {
            anyhow::bail!("auth token lifetimes must be positive");
        }
        if self.http.max_body_bytes < 1024 {
            anyhow::bail!("http.max_body_bytes must be at least 1024");
        }
        if self.workers.idempotency_retention_hours < 24 {
            anyhow::bail!(
                "workers.idempotency_retention_hours must be at least 24 (the API promises 24 h)"
            );
        }
        let r = &self.reminder;
        if r.poll_interval_ms == 0
            || r.batch_size == 0
            || r.lease_secs == 0
            || r.webhook_batch == 0
            || r.webhook_concurrency == 0
            || r.webhook_attempts == 0
            || r.email_concurrency == 0
        {
            anyhow::bail!(
                "reminder.poll_interval_ms, batch_size, lease_secs, webhook_batch, \
                 webhook_concurrency, webhook_attempts and email_concurrency must be positive"
            );
        }
        if let Some(u) = &r.webhook_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            anyhow::bail!("reminder.webhook_url must be an http:// or https:// URL");
        }
        if self.settlement.lock_ttl_secs == 0 || self.settlement.expiry_interval_ms == 0 {
            anyhow::bail!("settlement.lock_ttl_secs and expiry_interval_ms must be positive");
        }
        let d = &self.distribution;
        if !(1..=50_000).contains(&d.batch_size) {
            anyhow::bail!("distribution.batch_size must be 1..=50000");
        }
        if d.max_upload_bytes < 1024 || d.max_rows == 0 {
            anyhow::bail!("distribution.max_upload_bytes must be ≥ 1024 and max_rows ≥ 1");
        }
        if d.lease_secs == 0 || d.poll_interval_ms == 0 || d.notify_max_attempts == 0 {
            anyhow::bail!(
                "distribution.lease_secs, poll_interval_ms and notify_max_attempts must be positive"
            );
        }
        Ok(())
    }

    pub fn sqlite_path(&self) -> PathBuf {
        self.server.data_dir.join("stampede.db")
    }

    /// Where distribution files are uploaded to and cached while a task runs.
    pub fn distribution_dir(&self) -> PathBuf {
        self.server.data_dir.join("distributions")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn defaults_are_embedded() {
        let s = Settings::default();
        assert_eq!(s.storage.backend, Backend::Sqlite);
        assert_eq!(s.server.listen, "127.0.0.1:8080");
    }
}
