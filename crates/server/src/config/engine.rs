//! Settings of the claim engine: the template read cache, the bloom filter, per-user claim
//! rates, the embedded group commit, and distributed mode's Redis.

use super::units;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The shared Redis template cache keeps entries this many times the local TTL. A change
/// evicts the shared entry before nodes are told to reload, so it can outlive the local
/// entries: the fleet then reads a template from MySQL about once per shared TTL.
const SHARED_CACHE_TTL_FACTOR: u32 = 5;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// Most claims one group commit puts in a transaction (embedded mode), or one write of
    /// the claim journal.
    pub group_commit_max_batch: usize,
    /// Embedded mode acknowledges a claim once it is in the claim journal (an fsync'd
    /// append-only file in `server.data_dir/claim-journal`) and applies it to SQLite behind;
    /// `false` acknowledges after the SQLite commit itself (slower, no pending coupons).
    pub claim_journal: bool,
    /// Claims per SQLite transaction of the journal's applier.
    pub journal_apply_batch: usize,
    /// Acknowledged claims the journal may hold that are not yet in SQLite; claims wait for
    /// room beyond it (memory: about 570 bytes each, hot-state entries included).
    pub journal_max_backlog: usize,
    /// Templates in the local read cache.
    pub cache_capacity: u64,
    /// TTL of a cached template (plus up to 25 % jitter). Default 60 s.
    #[serde(rename = "cache_ttl_secs", with = "units::secs")]
    pub cache_ttl: Duration,
    /// TTL of "no such template" answers. Default 5 s.
    #[serde(rename = "negative_cache_ttl_ms", with = "units::millis")]
    pub negative_cache_ttl: Duration,
    /// Template ids the bloom filter is sized for (0.1 % false positives at that size).
    pub bloom_expected_items: usize,
    /// Claims one user may make per second on this node (0 = no limit); 429 beyond.
    pub claim_rate_per_user: u32,
    /// Claims one user may make in a burst before the rate applies.
    pub claim_burst_per_user: u32,
    /// Claims must carry an `Idempotency-Key` (400 `IDEMPOTENCY_KEY_REQUIRED` without), so
    /// that the retry a client makes after an unknown outcome can never claim twice.
    pub claim_key_required: bool,
    /// How long this node keeps a template it loaded to serve it when the database cannot be
    /// read (stale-if-error, with its age). Default 24 h.
    #[serde(rename = "stale_template_ttl_secs", with = "units::secs")]
    pub stale_template_ttl: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            group_commit_max_batch: 4_096,
            claim_journal: true,
            journal_apply_batch: 16_384,
            journal_max_backlog: 500_000,
            cache_capacity: 100_000,
            cache_ttl: Duration::from_secs(60),
            negative_cache_ttl: Duration::from_millis(5_000),
            bloom_expected_items: 1_000_000,
            claim_rate_per_user: 10,
            claim_burst_per_user: 10,
            claim_key_required: true,
            stale_template_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

impl EngineSettings {
    /// TTL of the shared (Redis) template cache of distributed mode: 5 × `cache_ttl`.
    pub fn shared_cache_ttl(&self) -> Duration {
        self.cache_ttl.saturating_mul(SHARED_CACHE_TTL_FACTOR)
    }
}

/// How the node reaches Redis (`redis.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One server at `redis.url` (or the one entry of `redis.urls`).
    #[default]
    Single,
    /// A Redis Cluster; `redis.urls` are seed nodes (any subset of the cluster).
    Cluster,
    /// A master found through Sentinel: `redis.urls` are the sentinels, `redis.sentinel_master`
    /// the name they monitor it under; the node follows a failover.
    Sentinel,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// `single` (default), `cluster` or `sentinel`.
    pub mode: RedisMode,
    /// Distributed mode's hot store (stock, per-user counts, claim logs, invalidations), in
    /// `single` mode.
    pub url: String,
    /// Cluster seed nodes (`cluster`), sentinels (`sentinel`); in `single` mode, one URL
    /// that overrides `url`.
    pub urls: Vec<String>,
    /// The master's name in Sentinel (`sentinel` mode).
    pub sentinel_master: Option<String>,
    /// Replicas that must hold a claim before it is acknowledged (`WAIT`), and that must
    /// hold claim-log entries before a persister copies them to MySQL. 0 (default): none,
    /// so a failover can lose the last acknowledged claims. Single and sentinel modes.
    pub wait_replicas: u32,
    /// How long a claim waits for `wait_replicas` before it answers `OUTCOME_UNKNOWN`.
    #[serde(rename = "wait_timeout_ms", with = "units::millis")]
    pub wait_timeout: Duration,
    /// Prefix of every key and channel, so several deployments (or tests) share a server.
    pub prefix: String,
    /// Claim-log entries a persister writes to MySQL per transaction.
    pub persister_batch: usize,
    /// Pause of a persister whose claim logs are drained. Default 20 ms.
    #[serde(rename = "persister_interval_ms", with = "units::millis")]
    pub persister_interval: Duration,
    /// How often a persister checks every template's claim log, not only those this node
    /// claimed into: how soon a dead node's logs are taken over (after their 10 s lease).
    /// Default 5 s.
    #[serde(rename = "persister_sweep_ms", with = "units::millis")]
    pub persister_sweep: Duration,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            mode: RedisMode::Single,
            url: "redis://127.0.0.1:6379".into(),
            urls: Vec::new(),
            sentinel_master: None,
            wait_replicas: 0,
            wait_timeout: Duration::from_millis(100),
            prefix: "stampede".into(),
            persister_batch: 2_000,
            persister_interval: Duration::from_millis(20),
            persister_sweep: Duration::from_secs(5),
        }
    }
}

