//! [`Invalidation`]: template changes broadcast to every node (pub/sub on
//! `P:tpl-invalidate`, payload: the template id in decimal), so termination and stock changes
//! reach every node's local cache at once; and the changed template's shop on
//! `P:shop-invalidate` (payload: the shop id, `0` for the platform), so every node reloads
//! that shop's discovery listing without a query to learn the shop. A separate channel keeps
//! the template channel's payload as it was for nodes of an earlier release.
//!
//! Pub/sub is fire-and-forget: a node that is disconnected when a message is published misses
//! it. Subscribers therefore keep their cache TTLs short enough to bound staleness after a
//! reconnect, and the claim path never trusts a cached status to allow a claim (the hot
//! state's own status decides).

use crate::Connection;
use crate::{backend, keys};
use futures::StreamExt;
use stampede_core::ports::StoreError;
use stampede_domain::ids::{ShopId, TemplateId};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Publisher side of template invalidations.
#[derive(Clone)]
pub struct Invalidation {
    conn: Connection,
    channel: String,
    shop_channel: String,
}

impl std::fmt::Debug for Invalidation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invalidation")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Invalidation {
    pub fn new(conn: impl Into<Connection>, prefix: &str) -> Self {
        Self {
            conn: conn.into(),
            channel: keys::invalidation_channel(prefix),
            shop_channel: keys::shop_invalidation_channel(prefix),
        }
    }

    /// [`Invalidation::new`] on a new connection to `url`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        Ok(Self::new(crate::connect(url).await?, prefix))
    }

    /// Tells every subscribed node that `t` changed; the number of nodes that received it.
    pub async fn publish(&self, t: TemplateId) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(t.get())
            .query_async(&mut conn)
            .await
            .map_err(backend)
    }

    /// Tells every subscribed node that a template of `shop` changed.
    pub async fn publish_shop(&self, shop: ShopId) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("PUBLISH")
            .arg(&self.shop_channel)
            .arg(shop.get())
            .query_async(&mut conn)
            .await
            .map_err(backend)
    }

    /// The shop channel's subscriber: `on_shop` for every shop published, `on_subscribed`
    /// each time a subscription is in place (what was published meanwhile is lost);
    /// reconnects like [`Self::subscribe`].
    pub fn subscribe_shops<F, G>(
        urls: impl Into<Seeds>,
        prefix: &str,
        on_shop: F,
        on_subscribed: G,
        token: CancellationToken,
    ) -> Result<impl Future<Output = ()> + Send + 'static, StoreError>
    where
        F: Fn(ShopId) + Send + Sync + 'static,
        G: Fn() + Send + Sync + 'static,
    {
        subscribe_parsed(
            urls.into(),
            keys::shop_invalidation_channel(prefix),
            |p| p.parse::<i64>().ok().and_then(ShopId::from_stored),
            "a shop id",
            on_shop,
            on_subscribed,
            token,
        )
    }

    /// The subscriber: a future (to spawn) that calls `on_invalidate` for every template id
    /// published on the channel until `token` is cancelled, reconnecting with exponential
    /// backoff (0.1 s to 5 s) whenever the connection is lost. Fails at once only if `url`
    /// is not a Redis URL; the future itself never fails.
    pub fn subscribe<F>(
        urls: impl Into<Seeds>,
        prefix: &str,
        on_invalidate: F,
        token: CancellationToken,
    ) -> Result<impl Future<Output = ()> + Send + 'static, StoreError>
    where
        F: Fn(TemplateId) + Send + Sync + 'static,
    {
        Self::subscribe_with_catch_up(urls, prefix, on_invalidate, || {}, token)
    }

    /// [`Self::subscribe`], calling `on_subscribed` each time a subscription is in place
    /// (the first and every one after a reconnect): what was published while this node was
    /// not subscribed is lost, so the caller catches up from the system of record then.
    pub fn subscribe_with_catch_up<F, G>(
        urls: impl Into<Seeds>,
        prefix: &str,
        on_invalidate: F,
        on_subscribed: G,
        token: CancellationToken,
    ) -> Result<impl Future<Output = ()> + Send + 'static, StoreError>
    where
        F: Fn(TemplateId) + Send + Sync + 'static,
        G: Fn() + Send + Sync + 'static,
    {
        subscribe_parsed(
            urls.into(),
            keys::invalidation_channel(prefix),
            TemplateId::parse,
            "a template id",
            on_invalidate,
            on_subscribed,
            token,
        )
    }
}

