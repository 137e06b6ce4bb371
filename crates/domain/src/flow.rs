//! Flow-control rules: how much traffic a route, a user, an IP or a template may send, and how
//! many requests a node works on at once. Pure data plus validation; the limiters that enforce
//! the rules live behind `stampede_core::flow::RateLimiter`, admission in the HTTP crate.
//!
//! A rule set is validated whole: one bad rule refuses the set (every mistake reported, none
//! applied), so a node never runs half of an admin's change.

use crate::validation::ValidationErrors;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest rate or burst a rule may name: far above what one fleet serves, small enough that
/// the limiters' arithmetic (microseconds per token) cannot overflow.
pub const MAX_RATE: u32 = 1_000_000;
/// Most requests a node may have in flight (each holds memory; beyond this, bounds mean nothing).
pub const MAX_IN_FLIGHT: u32 = 100_000;
/// Longest a request may queue for admission: shedding must stay fast.
pub const MAX_QUEUE_TIMEOUT_MS: u32 = 1_000;

/// The route classes a per-route rule may name. Settlement (the order service's lock, redeem,
/// release, refund and quote calls) is one class: it has the reserved share of in-flight slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RouteClass {
    /// `POST /api/v1/templates/{id}/claim`.
    Claim,
    /// Shoppers' template reads and "my coupons".
    Shopper,
    /// The order service: quote, lock, redeem, release, refund, order reads.
    Settlement,
    /// Login, refresh, logout.
    Auth,
    /// Merchant and admin back office (templates, distributions, accounts, flow rules).
    BackOffice,
    /// Anything else (reminders, docs).
    Other,
}

impl RouteClass {
    pub const ALL: [RouteClass; 6] = [
        RouteClass::Claim,
        RouteClass::Shopper,
        RouteClass::Settlement,
        RouteClass::Auth,
        RouteClass::BackOffice,
        RouteClass::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::Claim => "claim",
            RouteClass::Shopper => "shopper",
            RouteClass::Settlement => "settlement",
            RouteClass::Auth => "auth",
            RouteClass::BackOffice => "back_office",
            RouteClass::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<RouteClass> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A token bucket: `per_second` on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Rate {
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000))]
    pub per_second: u32,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000))]
    pub burst: u32,
}

impl Rate {
    fn validate(&self, field: &str, errs: &mut ValidationErrors) {
        if self.per_second == 0 || self.per_second > MAX_RATE {
            errs.add(
                &format!("{field}.per_second"),
                format!("must be 1–{MAX_RATE}"),
            );
        }
        if self.burst == 0 || self.burst > MAX_RATE {
            errs.add(&format!("{field}.burst"), format!("must be 1–{MAX_RATE}"));
        }
    }

    /// The same rate spread over `nodes` (at least 1 per second and 1 burst): a fleet-wide
    /// rule enforced by each node alone while the shared limiter is unreachable.
    pub fn per_node(self, nodes: u32) -> Rate {
        let n = nodes.max(1);
        Rate {
            per_second: (self.per_second / n).max(1),
            burst: (self.burst / n).max(1),
        }
    }
}

/// How many requests one node works on at once, and how long one may wait for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Concurrency {
    /// In-flight requests per node; beyond it requests queue, then are shed (503 OVERLOADED).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100_000))]
    pub max_in_flight: u32,
    /// Of those, slots only settlement may use, so the order service is shed last.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 99_999))]
    pub settlement_reserved: u32,
    /// How long a request may wait for a slot before it is shed (0: shed at once).
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1_000))]
    pub queue_timeout_ms: u32,
}

/// The whole rule set. Per-route rules and the claim rules hold across the fleet (distributed
/// mode enforces them in Redis); `concurrency` is per node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FlowRules {
    /// Requests per second per route class (`claim`, `shopper`, `settlement`, `auth`,
    /// `back_office`, `other`); a class without a rule is not limited by rate.
    #[serde(default)]
    pub routes: BTreeMap<String, Rate>,
    /// Claims per user.
    #[serde(default)]
    pub claim_per_user: Option<Rate>,
    /// Claims per client IP.
    #[serde(default)]
    pub claim_per_ip: Option<Rate>,
    /// Claims per template ("hot parameter"): a hot sale cannot take every slot.
    #[serde(default)]
    pub claim_per_template: Option<Rate>,
    pub concurrency: Concurrency,
}