impl RedisSettings {
    /// Where Redis is, from `mode`, `url` and `urls`.
    pub fn topology(&self) -> anyhow::Result<stampede_hot_redis::RedisTopology> {
        use stampede_hot_redis::RedisTopology;
        match self.mode {
            RedisMode::Single => match self.urls.as_slice() {
                [] => Ok(RedisTopology::Single(self.url.clone())),
                [one] => Ok(RedisTopology::Single(one.clone())),
                _ => anyhow::bail!(
                    "redis.urls lists {} servers but redis.mode is single: set redis.mode = \"cluster\" or keep one URL",
                    self.urls.len()
                ),
            },
            RedisMode::Cluster if self.urls.is_empty() => {
                anyhow::bail!("redis.mode = \"cluster\" needs redis.urls (seed nodes)")
            }
            RedisMode::Cluster => Ok(RedisTopology::Cluster(self.urls.clone())),
            RedisMode::Sentinel => {
                let Some(master) = self.sentinel_master.clone().filter(|m| !m.is_empty()) else {
                    anyhow::bail!("redis.mode = \"sentinel\" needs redis.sentinel_master");
                };
                if self.urls.is_empty() {
                    anyhow::bail!("redis.mode = \"sentinel\" needs redis.urls (the sentinels)");
                }
                Ok(RedisTopology::Sentinel {
                    sentinels: self.urls.clone(),
                    master,
                })
            }
        }
    }

    /// What the claim path and the persisters wait for (`wait_replicas`), if anything.
    pub fn replica_wait(&self) -> Option<stampede_hot_redis::ReplicaWait> {
        (self.wait_replicas > 0).then_some(stampede_hot_redis::ReplicaWait {
            replicas: self.wait_replicas,
            timeout: self.wait_timeout,
        })
    }

    /// The checks of [`Self::topology`] and the replica wait, at load.
    pub fn check(&self) -> anyhow::Result<()> {
        self.topology()?;
        if self.wait_replicas > 0 && self.mode == RedisMode::Cluster {
            anyhow::bail!(
                "redis.wait_replicas is for single and sentinel modes (a cluster routes WAIT to no particular master)"
            );
        }
        if self.wait_replicas > 0 && self.wait_timeout.is_zero() {
            anyhow::bail!("redis.wait_timeout_ms must be positive when redis.wait_replicas is set");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stampede_hot_redis::RedisTopology;

    #[test]
    fn redis_topology_follows_mode_url_and_urls() {
        let mut r = RedisSettings::default();
        assert_eq!(
            r.topology().ok(),
            Some(RedisTopology::Single("redis://127.0.0.1:6379".into()))
        );
        r.urls = vec!["redis://10.0.0.1:6379".into()];
        assert_eq!(
            r.topology().ok(),
            Some(RedisTopology::Single("redis://10.0.0.1:6379".into())),
            "one entry of urls overrides url"
        );
        r.urls.push("redis://10.0.0.2:6379".into());
        assert!(r.check().is_err(), "single mode with two servers");
        r.mode = RedisMode::Cluster;
        assert_eq!(
            r.topology().ok(),
            Some(RedisTopology::Cluster(r.urls.clone()))
        );
        r.urls.clear();
        assert!(r.check().is_err(), "a cluster needs seed nodes");
        r.urls = vec!["redis://10.0.0.1:6379".into()];
        r.wait_replicas = 1;
        assert!(r.check().is_err(), "WAIT on a cluster");
        r.mode = RedisMode::Sentinel;
        assert!(r.check().is_err(), "sentinel needs a master name");
        r.sentinel_master = Some("hot".into());
        assert_eq!(
            r.topology().ok(),
            Some(RedisTopology::Sentinel {
                sentinels: r.urls.clone(),
                master: "hot".into()
            })
        );
        assert!(r.check().is_ok());
        assert_eq!(r.replica_wait().map(|w| w.replicas), Some(1));
        r.wait_timeout = Duration::ZERO;
        assert!(r.check().is_err());
        let parsed: Result<RedisSettings, _> = serde_json::from_str(
            r#"{"mode": "sentinel", "urls": ["redis://s:26379"], "sentinel_master": "hot"}"#,
        );
        assert!(parsed.is_ok_and(|p| p.mode == RedisMode::Sentinel));
    }
}
