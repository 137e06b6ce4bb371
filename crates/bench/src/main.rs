//! `stampede-bench`: a load generator for an already running (release-built) Stampede server.
//!
//! Scenarios:
//! - `healthz` — `GET /healthz`: the HTTP ceiling of the same server under the same tool.
//! - `claim` — creates `--templates` templates through the back-office API with an admin
//!   token, mints `--users` user tokens (both signed with the server's JWT secret:
//!   `--jwt-secret`, env `STAMPEDE_AUTH__JWT_SECRET`, or `--data-dir DIR` to read
//!   `DIR/jwt-secret`, the embedded server's generated secret), then fires
//!   `POST /api/v1/templates/{id}/claim` for random (user, template) pairs.
//! - `distribution` — one bulk distribution: generates a file of `--rows` user ids with
//!   `stampede gen users` (or takes `--file`), creates a template with a merchant token,
//!   uploads the file (`POST /api/v1/merchant/distributions`) and polls the task until it is
//!   `completed`, timing upload and end-to-end wall time while sampling the server's RSS and
//!   CPU (`--server-pid`, required). `--ceiling sqlite:DIR | mysql:URL` then measures the raw
//!   bulk-insert ceiling of the same database (same `user_coupons` schema, server-like
//!   batches) and prints it next to the distribution's rows/s. Exits non-zero unless the task
//!   completed.
//! - `quote` — `POST /api/v1/checkout/quote` for random users with 5-item carts over 3 shops.
//!   Setup: 50 templates (15 per shop 1–3 of mixed kinds — fixed, threshold, percent, some
//!   scoped to goods — and 5 platform templates), and every one of `--users` users (default
//!   1,000, from `--first-user`) claims one coupon of each, `--setup-in-flight` (32) at a time;
//!   then one quote per cart for the first user must list its 50 coupons, some available,
//!   with a positive best discount, or the run fails.
//! - `lock-redeem` — each request is a pair on one connection: lock one unused coupon of a
//!   user for a fresh order `b-<run>-<n>` (`POST /api/v1/orders/{id}/coupons/lock`), then
//!   redeem it (`…/redeem`, body `{}`); latency is the pair's. Setup: `--users` users claim
//!   `--coupons-per-user` (default 100; ≤ 500) coupons of shop-1 fixed templates, then each
//!   user's last coupon is probe-locked and released until the persister has stored it.
//!   A redeemed coupon is spent: the run supports `users × coupons-per-user` pairs (warmup
//!   included; 100,000 by default) and stops early, saying so, when they are all spent.
//!
//!   Both settlement scenarios claim as users: run the server with
//!   `STAMPEDE_ENGINE__CLAIM_RATE_PER_USER=0` (the per-user claim limit off; that is how
//!   they are meant to be measured). Against a limited server the setup still completes,
//!   more slowly: 429s are retried after a pause and counted.
//! - `reminders` — webhook reminders before a sale, delivered when due. A sink in this tool
//!   (`--sink-listen`, default 127.0.0.1:18099, answering 204 to `POST /hook`) counts the
//!   distinct `dedupe_id`s, duplicates and the lag from `remind_at`; the server must be started
//!   with `STAMPEDE_REMINDER__WEBHOOK_URL=http://127.0.0.1:18099/hook`. Setup: a merchant
//!   (shop 1) template whose claim starts `60 min + --lead` (150 s) from now, then
//!   `--reminders` users (1,000,000, from `--first-user`) each `PUT` a webhook reminder 60 min
//!   before it, `--setup-in-flight` (128) at a time. Then it waits until every reminder has
//!   arrived (or `--timeout` after the due time) sampling the server's RSS (`--server-pid`,
//!   required), and reports the seeding rate, the time from the due time to the last delivery
//!   (the target: ≤ 30 s for 1M), deliveries/s, duplicates, lag percentiles and the server's
//!   memory, with `--ceiling` as in `distribution`. Exits non-zero unless all were delivered.
//! - `redis-ceiling` — `redis-benchmark` running a claim-like Lua (an approximation of the
//!   claim script's cost); skipped when redis-benchmark or Redis is missing.
//!
//! Load: closed loop (`--connections C` keep-alive HTTP/1.1 connections sending back to back)
//! or open loop (`--rate R` requests/s on a fixed schedule, latency measured from the
//! scheduled send time so a stalled server cannot hide — no coordinated omission), after a
//! `--warmup`, for `--duration`. `--compare-healthz` runs the healthz ceiling right after with
//! the same load and prints both side by side with the ratio.
//!
//! Output: a table on stdout, then one line of JSON with the same numbers as the last line
//! (progress goes to stderr). Example:
//!
//! ```text
//! stampede-bench claim --data-dir ./data --server-pid $(pgrep -n stampede) \
//!     --users 10000 --templates 10 --stock 1000000 --limit 1 \
//!     --connections 64 --duration 10s --compare-healthz
//! stampede-bench healthz --rate 20000 --connections 200 --duration 30s
//! stampede-bench distribution --base http://127.0.0.1:8080 --data-dir ./data \
//!     --server-pid $(pgrep -n stampede) --rows 1000000 --format csv \
//!     --ceiling sqlite:/tmp/ceiling        # or --ceiling mysql:mysql://root@127.0.0.1:3306
//! stampede-bench redis-ceiling
//!
//! # settlement: embedded server with the claim limit off
//! rm -rf /tmp/bq && STAMPEDE_ENGINE__CLAIM_RATE_PER_USER=0 \
//!     ./target/release/stampede serve --data-dir /tmp/bq --listen 127.0.0.1:18097 &
//! stampede-bench quote --base http://127.0.0.1:18097 --data-dir /tmp/bq \
//!     --server-pid $(pgrep -n stampede) --users 1000 \
//!     --connections 64 --duration 10s --warmup 2s --compare-healthz
//! stampede-bench lock-redeem --base http://127.0.0.1:18097 --data-dir /tmp/bq \
//!     --server-pid $(pgrep -n stampede) --users 1000 --coupons-per-user 100 \
//!     --connections 64 --duration 10s --warmup 2s
//!
//! # reminders: the server posts due reminders to the tool's sink
//! rm -rf /tmp/br && STAMPEDE_REMINDER__WEBHOOK_URL=http://127.0.0.1:18099/hook \
//!     STAMPEDE_REMINDER__WEBHOOK_BATCH=1000 \
//!     ./target/release/stampede serve --data-dir /tmp/br --listen 127.0.0.1:18098 &
//! stampede-bench reminders --base http://127.0.0.1:18098 --data-dir /tmp/br \
//!     --server-pid $(pgrep -n stampede) --reminders 1000000 --lead 150s \
//!     --ceiling sqlite:/tmp/ceiling
//! ```
//!
//! The tool shares the machine's cores with the server: it runs on one thread by default
//! (`--threads`) and reports its own CPU use next to the server's.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use stampede_bench::auth;
use stampede_bench::claim::{self, ClaimSetup};
use stampede_bench::client::Target;
use stampede_bench::distribution::{self, DistributionOptions, FileFormat};
use stampede_bench::insert_ceiling::Ceiling;
use stampede_bench::load::{LoadOptions, Workload};
use stampede_bench::lock_redeem::{self, LockRedeemSetup};
use stampede_bench::quote::{self, QuoteSetup};
use stampede_bench::redis_ceiling::{self, RedisOptions};
use stampede_bench::reminders::{self, RemindersOptions};
use stampede_bench::report::Report;
use stampede_bench::{healthz_mix, measure};
use stampede_domain::ids::ShopId;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
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
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
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
        claim: ClaimArgs,
    },
    /// Checkout quotes: POST /api/v1/checkout/quote for random users holding 50 coupons each
    /// (3 shops + platform) with 5-item carts.
    Quote {
        #[command(flatten)]
        load: LoadArgs,
        #[command(flatten)]
        quote: QuoteArgs,
    },
    /// Lock one coupon for a fresh order, then redeem it: one pair per request, timed
    /// together. Stops early when the setup's coupons are all spent.
    LockRedeem {
        #[command(flatten)]
        load: LoadArgs,
        #[command(flatten)]
        lock_redeem: LockRedeemArgs,
    },
    /// One bulk distribution of a file of user ids, timed to `completed`, with the server's
    /// memory and CPU, and optionally the database's bulk-insert ceiling.
    Distribution(DistributionArgs),
    /// Webhook reminders before a sale: seeded through the API, counted by a sink in this
    /// tool once due, with the server's memory, and optionally the database's insert ceiling.
    Reminders(RemindersArgs),
    /// redis-benchmark with a claim-like Lua (2x HINCRBY + XADD; an approximation of the
    /// claim script's cost). Skipped when redis-benchmark or Redis is missing.
    RedisCeiling(RedisArgs),
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// The server's base URL (http only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    base: String,
    /// Keep-alive connections; each carries one request at a time. In open-loop mode this caps
    /// the requests in flight.
    #[arg(long, short = 'c', default_value_t = 50)]
    connections: usize,
    /// Measurement window (e.g. 10s, 500ms, 1m).
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Load applied before the window, not counted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Open loop: requests per second on a fixed schedule (default: closed loop).
    #[arg(long, short = 'r')]
    rate: Option<f64>,
    /// Per-request timeout, connect included.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Runtime threads of this tool (1 = current-thread runtime). It competes with the server
    /// for the same cores.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The server's process id: report its peak (VmHWM) and current RSS and its CPU use.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Run the healthz ceiling right after with the same load and print both with the ratio.
    #[arg(long)]
    compare_healthz: bool,
    /// The server's JWT secret (claim, quote, lock-redeem).
    #[arg(long, env = "STAMPEDE_AUTH__JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// The embedded server's data dir: its generated secret is DIR/jwt-secret (claim, quote,
    /// lock-redeem).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ClaimArgs {
    /// Simulated users (one token each).
    #[arg(long, default_value_t = 10_000)]
    users: u64,
    /// First user id (users are consecutive ids).
    #[arg(long, default_value_t = 1)]
    first_user: u64,
    /// Templates created for the run.
    #[arg(long, default_value_t = 10)]
    templates: u64,
    /// Stock of each template (1..=20,000,000).
    #[arg(long, default_value_t = 1_000_000)]
    stock: u64,
    /// Per-user limit of each template (1..=100).
    #[arg(long, default_value_t = 1)]
    limit: u64,
}

