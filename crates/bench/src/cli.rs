//! The command line: the subcommands and the flags they share (the server, the load, the
//! secret). Each scenario's own flags are declared once, on its options struct
//! (`ClaimSetup`, `DistributionOptions`, …), and flattened in here; doc comments are the
//! `--help` text.

use crate::auth;
use crate::claim::ClaimSetup;
use crate::client::Target;
use crate::discovery::DiscoverySetup;
use crate::distribution::DistributionOptions;
use crate::hot_rebuild::HotRebuildOptions;
use crate::load::LoadOptions;
use crate::lock_redeem::LockRedeemSetup;
use crate::overload::OverloadOptions;
use crate::quote::QuoteSetup;
use crate::redis_ceiling::RedisOptions;
use crate::reminders::RemindersOptions;
use clap::{Args, Parser, Subcommand};
use stampede_domain::ids::ShopId;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "stampede-bench",
    version,
    about = "Load generator for a running Stampede server (healthz ceiling, claims, \
             distribution, checkout quotes, lock+redeem, reminders, Redis ceiling)",
    long_about = "Load generator for an already running Stampede server.\n\n\
        NOTE: on a small machine this tool competes with the server for the same cores. It \
        runs on one thread by default (--threads); its own CPU use is reported as `bench CPU` \
        next to the server's (--server-pid). Compare scenarios against the healthz ceiling \
        measured the same way (--compare-healthz).\n\n\
        Output: a table, then one line of JSON with the same numbers as the last line of \
        stdout. Counts: requests = successes (2xx) + errors (non-2xx answers and transport \
        failures)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// GET /healthz: the HTTP ceiling of the server under this tool.
    Healthz {
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Flash-sale claims: POST /api/v1/templates/{id}/claim for random (user, template) pairs.
    Claim {
        #[command(flatten)]
        load: LoadArgs,
        #[command(flatten)]
        claim: ClaimSetup,
    },
    /// Checkout quotes: POST /api/v1/checkout/quote for random users holding 50 coupons each
    /// (3 shops + platform) with 5-item carts.
    Quote {
        #[command(flatten)]
        load: LoadArgs,
        #[command(flatten)]
        quote: QuoteSetup,
    },
    /// Product pages: GET /api/v1/goods/{id}/templates?shop_id= for random users and
    /// products over many shops (10,000 × 20 templates by default), with the server's
    /// discovery database queries counted over the window.
    Discovery {
        #[command(flatten)]
        load: LoadArgs,
        #[command(flatten)]
        discovery: DiscoverySetup,
    },
    /// Lock one coupon for a fresh order, then redeem it: one pair per request, timed
    /// together. Stops early when the setup's coupons are all spent.
    LockRedeem {
        #[command(flatten)]
        load: LoadArgs,
        #[command(flatten)]
        lock_redeem: LockRedeemSetup,
    },
    /// One bulk distribution of a file of user ids, timed to `completed`, with the server's
    /// memory and CPU, and optionally the database's bulk-insert ceiling.
    Distribution(DistributionArgs),
    /// Webhook reminders before a sale: seeded through the API, counted by a sink in this
    /// tool once due, with the server's memory, and optionally the database's insert ceiling.
    Reminders(RemindersArgs),
    /// Overload: finds the node's claim capacity, then offers 10× that on 1,000 connections
    /// with settlement calls beside it; reports admitted and refused latency, answers by
    /// status, the server's peak RSS and whether settlement still succeeded.
    Overload(OverloadArgs),
    /// redis-benchmark with a claim-like Lua (2x HINCRBY + XADD; an approximation of the
    /// claim script's cost). Skipped when redis-benchmark or Redis is missing.
    RedisCeiling(RedisOptions),
    /// Hot state at scale: a template with millions of holders written into a fresh SQLite
    /// store, then the embedded hot state rebuilt from it as after a restart (time, memory).
    HotRebuild(HotRebuildOptions),
    /// A bare axum hello-world serving GET /healthz (what `--compare-bare-axum` runs as a
    /// child process); prints `listening on ADDR` once bound.
    #[command(hide = true)]
    BareAxum {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Also answer every other GET with a fixed JSON body of this many bytes.
        #[arg(long)]
        page_bytes: Option<usize>,
    },
}

/// The flags of the load scenarios (healthz, claim, quote, lock-redeem).
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The server's base URL (http only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub base: String,
    #[command(flatten)]
    pub load: LoadOptions,
    /// Runtime threads of this tool (1 = current-thread runtime). It competes with the server
    /// for the same cores.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// The server's process id: report its peak (VmHWM) and current RSS and its CPU use.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Run the healthz ceiling right after with the same load and print both with the ratio.
    #[arg(long)]
    pub compare_healthz: bool,
    /// Find the highest open-loop rate whose p99 stays within this many milliseconds (no
    /// errors, schedule kept): doubles from `--rate` (default 1000) until a run misses, then
    /// bisects to within 5 %; each run lasts `--duration` after `--warmup`.
    #[arg(long, value_name = "P99_MS", conflicts_with_all = ["compare_healthz", "compare_bare_axum"])]
    pub find_rate: Option<f64>,
    /// Also run the same load against a bare axum hello-world (`GET /healthz`, started by
    /// this tool as a child process with the server's runtime shape) and print the ratio.
    #[arg(long)]
    pub compare_bare_axum: bool,
    /// Also run the same requests against a bare axum server that answers every one with
    /// a fixed JSON body of this many bytes and does nothing else: what any server can
    /// reach for answers of that size on this machine (e.g. 9912 for a product page).
    #[arg(long, value_name = "BYTES", conflicts_with_all = ["compare_bare_axum", "find_rate"])]
    pub compare_bare_page: Option<usize>,
    /// The server's JWT secret (claim, quote, lock-redeem).
    #[arg(long, env = "STAMPEDE_AUTH__JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// The embedded server's data dir: its generated secret is DIR/jwt-secret (claim, quote,
    /// lock-redeem).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl LoadArgs {
    /// The JWT secret (only the scenarios with a setup need it).
    pub fn secret(&self) -> anyhow::Result<Vec<u8>> {
        auth::read_secret(self.jwt_secret.as_deref(), self.data_dir.as_deref())
    }
}

