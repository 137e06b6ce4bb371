//! The template read path: local cache → shared cache (Redis, in distributed mode) → system
//! of record, with a bloom filter of existing ids in front so an unknown id costs no database
//! query at all (and a false positive costs one, then sits in the negative cache). Concurrent misses on one id share a single load
//! (moka's `try_get_with` coalesces them); TTLs are jittered so entries loaded together do
//! not expire together. Changes invalidate through `invalidate` (called on this node by the
//! back-office, and on other nodes by the distributed invalidation channel).
//!
//! Stale-if-error: every template loaded is also kept in a second, longer-lived cache with the
//! time it was loaded. When a load fails because the database (or the shared cache) cannot be
//! reached, that copy is served instead, with its age (`get_with_age`), so template reads and
//! claims ride through a database outage. Templates change only through the back-office,
//! which needs the database, so during an outage the copy is as fresh as it can be.

use crate::ports::{StoreError, TemplateStore};
use fastbloom::AtomicBloomFilter;
use moka::Expiry;
use moka::future::Cache;
use stampede_domain::ids::TemplateId;
use stampede_domain::template::Template;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct CatalogConfig {
    /// Templates kept in the local cache.
    pub capacity: u64,
    /// TTL of a cached template; each entry gets this plus up to 25 % random jitter.
    pub ttl: Duration,
    /// TTL of "no such template" entries.
    pub negative_ttl: Duration,
    /// Ids the bloom filter is sized for (at a 0.1 % false-positive rate).
    pub bloom_expected_items: usize,
    /// How long a loaded template can still be served when the database cannot be read.
    pub stale_ttl: Duration,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            bloom_expected_items: 1_000_000,
            stale_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

type Entry = Option<Arc<Template>>;

struct Jittered {
    ttl: Duration,
    negative_ttl: Duration,
}

impl Expiry<TemplateId, Entry> for Jittered {
    fn expire_after_create(
        &self,
        _key: &TemplateId,
        value: &Entry,
        _at: Instant,
    ) -> Option<Duration> {
        Some(match value {
            Some(_) => self.ttl + self.ttl.mul_f64(rand::random::<f64>() * 0.25),
            None => self.negative_ttl,
        })
    }
}

/// A cache shared by every node (second level, behind each node's local cache).
#[async_trait::async_trait]
pub trait SharedTemplateCache: Send + Sync + 'static {
    async fn get(&self, id: TemplateId) -> Result<Option<Template>, StoreError>;
    async fn put(&self, t: &Template) -> Result<(), StoreError>;
    /// Drops the entry after a change, before other nodes are told to reload.
    async fn evict(&self, id: TemplateId) -> Result<(), StoreError>;
}

pub struct Catalog {
    store: Arc<dyn TemplateStore>,
    shared: Option<Arc<dyn SharedTemplateCache>>,
    cache: Cache<TemplateId, Entry>,
    /// Last good copy of each template and when it was loaded (stale-if-error).
    stale: Cache<TemplateId, (Arc<Template>, Instant)>,
    bloom: AtomicBloomFilter,
    db_queries: AtomicU64,
}

impl Catalog {
    pub fn new(store: Arc<dyn TemplateStore>, cfg: &CatalogConfig) -> Self {
        let cache = Cache::builder()
            .max_capacity(cfg.capacity)
            .expire_after(Jittered {
                ttl: cfg.ttl,
                negative_ttl: cfg.negative_ttl,
            })
            .build();
        let bloom = AtomicBloomFilter::with_false_pos(0.001)
            .expected_items(cfg.bloom_expected_items.max(1_000));
        let stale = Cache::builder()
            .max_capacity(cfg.capacity)
            .time_to_live(cfg.stale_ttl.max(Duration::from_secs(1)))
            .build();
        Self {
            store,
            shared: None,
            cache,
            stale,
            bloom,
            db_queries: AtomicU64::new(0),
        }
    }

    /// Adds the shared second-level cache (distributed mode).
    pub fn with_shared(mut self, shared: Arc<dyn SharedTemplateCache>) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Shared cache → system of record (filling the shared cache). A shared cache that fails
    /// is skipped: the database answers instead.
    async fn load(&self, id: TemplateId) -> Result<Option<Arc<Template>>, StoreError> {
        let found = self.load_fresh(id).await?;
        match &found {
            Some(t) => self.stale.insert(id, (t.clone(), Instant::now())).await,
            None => self.stale.invalidate(&id).await,
        }
        Ok(found)
    }