#[derive(Debug, Args)]
struct QuoteArgs {
    /// Simulated users; each claims 50 coupons in the setup.
    #[arg(long, default_value_t = 1_000)]
    users: u64,
    /// First user id (users are consecutive ids; apart from the other scenarios' by default).
    #[arg(long, default_value_t = 1_000_001)]
    first_user: u64,
    /// Distinct 5-item carts the requests draw from.
    #[arg(long, default_value_t = 8)]
    carts: usize,
    /// Setup requests (claims) in flight.
    #[arg(long, default_value_t = 32)]
    setup_in_flight: usize,
}

#[derive(Debug, Args)]
struct LockRedeemArgs {
    /// Simulated users. Pairs available: users x coupons-per-user.
    #[arg(long, default_value_t = 1_000)]
    users: u64,
    /// First user id (users are consecutive ids; apart from the other scenarios' by default).
    #[arg(long, default_value_t = 2_000_001)]
    first_user: u64,
    /// Coupons each user claims in the setup (1..=500): one pair each.
    #[arg(long, default_value_t = 100)]
    coupons_per_user: u32,
    /// Setup requests (claims, probes) in flight.
    #[arg(long, default_value_t = 32)]
    setup_in_flight: usize,
}

/// The server a one-shot scenario (distribution, reminders) runs against.
#[derive(Debug, Args)]
struct ServerArgs {
    /// The server's base URL (http only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    base: String,
    /// The server's JWT secret.
    #[arg(long, env = "STAMPEDE_AUTH__JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// The embedded server's data dir: its generated secret is DIR/jwt-secret.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The server's process id: its RSS (sampled), peak RSS and CPU over the run.
    #[arg(long)]
    server_pid: u32,
}

