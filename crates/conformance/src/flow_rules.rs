//! `FlowRuleStore`: nothing stored until the first save, each save bumps the version by one,
//! and the rules come back as saved, also to a reopened store (a restart or another node).

use crate::StoreFixture;
use crate::fixtures::*;
use stampede_domain::flow::{Concurrency, FlowRules, Rate};
use std::collections::BTreeMap;

/// Runs every `FlowRuleStore` scenario; see the crate docs.
#[macro_export]
macro_rules! flow_rule_store_suite {
    ($run:path) => {
        mod flow_rule_store {
            #[allow(unused_imports)]
            use super::*;
            $crate::__scenarios!($run; flow_rules;
                nothing_is_stored_until_the_first_save,
                saves_bump_the_version_and_survive_a_reopen,
            );
        }
    };
}

/// A rule set whose numbers depend on `n`, so two saves are told apart.
pub fn rules(n: u32) -> FlowRules {
    FlowRules {
        routes: BTreeMap::from([(
            "claim".to_owned(),
            Rate {
                per_second: 100 + n,
                burst: 200,
            },
        )]),
        claim_per_user: Some(Rate {
            per_second: 5,
            burst: 5 + n,
        }),
        claim_per_ip: None,
        claim_per_template: Some(Rate {
            per_second: 1_000,
            burst: 1_000,
        }),
        concurrency: Concurrency {
            max_in_flight: 512,
            settlement_reserved: 32,
            queue_timeout_ms: 5,
        },
    }
}

pub async fn nothing_is_stored_until_the_first_save(f: &dyn StoreFixture) {
    let s = f.store();
    assert_eq!(s.flow_rules().await.unwrap(), None);
    assert_eq!(s.flow_rules_version().await.unwrap(), 0);
}

pub async fn saves_bump_the_version_and_survive_a_reopen(f: &dyn StoreFixture) {
    let s = f.store();
    assert_eq!(s.save_flow_rules(&rules(1), now()).await.unwrap(), 1);
    assert_eq!(s.save_flow_rules(&rules(2), now()).await.unwrap(), 2);
    assert_eq!(s.flow_rules_version().await.unwrap(), 2);
    let stored = s.flow_rules().await.unwrap().unwrap();
    assert_eq!((stored.version, &stored.rules), (2, &rules(2)));
    assert_eq!(stored.updated_at, now());

    let other = f.reopen().await;
    assert_eq!(other.flow_rules_version().await.unwrap(), 2);
    assert_eq!(other.flow_rules().await.unwrap().unwrap().rules, rules(2));
    assert_eq!(other.save_flow_rules(&rules(3), now()).await.unwrap(), 3);
    assert_eq!(s.flow_rules().await.unwrap().unwrap().rules, rules(3));
}