    async fn load_fresh(&self, id: TemplateId) -> Result<Option<Arc<Template>>, StoreError> {
        if let Some(shared) = &self.shared {
            match shared.get(id).await {
                Ok(Some(t)) => return Ok(Some(Arc::new(t))),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(template = %id, error = %e, "shared template cache unavailable")
                }
            }
        }
        self.db_queries.fetch_add(1, Ordering::Relaxed);
        let found = self.store.get_template(id).await?;
        if let (Some(shared), Some(t)) = (&self.shared, &found)
            && let Err(e) = shared.put(t).await
        {
            tracing::warn!(template = %id, error = %e, "could not fill the shared template cache");
        }
        Ok(found.map(Arc::new))
    }

    /// Fills the bloom filter with every existing template id (at start).
    pub async fn rebuild_bloom(&self) -> Result<usize, StoreError> {
        let mut after = None;
        let mut n = 0;
        loop {
            let ids = self.store.template_ids(after, 10_000).await?;
            let Some(last) = ids.last().copied() else {
                return Ok(n);
            };
            for id in &ids {
                self.bloom.insert(&id.get());
            }
            n += ids.len();
            after = Some(last);
        }
    }

    /// The template, from the cache when possible (a stale copy when the database cannot be
    /// read; see the module docs).
    pub async fn get(&self, id: TemplateId) -> Result<Option<Arc<Template>>, StoreError> {
        Ok(self.get_with_age(id).await?.map(|(t, _)| t))
    }

    /// [`Self::get`], saying how old the copy is when it is a stale one served because the
    /// database could not be read (`None`: a fresh copy).
    pub async fn get_with_age(
        &self,
        id: TemplateId,
    ) -> Result<Option<(Arc<Template>, Option<Duration>)>, StoreError> {
        if !self.bloom.contains(&id.get()) {
            return Ok(None);
        }
        match self.cache.try_get_with(id, self.load(id)).await {
            Ok(found) => Ok(found.map(|t| (t, None))),
            Err(e) => {
                if cannot_read(&e)
                    && let Some((t, at)) = self.stale.get(&id).await
                {
                    let age = at.elapsed();
                    tracing::warn!(template = %id, age_ms = age.as_millis() as u64, error = %e,
                        "serving a stale template: the database cannot be read");
                    return Ok(Some((t, Some(age))));
                }
                Err(shared_error(&e))
            }
        }
    }

    /// The templates of `ids` that exist: from the local cache, the rest with one
    /// `TemplateStore::get_templates` call (one query per shard), then cached.
    pub async fn get_many(
        &self,
        ids: &[TemplateId],
    ) -> Result<std::collections::HashMap<TemplateId, Arc<Template>>, StoreError> {
        let mut out = std::collections::HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        for &id in ids {
            if out.contains_key(&id) || missing.contains(&id) || !self.bloom.contains(&id.get()) {
                continue;
            }
            match self.cache.get(&id).await {
                Some(Some(t)) => {
                    out.insert(id, t);
                }
                Some(None) => {}
                None => missing.push(id),
            }
        }
        if !missing.is_empty() {
            self.db_queries.fetch_add(1, Ordering::Relaxed);
            match self.store.get_templates(&missing).await {
                Ok(found) => {
                    for t in found {
                        let t = Arc::new(t);
                        self.cache.insert(t.id, Some(t.clone())).await;
                        self.stale.insert(t.id, (t.clone(), Instant::now())).await;
                        out.insert(t.id, t);
                    }
                }
                Err(e) if cannot_read(&e) => {
                    // Stale copies of every missing one, or the error.
                    for id in missing {
                        let (t, _) = self.stale.get(&id).await.ok_or_else(|| shared_error(&e))?;
                        out.insert(id, t);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// A template was created: its id now exists (and any negative entry is stale).
    /// (The stale copy stays until the next successful load replaces it: a copy served in an
    /// outage may lag a change made just before.)
    pub async fn created(&self, id: TemplateId) {
        self.bloom.insert(&id.get());
        self.cache.invalidate(&id).await;
    }

    /// A template changed: the next read loads it again.
    pub async fn invalidate(&self, id: TemplateId) {
        self.cache.invalidate(&id).await;
    }

    /// This node changed the template: drop it from the shared cache too (before other
    /// nodes are told to reload), then locally.
    pub async fn changed(&self, id: TemplateId) {
        if let Some(shared) = &self.shared
            && let Err(e) = shared.evict(id).await
        {
            tracing::warn!(template = %id, error = %e, "could not evict from the shared template cache; it expires by TTL");
        }
        self.invalidate(id).await;
    }

    /// Database reads this catalog made (for metrics and tests).
    pub fn db_queries(&self) -> u64 {
        self.db_queries.load(Ordering::Relaxed)
    }
}

/// A read failed because a dependency could not be reached (not because data is bad).
fn cannot_read(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable { .. } | StoreError::Backend(_))
}

/// The error of a coalesced load, keeping the dependency it names.
fn shared_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable { dependency, .. } => StoreError::Unavailable {
            dependency: *dependency,
            source: e.to_string().into(),
        },
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
        other => StoreError::Backend(other.to_string().into()),
    }
}
