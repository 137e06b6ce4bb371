//! [`UserInvalidation`]: users whose coupons changed on one node, broadcast to the others
//! (pub/sub on `P:user-invalidate`) so their quote caches drop those users at once instead of
//! asking Redis for pending claims on every quote.
//!
//! Payload: the sending node's tag, then the user ids, in decimal, separated by spaces. A
//! node skips its own messages (it invalidated locally already). Ids are batched: one
//! publish carries whatever queued while the previous one was in flight, so a sale's claims
//! cost a handful of publishes per millisecond, not one each. Like template invalidations
//! this is fire-and-forget; the receiving cache's TTL bounds what a lost message costs, and a
//! subscriber that reconnects drops its whole cache (`on_subscribed`).

use crate::{Connection, backend, keys};
use stampede_core::ports::StoreError;
use stampede_domain::ids::UserId;
use std::fmt::Write as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Most user ids in one message.
pub const MAX_BATCH: usize = 1024;

pub struct UserInvalidation;

impl UserInvalidation {
    /// The publisher: a future (to spawn) that publishes what arrives on `rx` until `token`
    /// is cancelled or every sender is gone. A failed publish is logged and counted, not
    /// retried (the receivers' TTL covers it).
    pub fn publisher(
        conn: Connection,
        prefix: &str,
        node_tag: u64,
        mut rx: mpsc::Receiver<UserId>,
        token: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let channel = keys::user_invalidation_channel(prefix);
        async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            loop {
                let n = tokio::select! {
                    () = token.cancelled() => return,
                    n = rx.recv_many(&mut batch, MAX_BATCH) => n,
                };
                if n == 0 {
                    return;
                }
                batch.sort_unstable();
                batch.dedup();
                let mut payload = node_tag.to_string();
                for u in batch.drain(..) {
                    let _ = write!(payload, " {u}");
                }
                let mut c = conn.clone();
                let sent: Result<u64, StoreError> = redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(&payload)
                    .query_async(&mut c)
                    .await
                    .map_err(backend);
                match sent {
                    Ok(_) => metrics::counter!("stampede_user_invalidations_published_total")
                        .increment(n as u64),
                    Err(e) => {
                        metrics::counter!("stampede_user_invalidations_failed_total")
                            .increment(n as u64);
                        tracing::debug!(error = %e, users = n, "could not broadcast user invalidations");
                    }
                }
            }
        }
    }

    /// The subscriber: calls `on_users` with the users of every message another node sent and
    /// `on_subscribed` each time the subscription is (re)established, until `token` is
    /// cancelled; reconnects with backoff. Fails at once only if `url` is not a Redis URL.
    pub fn subscribe<F, G>(
        urls: impl Into<crate::invalidation::Seeds>,
        prefix: &str,
        node_tag: u64,
        on_users: F,
        on_subscribed: G,
        token: CancellationToken,
    ) -> Result<impl Future<Output = ()> + Send + 'static, StoreError>
    where
        F: Fn(Vec<UserId>) + Send + Sync + 'static,
        G: Fn() + Send + Sync + 'static,
    {
        let dialer = urls.into().dialer()?;
        let on_payload = move |payload: &[u8]| match parse(payload) {
            Some((tag, _)) if tag == node_tag => {}
            Some((_, users)) => on_users(users),
            None => tracing::warn!(
                payload = %String::from_utf8_lossy(payload),
                "ignoring a malformed user invalidation"
            ),
        };
        Ok(crate::invalidation::run_subscriber(
            dialer,
            keys::user_invalidation_channel(prefix),
            on_payload,
            on_subscribed,
            token,
        ))
    }
}

/// `tag id id …`; `None` if any part is not a number.
fn parse(payload: &[u8]) -> Option<(u64, Vec<UserId>)> {
    let s = std::str::from_utf8(payload).ok()?;
    let mut parts = s.split(' ');
    let tag = parts.next()?.parse().ok()?;
    let users = parts.map(UserId::parse).collect::<Option<Vec<_>>>()?;
    Some((tag, users))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_or_are_refused_whole() {
        let (tag, users) = parse(b"42 7 9").unwrap_or_else(|| panic!("parse"));
        assert_eq!(tag, 42);
        assert_eq!(
            users.iter().map(|u| u.get()).collect::<Vec<_>>(),
            vec![7, 9]
        );
        assert!(parse(b"42 7 x").is_none());
        assert!(parse(b"x 7").is_none());
        assert!(parse(b"").is_none());
        assert_eq!(parse(b"5").map(|(t, u)| (t, u.len())), Some((5, 0)));
    }
}
