//! Flow control at the HTTP edge: admission (a per-node in-flight limit with a short queue,
//! settlement shed last) and rate rules (per route, and per user, IP and template on claims),
//! over the rule set in force (`FlowControl`).
//!
//! - **Admission** (`admission`, a middleware on every route but the probes): a request takes
//!   one of `max_in_flight` slots; settlement (the order service) first uses its reserved
//!   share. With no slot free it waits at most `queue_timeout_ms`, then gets 503 `OVERLOADED`
//!   with `Retry-After` at once, so latency stops growing with load instead of queueing.
//! - **Rates**: per-route rules in the middleware; the claim handler checks its route rule and
//!   the per-user, per-IP and per-template rules in one limiter call (`check_claim`), so a
//!   claim costs one Redis round trip for all of them. Over a limit: 429 `RATE_LIMITED`.
//!   The limiter is fleet-wide in distributed mode (Redis, falling back to per-node limits
//!   while Redis is unreachable) and per node in embedded mode.
//! - **Rules**: the configured defaults until an admin saves a set (`replace`); every node
//!   polls the store's version (`refresh`) and applies a change within a second; a saved set
//!   survives restarts.
//!
//! Counters: `stampede_requests_shed_total{reason}`, `stampede_rate_limited_total{rule}`.

use crate::error::ApiError;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, header::HeaderName};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::Serialize;
use stampede_core::flow::{Check, Decision, FlowKey, FlowRuleStore, RateLimiter};
use stampede_core::ports::StoreError;
use stampede_domain::ErrorCode;
use stampede_domain::flow::{FlowRules, Rate, RouteClass};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use utoipa::ToSchema;

/// Counter: requests refused by a flow-control rule, by `rule` ([`FlowKey::RULES`]).
const RATE_LIMITED: &str = "stampede_rate_limited_total";
/// Counter: requests shed by admission control, by `reason`.
const SHED: &str = "stampede_requests_shed_total";

/// Registers this module's counters at zero (alerts `rate()` them from the first scrape).
pub fn register_metrics() {
    metrics::counter!(SHED, "reason" => "in_flight").increment(0);
    for rule in FlowKey::RULES {
        metrics::counter!(RATE_LIMITED, "rule" => rule).increment(0);
    }
}

/// Where the rules in force come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RulesSource {
    /// The `[flow]` configuration: no admin has saved a set yet.
    Config,
    /// Saved through `PUT /api/v1/admin/flow-rules`.
    Admin,
}

/// The rule set in force on this node.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActiveRules {
    /// The stored version (0 while the configured defaults apply).
    pub version: i64,
    pub source: RulesSource,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub updated_at: Option<Timestamp>,
    pub rules: FlowRules,
}

/// The client address a request came from, set by the admission middleware.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// One pool of in-flight slots.
struct Pool {
    used: AtomicU32,
    limit: AtomicU32,
    freed: Notify,
}

impl Pool {
    fn new(limit: u32) -> Self {
        Self {
            used: AtomicU32::new(0),
            limit: AtomicU32::new(limit),
            freed: Notify::new(),
        }
    }

    fn try_take(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |u| {
                (u < limit).then_some(u + 1)
            })
            .is_ok()
    }

    /// Takes a slot, waiting for one until `deadline`.
    async fn take(&self, wait: Duration) -> bool {
        if self.try_take() {
            return true;
        }
        if wait.is_zero() {
            return false;
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.try_take() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.try_take();
            }
            if self.try_take() {
                return true;
            }
        }
    }

    fn give_back(&self) {
        self.used.fetch_sub(1, Ordering::AcqRel);
        self.freed.notify_one();
    }

    fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Relaxed);
        // Waiters re-check against the new limit.
        self.freed.notify_waiters();
    }
}

/// A held in-flight slot; given back when the response is done.
pub struct Slot {
    flow: Arc<FlowControl>,
    reserved: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let pool = if self.reserved {
            &self.flow.reserved
        } else {
            &self.flow.general
        };
        pool.give_back();
    }
}

/// The rules in force, the limiter that enforces the rates, and this node's in-flight slots.
pub struct FlowControl {
    active: RwLock<Arc<ActiveRules>>,
    defaults: FlowRules,
    limiter: Arc<dyn RateLimiter>,
    store: Arc<dyn FlowRuleStore>,
    /// Slots every route may use: `max_in_flight - settlement_reserved`.
    general: Pool,
    /// Slots only settlement may use.
    reserved: Pool,
    queue_timeout_ms: AtomicU32,
    trust_forwarded_for: bool,
}

static FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