#[derive(Debug, Args)]
struct DistributionArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Rows of the generated file.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Format of the generated file.
    #[arg(long, value_enum, default_value_t = FileFormat::Csv)]
    format: FileFormat,
    /// Upload this file instead of generating one (its format is read from its content).
    #[arg(long)]
    file: Option<PathBuf>,
    /// The `stampede` binary that generates the file (`stampede gen users`).
    #[arg(long, default_value = "./target/release/stampede")]
    stampede_bin: PathBuf,
    /// The template's stock (default: --rows).
    #[arg(long)]
    stock: Option<u64>,
    /// The merchant's shop.
    #[arg(long, default_value = "1", value_parser = parse_shop)]
    shop_id: ShopId,
    /// Also measure the database's bulk-insert ceiling: sqlite:DIR (a fresh file in DIR) or
    /// mysql:URL (a scratch database on that server, dropped afterwards).
    #[arg(long)]
    ceiling: Option<Ceiling>,
    /// How often the task is read.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    poll_interval: Duration,
    /// Give up when the task has not finished this long after the upload started.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    timeout: Duration,
}

#[derive(Debug, Args)]
struct RemindersArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Reminders, one per user (users are consecutive ids from --first-user).
    #[arg(long, default_value_t = 1_000_000)]
    reminders: u64,
    /// First user id.
    #[arg(long, default_value_t = 1)]
    first_user: u64,
    /// The reminders fall due this long after the template is created (its claim starts
    /// 60 min + lead from now); the seeding has to finish before.
    #[arg(long, default_value = "150s", value_parser = parse_duration)]
    lead: Duration,
    /// Setup requests (reminder PUTs) in flight, each on its own keep-alive connection.
    #[arg(long, default_value_t = 128)]
    setup_in_flight: usize,
    /// Where the webhook sink listens: start the server with
    /// STAMPEDE_REMINDER__WEBHOOK_URL=http://ADDR/hook.
    #[arg(long, default_value = "127.0.0.1:18099")]
    sink_listen: SocketAddr,
    /// The merchant's shop.
    #[arg(long, default_value = "1", value_parser = parse_shop)]
    shop_id: ShopId,
    /// Also measure the database's bulk-insert ceiling with as many rows: sqlite:DIR or
    /// mysql:URL (as in `distribution`).
    #[arg(long)]
    ceiling: Option<Ceiling>,
    /// Give up when not every reminder has arrived this long after the due time.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    timeout: Duration,
    /// Keep the sink open this long after the last reminder to count late duplicates.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    settle: Duration,
    /// Runtime threads of this tool (1 = current-thread runtime); the sink runs on them too.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn parse_shop(s: &str) -> Result<ShopId, String> {
    ShopId::parse(s).ok_or_else(|| "expected a positive integer".to_owned())
}