impl FlowRules {
    /// Every mistake in the set, named by its JSON path; `Ok` only when all of it is valid.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::new();
        for (name, rate) in &self.routes {
            if RouteClass::parse(name).is_none() {
                errs.add(
                    &format!("routes.{name}"),
                    format!(
                        "unknown route class; one of: {}",
                        RouteClass::ALL.map(RouteClass::as_str).join(", ")
                    ),
                );
            }
            rate.validate(&format!("routes.{name}"), &mut errs);
        }
        for (field, rule) in [
            ("claim_per_user", &self.claim_per_user),
            ("claim_per_ip", &self.claim_per_ip),
            ("claim_per_template", &self.claim_per_template),
        ] {
            if let Some(r) = rule {
                r.validate(field, &mut errs);
            }
        }
        let c = &self.concurrency;
        if c.max_in_flight == 0 || c.max_in_flight > MAX_IN_FLIGHT {
            errs.add(
                "concurrency.max_in_flight",
                format!("must be 1–{MAX_IN_FLIGHT}"),
            );
        }
        if c.settlement_reserved >= c.max_in_flight {
            errs.add(
                "concurrency.settlement_reserved",
                "must be less than max_in_flight (other routes need slots too)",
            );
        }
        if c.queue_timeout_ms > MAX_QUEUE_TIMEOUT_MS {
            errs.add(
                "concurrency.queue_timeout_ms",
                format!("must be 0–{MAX_QUEUE_TIMEOUT_MS}"),
            );
        }
        errs.finish(())
    }

    /// The rate rule of a route class, if any.
    pub fn route(&self, class: RouteClass) -> Option<Rate> {
        self.routes.get(class.as_str()).copied()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn valid() -> FlowRules {
        FlowRules {
            routes: BTreeMap::from([(
                "claim".to_owned(),
                Rate {
                    per_second: 100,
                    burst: 200,
                },
            )]),
            claim_per_user: Some(Rate {
                per_second: 10,
                burst: 10,
            }),
            claim_per_ip: None,
            claim_per_template: None,
            concurrency: Concurrency {
                max_in_flight: 1024,
                settlement_reserved: 64,
                queue_timeout_ms: 5,
            },
        }
    }

    #[test]
    fn a_sane_set_is_valid_and_roundtrips_through_json() {
        let r = valid();
        assert_eq!(r.validate(), Ok(()));
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<FlowRules>(&json).unwrap(), r);
    }

    #[test]
    fn every_mistake_is_reported_by_field() {
        let mut r = valid();
        r.routes.insert(
            "nope".into(),
            Rate {
                per_second: 1,
                burst: 1,
            },
        );
        r.claim_per_ip = Some(Rate {
            per_second: 0,
            burst: 5,
        });
        r.concurrency.settlement_reserved = 2000;
        r.concurrency.queue_timeout_ms = 5000;
        let errs = r.validate().unwrap_err();
        for f in [
            "routes.nope",
            "claim_per_ip.per_second",
            "concurrency.settlement_reserved",
            "concurrency.queue_timeout_ms",
        ] {
            assert!(errs.has(f), "{f}: {errs:?}");
        }
        assert_eq!(errs.as_slice().len(), 4);
    }

    #[test]
    fn unknown_members_are_refused() {
        let json = r#"{"concurrency":{"max_in_flight":1,"settlement_reserved":0,"queue_timeout_ms":0},"oops":1}"#;
        assert!(serde_json::from_str::<FlowRules>(json).is_err());
    }

    #[test]
    fn per_node_share_never_reaches_zero() {
        let r = Rate {
            per_second: 10,
            burst: 3,
        };
        assert_eq!(
            r.per_node(4),
            Rate {
                per_second: 2,
                burst: 1
            }
        );
        assert_eq!(r.per_node(0), r);
    }

    fn rate() -> impl Strategy<Value = Rate> {
        (0u32..=MAX_RATE + 10, 0u32..=MAX_RATE + 10)
            .prop_map(|(per_second, burst)| Rate { per_second, burst })
    }

    proptest! {
        /// A rate rule is valid exactly when both numbers are within 1..=MAX_RATE.
        #[test]
        fn rate_validity_matches_its_bounds(r in rate()) {
            let mut rules = valid();
            rules.claim_per_template = Some(r);
            let ok = (1..=MAX_RATE).contains(&r.per_second) && (1..=MAX_RATE).contains(&r.burst);
            prop_assert_eq!(rules.validate().is_ok(), ok);
        }

        /// Concurrency is valid exactly when the node has slots, settlement leaves some to
        /// others and the queue timeout stays short.
        #[test]
        fn concurrency_validity_matches_its_bounds(
            max in 0u32..=MAX_IN_FLIGHT + 10,
            reserved in 0u32..=MAX_IN_FLIGHT + 10,
            timeout in 0u32..=MAX_QUEUE_TIMEOUT_MS * 2,
        ) {
            let mut rules = valid();
            rules.concurrency = Concurrency { max_in_flight: max, settlement_reserved: reserved, queue_timeout_ms: timeout };
            let ok = (1..=MAX_IN_FLIGHT).contains(&max) && reserved < max && timeout <= MAX_QUEUE_TIMEOUT_MS;
            prop_assert_eq!(rules.validate().is_ok(), ok);
        }

        /// Only known route classes are accepted as per-route keys.
        #[test]
        fn route_keys_must_be_known(name in "[a-z_]{1,12}") {
            let mut rules = valid();
            rules.routes = BTreeMap::from([(name.clone(), Rate { per_second: 5, burst: 5 })]);
            prop_assert_eq!(rules.validate().is_ok(), RouteClass::parse(&name).is_some());
        }

        /// A valid set survives a JSON roundtrip unchanged (what the admin API and the store keep).
        #[test]
        fn valid_sets_roundtrip(per in 1u32..=MAX_RATE, burst in 1u32..=MAX_RATE, max in 1u32..=MAX_IN_FLIGHT) {
            let mut rules = valid();
            rules.claim_per_ip = Some(Rate { per_second: per, burst });
            rules.concurrency.max_in_flight = max;
            rules.concurrency.settlement_reserved = max - 1;
            prop_assert!(rules.validate().is_ok());
            let back: FlowRules = serde_json::from_str(&serde_json::to_string(&rules).unwrap()).unwrap();
            prop_assert_eq!(back, rules);
        }
    }
}