impl FlowControl {
    /// Starts with the configured `defaults` (validated by the caller); call `refresh` to
    /// pick up a saved set.
    pub fn new(
        defaults: FlowRules,
        limiter: Arc<dyn RateLimiter>,
        store: Arc<dyn FlowRuleStore>,
        trust_forwarded_for: bool,
    ) -> Self {
        let c = defaults.concurrency;
        let flow = Self {
            active: RwLock::new(Arc::new(ActiveRules {
                version: 0,
                source: RulesSource::Config,
                updated_at: None,
                rules: defaults.clone(),
            })),
            defaults,
            limiter,
            store,
            general: Pool::new(c.max_in_flight.saturating_sub(c.settlement_reserved)),
            reserved: Pool::new(c.settlement_reserved),
            queue_timeout_ms: AtomicU32::new(c.queue_timeout_ms),
            trust_forwarded_for,
        };
        flow.apply_concurrency(&flow.defaults);
        flow
    }

    /// The rule set in force.
    pub fn active(&self) -> Arc<ActiveRules> {
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn apply(&self, next: ActiveRules) {
        self.apply_concurrency(&next.rules);
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
    }

    fn apply_concurrency(&self, rules: &FlowRules) {
        let c = rules.concurrency;
        self.general
            .set_limit(c.max_in_flight.saturating_sub(c.settlement_reserved));
        self.reserved.set_limit(c.settlement_reserved);
        self.queue_timeout_ms
            .store(c.queue_timeout_ms, Ordering::Relaxed);
    }

    /// Applies the stored set if its version differs from the one in force; whether it did.
    pub async fn refresh(&self) -> Result<bool, StoreError> {
        let version = self.store.flow_rules_version().await?;
        if version == self.active().version {
            return Ok(false);
        }
        let Some(stored) = self.store.flow_rules().await? else {
            return Ok(false);
        };
        if stored.rules.validate().is_err() {
            // Only validated sets are saved; a hand-edited row must not take the node down.
            tracing::warn!(
                version = stored.version,
                "stored flow rules are invalid; keeping the rules in force"
            );
            return Ok(false);
        }
        tracing::info!(version = stored.version, "flow rules changed");
        self.apply(ActiveRules {
            version: stored.version,
            source: RulesSource::Admin,
            updated_at: Some(stored.updated_at),
            rules: stored.rules,
        });
        Ok(true)
    }

    /// Validates `rules` whole (422 with every field error, nothing applied), saves them and
    /// applies them on this node at once (other nodes within their poll interval).
    pub async fn replace(
        &self,
        rules: FlowRules,
        now: Timestamp,
    ) -> Result<Arc<ActiveRules>, ApiError> {
        rules.validate().map_err(ApiError::validation)?;
        let version = self
            .store
            .save_flow_rules(&rules, now)
            .await
            .map_err(stampede_core::AppError::from)?;
        self.apply(ActiveRules {
            version,
            source: RulesSource::Admin,
            updated_at: Some(now),
            rules,
        });
        Ok(self.active())
    }

    /// Every rate a rule names (the in-process limiter drops the others' buckets).
    pub fn rates(&self) -> Vec<Rate> {
        let a = self.active();
        let r = &a.rules;
        r.routes
            .values()
            .copied()
            .chain(r.claim_per_user)
            .chain(r.claim_per_ip)
            .chain(r.claim_per_template)
            .collect()
    }

    /// The claim rules (route, user, IP, template), one limiter call for all of them.
    pub async fn check_claim(
        &self,
        user: Option<i64>,
        ip: Option<IpAddr>,
        template: i64,
    ) -> Result<(), ApiError> {
        let active = self.active();
        let r = &active.rules;
        // At most four checks: kept on the stack.
        let mut checks = [Check {
            key: FlowKey::ClaimTemplate(template),
            rate: Rate {
                per_second: 1,
                burst: 1,
            },
        }; 4];
        let mut n = 0;
        let wanted = [
            r.route(RouteClass::Claim)
                .map(|rate| (FlowKey::Route(RouteClass::Claim), rate)),
            r.claim_per_user
                .zip(user)
                .map(|(rate, u)| (FlowKey::ClaimUser(u), rate)),
            r.claim_per_ip
                .zip(ip)
                .map(|(rate, ip)| (FlowKey::ClaimIp(ip), rate)),
            r.claim_per_template
                .map(|rate| (FlowKey::ClaimTemplate(template), rate)),
        ];
        for (key, rate) in wanted.into_iter().flatten() {
            checks[n] = Check { key, rate };
            n += 1;
        }
        self.limit(&checks[..n]).await
    }

    async fn limit(&self, checks: &[Check]) -> Result<(), ApiError> {
        if checks.is_empty() {
            return Ok(());
        }
        match self.limiter.check(checks).await {
            Ok(Decision::Allowed) => Ok(()),
            Ok(Decision::Limited { index, retry_after }) => {
                let rule = checks.get(index).map_or("unknown", |c| c.key.rule());
                metrics::counter!(RATE_LIMITED, "rule" => rule).increment(1);
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                Err(ApiError::new(
                    ErrorCode::RateLimited,
                    format!("over the {rule} limit; retry after Retry-After seconds"),
                )
                .retry_after(secs.max(1)))
            }
            Err(e) => {
                // The limiter falls back by itself; an error here means even that failed.
                // Admit rather than refuse: flow control must not become an outage.
                tracing::warn!(error = %e, "rate limiter failed; admitting");
                Ok(())
            }
        }
    }

    fn client_ip(&self, req: &Request) -> Option<IpAddr> {
        if self.trust_forwarded_for
            && let Some(ip) = req
                .headers()
                .get(&FORWARDED_FOR)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse().ok())
        {
            return Some(ip);
        }
        req.extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
    }