/// The server a one-shot scenario (distribution, reminders) runs against.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The server's base URL (http only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub base: String,
    /// The server's JWT secret.
    #[arg(long, env = "STAMPEDE_AUTH__JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// The embedded server's data dir: its generated secret is DIR/jwt-secret.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The server's process id: its RSS (sampled), peak RSS and CPU over the run.
    #[arg(long)]
    pub server_pid: u32,
}

impl ServerArgs {
    /// The resolved server and its JWT secret.
    pub async fn connect(&self) -> anyhow::Result<(Target, Vec<u8>)> {
        let target = Target::resolve(&self.base).await?;
        let secret = auth::read_secret(self.jwt_secret.as_deref(), self.data_dir.as_deref())?;
        Ok((target, secret))
    }
}

#[derive(Debug, Args)]
pub struct DistributionArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub distribution: DistributionOptions,
}

impl DistributionArgs {
    /// The scenario's options with the server's pid.
    pub fn options(&self) -> DistributionOptions {
        DistributionOptions {
            server_pid: self.server.server_pid,
            ..self.distribution.clone()
        }
    }
}

#[derive(Debug, Args)]
pub struct RemindersArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub reminders: RemindersOptions,
    /// Runtime threads of this tool (1 = current-thread runtime); the sink runs on them too.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

impl RemindersArgs {
    /// The scenario's options with the server's pid.
    pub fn options(&self) -> RemindersOptions {
        RemindersOptions {
            server_pid: self.server.server_pid,
            ..self.reminders.clone()
        }
    }
}

#[derive(Debug, Args)]
pub struct OverloadArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub overload: OverloadOptions,
    /// Runtime threads of this tool (1 = current-thread runtime).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

/// A duration flag: `10s`, `500ms`, `1m`, …
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = s
        .parse()
        .map_err(|e| format!("not a duration (try 10s, 500ms, 1m): {e}"))?;
    Duration::try_from(d).map_err(|_| "must not be negative".to_owned())
}

/// A shop id flag: a positive integer.
pub fn parse_shop(s: &str) -> Result<ShopId, String> {
    ShopId::parse(s).ok_or_else(|| "expected a positive integer".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Scenario, clap::Error> {
        let argv = std::iter::once("stampede-bench").chain(args.iter().copied());
        Ok(Cli::try_parse_from(argv)?.scenario)
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn load_defaults() -> anyhow::Result<()> {
        let Scenario::Quote { load, quote } = parse(&["quote", "--setup-in-flight", "7"])? else {
            anyhow::bail!("not quote");
        };
        assert_eq!(load.base, "http://127.0.0.1:8080");
        assert_eq!(load.load.connections, 50);
        assert_eq!(load.load.duration, Duration::from_secs(10));
        assert_eq!(load.load.warmup, Duration::from_secs(2));
        assert_eq!((load.load.rate, load.threads), (None, 1));
        assert_eq!(
            (quote.users, quote.first_user, quote.carts),
            (1_000, 1_000_001, 8)
        );
        assert_eq!(quote.in_flight, 7);
        Ok(())
    }

    #[test]
    fn the_server_pid_reaches_the_options() -> anyhow::Result<()> {
        let Scenario::Reminders(a) = parse(&["reminders", "--server-pid", "42", "--lead", "1m"])?
        else {
            anyhow::bail!("not reminders");
        };
        let o = a.options();
        assert_eq!((o.server_pid, o.lead), (42, Duration::from_secs(60)));
        assert_eq!((o.reminders, o.in_flight, a.threads), (1_000_000, 128, 1));
        let Scenario::Distribution(a) = parse(&["distribution", "--server-pid", "7"])? else {
            anyhow::bail!("not distribution");
        };
        assert_eq!((a.options().server_pid, a.options().rows), (7, 1_000_000));
        assert!(
            parse(&["distribution"]).is_err(),
            "--server-pid is required"
        );
        Ok(())
    }

    #[test]
    fn overload_defaults() -> anyhow::Result<()> {
        let Scenario::Overload(a) = parse(&["overload", "--server-pid", "9"])? else {
            anyhow::bail!("not overload");
        };
        let o = &a.overload;
        assert_eq!(
            (a.server.server_pid, o.connections, o.factor),
            (9, 1_000, 10.0)
        );
        assert_eq!(o.probe_duration, Duration::from_secs(5));
        Ok(())
    }

    #[test]
    fn redis_flags() -> anyhow::Result<()> {
        let Scenario::RedisCeiling(o) = parse(&["redis-ceiling", "-n", "10"])? else {
            anyhow::bail!("not redis-ceiling");
        };
        assert_eq!(
            (o.host.as_str(), o.port, o.requests),
            ("127.0.0.1", 6379, 10)
        );
        assert_eq!(o.timeout, Duration::from_secs(600));
        Ok(())
    }

    #[test]
    fn durations_and_shops() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_shop("0").is_err());
        assert_eq!(parse_shop("3").map(|s| s.to_string()), Ok("3".to_owned()));
    }
}
