//! Conformance suites: the behaviour every adapter of a port must show, written once against
//! the port's trait and run by each adapter's own tests.
//!
//! A suite is a module of scenarios (`async fn` taking a fixture) plus a macro that expands to
//! one `#[tokio::test]` per scenario. An adapter runs a whole suite with one line in its tests:
//!
//! ```ignore
//! /// Opens a fresh store, runs the scenario, cleans up even when it panics.
//! async fn run(scenario: impl AsyncFnOnce(&dyn StoreFixture)) { … }
//!
//! stampede_conformance::system_of_record_suite!(run);   // every storage port
//! stampede_conformance::hot_state_suite!(run_hot);       // the claim engine's hot state
//! ```
//!
//! A scenario added here runs on every adapter at once; an adapter added to the workspace gets
//! every scenario by adding one test file. What only one adapter can show (its sharding, its
//! schema, a crash injected between two of its statements) stays in that adapter's tests.
//!
//! Layout: `fixtures` (times, templates, claims and tasks every suite builds from), then one
//! module per port: `templates`, `accounts`, `coupons`, `claim_log`, `distributions`,
//! `settlements`, `reminders`, `flow_rules`, `hot_state`, `rate_limiter` (its own fixture: a
//! fresh limiter per scenario, `rate_limiter_suite!`), `login` (`login_attempts_suite!`).
//!
//! Panics are how a scenario fails, so `unwrap`/`expect` are allowed here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod accounts;
pub mod claim_log;
pub mod coupons;
pub mod distributions;
pub mod fixtures;
pub mod flow_rules;
pub mod hot_state;
pub mod login;
pub mod outbox;
pub mod rate_limiter;
pub mod reminders;
pub mod settlements;
pub mod templates;

use async_trait::async_trait;
use stampede_core::claim_ports::CouponStore;
use stampede_core::distribution_ports::DistributionStore;
use stampede_core::event_ports::OutboxStore;
use stampede_core::flow::FlowRuleStore;
use stampede_core::ports::{AccountStore, TemplateStore};
use stampede_core::reminder_ports::ReminderStore;
use stampede_core::settlement_ports::SettlementStore;
use std::sync::Arc;

/// A system of record: every storage port one adapter implements over one database.
pub trait SystemOfRecord:
    TemplateStore
    + AccountStore
    + CouponStore
    + DistributionStore
    + SettlementStore
    + ReminderStore
    + FlowRuleStore
    + OutboxStore
{
}

impl<T> SystemOfRecord for T where
    T: TemplateStore
        + AccountStore
        + CouponStore
        + DistributionStore
        + SettlementStore
        + ReminderStore
        + FlowRuleStore
        + OutboxStore
        + ?Sized
{
}

/// What a storage scenario runs against: a fresh, private store (its own file or databases).
#[async_trait]
pub trait StoreFixture: Send + Sync {
    /// The store under test (an `Arc` so scenarios can race it from spawned tasks).
    fn store(&self) -> Arc<dyn SystemOfRecord>;

    /// A second store over the same data, as a restarted process or another node opens it:
    /// nothing cached, migrations run again.
    async fn reopen(&self) -> Arc<dyn SystemOfRecord>;
}

/// Expands to one test per scenario of `$module`, each calling `$run(scenario)`.
#[doc(hidden)]
#[macro_export]
macro_rules! __scenarios {
    ($run:path; $module:ident; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $run($crate::$module::$name).await;
            }
        )+
    };
}

/// Every storage suite (templates, accounts, coupons, distributions, settlements, reminders,
/// flow rules, the outbox relay's reads),
/// each in a module of its own; `$run` takes `impl AsyncFnOnce(&dyn StoreFixture)`.
#[macro_export]
macro_rules! system_of_record_suite {
    ($run:path) => {
        $crate::template_store_suite!($run);
        $crate::account_store_suite!($run);
        $crate::coupon_store_suite!($run);
        $crate::distribution_store_suite!($run);
        $crate::settlement_store_suite!($run);
        $crate::reminder_store_suite!($run);
        $crate::flow_rule_store_suite!($run);
        $crate::outbox_store_suite!($run);
    };
}