#[derive(Debug, Args)]
struct RedisArgs {
    #[arg(long, default_value = "127.0.0.1")]
    redis_host: String,
    #[arg(long, default_value_t = 6379)]
    redis_port: u16,
    /// redis-benchmark -n
    #[arg(long, short = 'n', default_value_t = 200_000)]
    requests: u64,
    /// redis-benchmark -c
    #[arg(long, default_value_t = 50)]
    clients: u64,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = s
        .parse()
        .map_err(|e| format!("not a duration (try 10s, 500ms, 1m): {e}"))?;
    Duration::try_from(d).map_err(|_| "must not be negative".to_owned())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stampede-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.scenario {
        Scenario::RedisCeiling(a) => {
            let report = redis_ceiling::run(&RedisOptions {
                host: a.redis_host,
                port: a.redis_port,
                requests: a.requests,
                clients: a.clients,
                timeout: Duration::from_secs(600),
            })?;
            print!("{}", report.to_text());
            println!(
                "{}",
                serde_json::to_string(&report).context("encoding the summary")?
            );
            Ok(())
        }
        Scenario::Distribution(a) => runtime(1)?.block_on(distribution_scenario(a)),
        Scenario::Reminders(a) => runtime(a.threads)?.block_on(reminders_scenario(a)),
        Scenario::Healthz { load } => {
            runtime(load.threads)?.block_on(load_scenario(load, Setup::Healthz))
        }
        Scenario::Claim { load, claim } => {
            runtime(load.threads)?.block_on(load_scenario(load, Setup::Claim(claim)))
        }
        Scenario::Quote { load, quote } => {
            runtime(load.threads)?.block_on(load_scenario(load, Setup::Quote(quote)))
        }
        Scenario::LockRedeem { load, lock_redeem } => {
            runtime(load.threads)?.block_on(load_scenario(load, Setup::LockRedeem(lock_redeem)))
        }
    }
}

/// What a load scenario sets up before its load phase.
enum Setup {
    Healthz,
    Claim(ClaimArgs),
    Quote(QuoteArgs),
    LockRedeem(LockRedeemArgs),
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    rt.context("starting the async runtime")
}

async fn distribution_scenario(a: DistributionArgs) -> anyhow::Result<()> {
    let target = Target::resolve(&a.server.base).await?;
    let secret = auth::read_secret(a.server.jwt_secret.as_deref(), a.server.data_dir.as_deref())?;
    let opts = DistributionOptions {
        rows: a.rows,
        format: a.format,
        file: a.file,
        stampede_bin: a.stampede_bin,
        stock: a.stock,
        shop_id: a.shop_id,
        server_pid: a.server.server_pid,
        ceiling: a.ceiling,
        poll_interval: a.poll_interval,
        timeout: a.timeout,
    };
    let report = distribution::run(&target, &secret, &opts).await?;
    print!("{}", report.to_table());
    println!("{}", report.to_json_line());
    if report.status != "completed" {
        anyhow::bail!(
            "task {} ended {}{}",
            report.task_id,
            report.status,
            report
                .failure_reason
                .as_deref()
                .map_or_else(String::new, |r| format!(": {r}"))
        );
    }
    Ok(())
}

