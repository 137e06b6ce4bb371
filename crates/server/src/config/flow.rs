//! Settings of flow control: the default rule set (used until an admin saves one through
//! `PUT /api/v1/admin/flow-rules`), and how the rules are enforced and kept in step.
//!
//! The per-user claim rule's defaults stay where they always were,
//! `engine.claim_rate_per_user` / `engine.claim_burst_per_user`.

use super::{EngineSettings, units};
use serde::{Deserialize, Serialize};
use stampede_domain::flow::{Concurrency, FlowRules, Rate};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowSettings {
    /// Requests one node works on at once; beyond it they queue, then are shed with 503
    /// `OVERLOADED`. Default 1024.
    pub max_in_flight: u32,
    /// Of those, slots only settlement (the order service) may use, so it is shed last.
    /// Default 64.
    pub settlement_reserved: u32,
    /// How long a request may wait for a slot before it is shed. Default 5 ms.
    pub queue_timeout_ms: u32,
    /// Claims per client IP per second (0 = off). Default 0.
    pub claim_per_ip_per_sec: u32,
    /// Burst of the per-IP rule (0: the rate).
    pub claim_per_ip_burst: u32,
    /// Claims per template per second, fleet-wide (0 = off). Default 0.
    pub claim_per_template_per_sec: u32,
    /// Burst of the per-template rule (0: the rate).
    pub claim_per_template_burst: u32,
    /// Requests per second per route class (`[flow.routes.claim] per_second = …, burst = …`;
    /// classes `claim`, `shopper`, `settlement`, `auth`, `back_office`, `other`). Default none.
    pub routes: BTreeMap<String, Rate>,
    /// How long the fleet-wide (Redis) limiter may take before the node limits alone.
    /// Default 20 ms.
    #[serde(rename = "redis_deadline_ms", with = "units::millis")]
    pub redis_deadline: Duration,
    /// Nodes expected in the fleet: while Redis is unreachable each node enforces every rule
    /// divided by this (1: the whole rule per node). Default 1.
    pub fallback_nodes: u32,
    /// How often a node checks the stored rules' version. Default 500 ms.
    #[serde(rename = "poll_interval_ms", with = "units::millis")]
    pub poll_interval: Duration,
    /// Take the client IP from the first `X-Forwarded-For` entry (only behind a proxy that
    /// sets it). Default false: the peer address.
    pub trust_forwarded_for: bool,
}

impl Default for FlowSettings {
    fn default() -> Self {
        Self {
            max_in_flight: 1_024,
            settlement_reserved: 64,
            queue_timeout_ms: 5,
            claim_per_ip_per_sec: 0,
            claim_per_ip_burst: 0,
            claim_per_template_per_sec: 0,
            claim_per_template_burst: 0,
            routes: BTreeMap::new(),
            redis_deadline: Duration::from_millis(20),
            fallback_nodes: 1,
            poll_interval: Duration::from_millis(500),
            trust_forwarded_for: false,
        }
    }
}

fn rate(per_second: u32, burst: u32) -> Option<Rate> {
    (per_second > 0).then_some(Rate {
        per_second,
        burst: if burst == 0 { per_second } else { burst },
    })
}

impl FlowSettings {
    /// The configured rule set (what applies until an admin saves one).
    pub fn rules(&self, engine: &EngineSettings) -> FlowRules {
        FlowRules {
            routes: self.routes.clone(),
            claim_per_user: rate(engine.claim_rate_per_user, engine.claim_burst_per_user),
            claim_per_ip: rate(self.claim_per_ip_per_sec, self.claim_per_ip_burst),
            claim_per_template: rate(
                self.claim_per_template_per_sec,
                self.claim_per_template_burst,
            ),
            concurrency: Concurrency {
                max_in_flight: self.max_in_flight,
                settlement_reserved: self.settlement_reserved,
                queue_timeout_ms: self.queue_timeout_ms,
            },
        }
    }

    pub(super) fn check(&self, engine: &EngineSettings) -> anyhow::Result<()> {
        if let Err(errs) = self.rules(engine).validate() {
            let list: Vec<String> = errs
                .as_slice()
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect();
            anyhow::bail!("invalid [flow] rules: {}", list.join("; "));
        }
        if self.redis_deadline.is_zero() || self.poll_interval.is_zero() {
            anyhow::bail!("flow.redis_deadline_ms and flow.poll_interval_ms must be positive");
        }
        if self.fallback_nodes == 0 {
            anyhow::bail!("flow.fallback_nodes must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_take_the_per_user_rule_from_engine() {
        let f = FlowSettings::default();
        let e = EngineSettings::default();
        assert!(f.check(&e).is_ok());
        let r = f.rules(&e);
        assert_eq!(
            r.claim_per_user,
            Some(Rate {
                per_second: 10,
                burst: 10
            })
        );
        assert_eq!(r.claim_per_ip, None);
    }

    #[test]
    fn a_bad_rule_is_refused_with_its_field() {
        let f = FlowSettings {
            settlement_reserved: 5_000,
            ..FlowSettings::default()
        };
        let Err(err) = f.check(&EngineSettings::default()) else {
            panic!("accepted a reserve larger than the node");
        };
        let err = err.to_string();
        assert!(err.contains("concurrency.settlement_reserved"), "{err}");
    }
}