    /// An in-flight slot for a request of `class`, or `None` when the node is full for it.
    pub async fn admit(self: &Arc<Self>, class: RouteClass) -> Option<Slot> {
        let wait = Duration::from_millis(u64::from(self.queue_timeout_ms.load(Ordering::Relaxed)));
        if class == RouteClass::Settlement && self.reserved.try_take() {
            return Some(Slot {
                flow: self.clone(),
                reserved: true,
            });
        }
        self.general.take(wait).await.then(|| Slot {
            flow: self.clone(),
            reserved: false,
        })
    }
}

/// The route class of a request; `None` for the probes and metrics, which are never shed.
pub fn classify(method: &Method, path: &str) -> Option<RouteClass> {
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return match path {
            "/healthz" | "/readyz" | "/metrics" => None,
            _ => Some(RouteClass::Other),
        };
    };
    let class = if let Some(t) = rest.strip_prefix("templates/") {
        if method == Method::POST && t.ends_with("/claim") {
            RouteClass::Claim
        } else if t.ends_with("/reminders") {
            RouteClass::Other
        } else {
            RouteClass::Shopper
        }
    } else if rest.starts_with("orders/") || rest.starts_with("checkout/") {
        RouteClass::Settlement
    } else if rest.starts_with("me/coupons") {
        RouteClass::Shopper
    } else if rest.starts_with("auth/") {
        RouteClass::Auth
    } else if rest.starts_with("merchant/") || rest.starts_with("admin/") {
        RouteClass::BackOffice
    } else {
        RouteClass::Other
    };
    Some(class)
}

/// The admission middleware: an in-flight slot (or 503 `OVERLOADED`), then the route's rate
/// rule (or 429 `RATE_LIMITED`; claims check theirs in the handler, with the claim rules).
pub async fn admission(
    State(flow): State<Arc<FlowControl>>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(class) = classify(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let Some(slot) = flow.admit(class).await else {
        metrics::counter!(SHED, "reason" => "in_flight").increment(1);
        return ApiError::new(
            ErrorCode::Overloaded,
            "this node is at its in-flight limit; retry after Retry-After seconds",
        )
        .retry_after(1)
        .into_response();
    };
    if class != RouteClass::Claim
        && let Some(rate) = flow.active().rules.route(class)
    {
        let check = [Check {
            key: FlowKey::Route(class),
            rate,
        }];
        if let Err(e) = flow.limit(&check).await {
            return e.into_response();
        }
    }
    if class == RouteClass::Claim
        && let Some(ip) = flow.client_ip(&req)
    {
        req.extensions_mut().insert(ClientIp(ip));
    }
    let response = next.run(req).await;
    drop(slot);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_classified_without_the_router() {
        let cases = [
            (
                Method::POST,
                "/api/v1/templates/123/claim",
                Some(RouteClass::Claim),
            ),
            (
                Method::GET,
                "/api/v1/templates/123",
                Some(RouteClass::Shopper),
            ),
            (
                Method::PUT,
                "/api/v1/templates/123/reminders",
                Some(RouteClass::Other),
            ),
            (
                Method::POST,
                "/api/v1/orders/o1/coupons/lock",
                Some(RouteClass::Settlement),
            ),
            (
                Method::POST,
                "/api/v1/checkout/quote",
                Some(RouteClass::Settlement),
            ),
            (Method::GET, "/api/v1/me/coupons", Some(RouteClass::Shopper)),
            (Method::POST, "/api/v1/auth/login", Some(RouteClass::Auth)),
            (
                Method::PUT,
                "/api/v1/admin/flow-rules",
                Some(RouteClass::BackOffice),
            ),
            (
                Method::GET,
                "/api/v1/merchant/templates",
                Some(RouteClass::BackOffice),
            ),
            (Method::GET, "/readyz", None),
            (Method::GET, "/metrics", None),
            (Method::GET, "/docs", Some(RouteClass::Other)),
        ];
        for (m, p, want) in cases {
            assert_eq!(classify(&m, p), want, "{m} {p}");
        }
    }

    #[tokio::test]
    async fn a_full_pool_sheds_after_the_queue_timeout_and_a_freed_slot_admits() {
        let pool = Arc::new(Pool::new(1));
        assert!(pool.try_take());
        let started = std::time::Instant::now();
        assert!(!pool.take(Duration::from_millis(5)).await);
        assert!(started.elapsed() < Duration::from_millis(50));
        let waiter = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.take(Duration::from_millis(500)).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        pool.give_back();
        assert!(matches!(waiter.await, Ok(true)));
    }
}