async fn reminders_scenario(a: RemindersArgs) -> anyhow::Result<()> {
    let target = Target::resolve(&a.server.base).await?;
    let secret = auth::read_secret(a.server.jwt_secret.as_deref(), a.server.data_dir.as_deref())?;
    let opts = RemindersOptions {
        reminders: a.reminders,
        first_user: a.first_user,
        lead: a.lead,
        in_flight: a.setup_in_flight,
        sink_listen: a.sink_listen,
        server_pid: a.server.server_pid,
        shop_id: a.shop_id,
        timeout: a.timeout,
        settle: a.settle,
        ceiling: a.ceiling,
    };
    let report = reminders::run(&target, &secret, &opts).await?;
    print!("{}", report.to_table());
    println!("{}", report.to_json_line());
    if !report.all_delivered() {
        anyhow::bail!(
            "{} of {} reminders delivered{}",
            report.delivered,
            report.reminders,
            if report.timed_out {
                format!(" within {:?} of the due time", a.timeout)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

async fn load_scenario(load: LoadArgs, setup: Setup) -> anyhow::Result<()> {
    let target = Target::resolve(&load.base).await?;
    if let Some(pid) = load.server_pid {
        stampede_bench::proc::memory_kb(pid).context("--server-pid")?;
    }
    let opts = LoadOptions {
        connections: load.connections,
        duration: load.duration,
        warmup: load.warmup,
        rate: load.rate,
        timeout: load.timeout,
    };
    let secret = || auth::read_secret(load.jwt_secret.as_deref(), load.data_dir.as_deref());
    let (name, work): (&str, Arc<dyn Workload>) = match setup {
        Setup::Healthz => ("healthz", Arc::new(healthz_mix(&target)?)),
        Setup::Claim(c) => {
            let secret = secret()?;
            let setup = ClaimSetup {
                users: c.users,
                first_user: c.first_user,
                templates: c.templates,
                stock: c.stock,
                limit: c.limit,
            };
            eprintln!(
                "setup: creating {} templates (stock {}, limit {}) and minting {} user tokens",
                c.templates, c.stock, c.limit, c.users
            );
            (
                "claim",
                Arc::new(claim::setup(&target, &secret, &setup).await?),
            )
        }
        Setup::Quote(q) => {
            let secret = secret()?;
            let setup = QuoteSetup {
                users: q.users,
                first_user: q.first_user,
                carts: q.carts,
                in_flight: q.setup_in_flight,
            };
            eprintln!(
                "setup: {} users from {}, 50 coupons each, {} carts",
                q.users, q.first_user, q.carts
            );
            (
                "quote",
                Arc::new(quote::setup(&target, &secret, &setup).await?),
            )
        }
        Setup::LockRedeem(l) => {
            let secret = secret()?;
            let setup = LockRedeemSetup {
                users: l.users,
                first_user: l.first_user,
                coupons_per_user: l.coupons_per_user,
                in_flight: l.setup_in_flight,
            };
            eprintln!(
                "setup: {} users from {}, {} coupons each",
                l.users, l.first_user, l.coupons_per_user
            );
            (
                "lock-redeem",
                Arc::new(lock_redeem::setup(&target, &secret, &setup).await?),
            )
        }
    };
    let phase = |name: &str| {
        eprintln!(
            "{name}: {} against {}, {} connections, warmup {:?}, window {:?}",
            match opts.rate {
                Some(r) => format!("open loop at {r}/s"),
                None => "closed loop".to_owned(),
            },
            load.base,
            opts.connections,
            opts.warmup,
            opts.duration
        );
    };
    phase(name);
    let mut report: Report =
        measure(name, &target, work, &opts, load.threads, load.server_pid).await?;
    if load.compare_healthz {
        phase("healthz");
        let ceiling = measure(
            "healthz",
            &target,
            Arc::new(healthz_mix(&target)?),
            &opts,
            load.threads,
            load.server_pid,
        )
        .await?;
        report = report.with_ceiling(ceiling);
    }
    print!("{}", report.to_table());
    println!("{}", report.to_json_line());
    Ok(())
}