/// Subscribes to `channel`, calling `on` with every payload `parse` reads (others are
/// logged and skipped, `what` naming what was expected).
fn subscribe_parsed<T: 'static, F, G>(
    urls: Seeds,
    channel: String,
    parse: fn(&str) -> Option<T>,
    what: &'static str,
    on: F,
    on_subscribed: G,
    token: CancellationToken,
) -> Result<impl Future<Output = ()> + Send + 'static, StoreError>
where
    F: Fn(T) + Send + Sync + 'static,
    G: Fn() + Send + Sync + 'static,
{
    let dialer = urls.dialer()?;
    let on_payload = move |payload: &[u8]| {
        let payload = String::from_utf8_lossy(payload);
        match parse(&payload) {
            Some(v) => on(v),
            None => {
                tracing::warn!(%payload, expected = what, "ignoring an invalidation that cannot be read")
            }
        }
    };
    Ok(run_subscriber(
        dialer,
        channel,
        on_payload,
        on_subscribed,
        token,
    ))
}

/// Where a subscriber connects: one server, the nodes of a cluster tried in turn (a message
/// published on any node of a Redis Cluster reaches subscribers on every node, so any live
/// one serves), or the master of a Sentinel group, found again at each reconnect (a master
/// propagates its publishes to its replicas, but after a failover only the new master gets
/// new ones).
#[derive(Clone, Debug)]
pub enum Seeds {
    Urls(Vec<String>),
    Sentinel {
        sentinels: Vec<String>,
        master: String,
    },
}

/// What a subscriber dials on each attempt.
pub(crate) enum Dialer {
    Clients(Vec<redis::Client>),
    Sentinel(Box<redis::sentinel::SentinelClient>),
}

impl Dialer {
    /// The server to subscribe on at attempt `n`.
    async fn client(&mut self, n: usize) -> Result<redis::Client, redis::RedisError> {
        match self {
            Self::Clients(cs) => cs
                .get(n % cs.len().max(1))
                .cloned()
                .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Client, "no Redis URL"))),
            Self::Sentinel(s) => s.async_get_client().await,
        }
    }
}

impl Seeds {
    pub(crate) fn dialer(&self) -> Result<Dialer, StoreError> {
        match self {
            Self::Urls(urls) if urls.is_empty() => {
                Err(crate::backend_msg("no Redis URL to subscribe on"))
            }
            Self::Urls(urls) => urls
                .iter()
                .map(|u| redis::Client::open(u.as_str()).map_err(backend))
                .collect::<Result<_, _>>()
                .map(Dialer::Clients),
            Self::Sentinel { sentinels, master } => {
                crate::sentinel_client(sentinels, master).map(|c| Dialer::Sentinel(Box::new(c)))
            }
        }
    }
}

impl From<&str> for Seeds {
    fn from(url: &str) -> Self {
        Self::Urls(vec![url.to_owned()])
    }
}

impl From<&String> for Seeds {
    fn from(url: &String) -> Self {
        Self::Urls(vec![url.clone()])
    }
}

impl From<Vec<String>> for Seeds {
    fn from(urls: Vec<String>) -> Self {
        Self::Urls(urls)
    }
}

pub(crate) async fn run_subscriber<F, G>(
    mut dialer: Dialer,
    channel: String,
    on_payload: F,
    on_subscribed: G,
    token: CancellationToken,
) where
    F: Fn(&[u8]) + Send + Sync + 'static,
    G: Fn() + Send + Sync + 'static,
{
    let mut backoff = BACKOFF_MIN;
    let mut next = 0usize;
    loop {
        let mut subscribed = false;
        // A seed that failed gives way to the next one.
        let attempt = next;
        next = next.wrapping_add(1);
        let session = async {
            let client = dialer.client(attempt).await?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            subscribed = true;
            tracing::debug!(%channel, "subscribed to invalidations");
            on_subscribed();
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
                on_payload(msg.get_payload_bytes());
            }
            Ok::<(), redis::RedisError>(())
        };
        let outcome = tokio::select! {
            () = token.cancelled() => return,
            outcome = session => outcome,
        };
        match outcome {
            Ok(()) => {
                tracing::warn!(%channel, "invalidation subscription lost; reconnecting")
            }
            Err(e) => {
                tracing::warn!(error = %e, %channel, "invalidation subscription failed; reconnecting")
            }
        }
        if subscribed {
            // The last connection worked: start the backoff over.
            backoff = BACKOFF_MIN;
        }
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
