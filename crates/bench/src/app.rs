//! Runs a parsed command line: the async runtime, the scenario (setup, load phase, optional
//! healthz ceiling) and its report on stdout, a table then one line of JSON (progress goes to
//! stderr). A one-shot scenario that did not finish (a failed task, missing reminders) is an
//! error after its report is printed.

use crate::claim::{self, ClaimSetup};
use crate::cli::{Cli, DistributionArgs, LoadArgs, OverloadArgs, RemindersArgs, Scenario};
use crate::client::Target;
use crate::discovery::{self, DiscoverySetup};
use crate::find_rate;
use crate::hot_rebuild;
use crate::load::LoadOptions;
use crate::lock_redeem::{self, LockRedeemSetup};
use crate::quote::{self, QuoteSetup};
use crate::workload::Workload;
use crate::{
    bare_axum, distribution, healthz_mix, measure, overload, proc, redis_ceiling, reminders,
};
use anyhow::Context;
use std::sync::Arc;

/// Runs the scenario of `cli`.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.scenario {
        Scenario::RedisCeiling(opts) => {
            let report = redis_ceiling::run(&opts)?;
            print!("{}", report.to_text());
            println!(
                "{}",
                serde_json::to_string(&report).context("encoding the summary")?
            );
            Ok(())
        }
        Scenario::Distribution(a) => runtime(1)?.block_on(distribution_scenario(a)),
        Scenario::Reminders(a) => runtime(a.threads)?.block_on(reminders_scenario(a)),
        Scenario::Overload(a) => runtime(a.threads)?.block_on(overload_scenario(a)),
        Scenario::BareAxum { listen, page_bytes } => bare_axum::serve(&listen, page_bytes),
        Scenario::HotRebuild(o) => runtime(2)?.block_on(async {
            let report = hot_rebuild::run(&o).await?;
            let json = serde_json::to_string(&report).context("encoding the summary")?;
            print_report(&report.to_table(), &json);
            Ok(())
        }),
        Scenario::Healthz { load } => {
            runtime(load.threads)?.block_on(load_scenario(load, Setup::Healthz))
        }
        Scenario::Claim { load, claim } => {
            runtime(load.threads)?.block_on(load_scenario(load, Setup::Claim(claim)))
        }
        Scenario::Quote { load, quote } => {
            runtime(load.threads)?.block_on(load_scenario(load, Setup::Quote(quote)))
        }
        Scenario::Discovery { load, discovery } => {
            runtime(load.threads)?.block_on(load_scenario(load, Setup::Discovery(discovery)))
        }
        Scenario::LockRedeem { load, lock_redeem } => {
            runtime(load.threads)?.block_on(load_scenario(load, Setup::LockRedeem(lock_redeem)))
        }
    }
}

/// What a load scenario sets up before its load phase.
enum Setup {
    Healthz,
    Claim(ClaimSetup),
    Quote(QuoteSetup),
    Discovery(DiscoverySetup),
    LockRedeem(LockRedeemSetup),
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

/// The report on stdout: the table, then the JSON line last.
fn print_report(table: &str, json_line: &str) {
    print!("{table}");
    println!("{json_line}");
}

async fn distribution_scenario(a: DistributionArgs) -> anyhow::Result<()> {
    let (target, secret) = a.server.connect().await?;
    let report = distribution::run(&target, &secret, &a.options()).await?;
    print_report(&report.to_table(), &report.to_json_line());
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
    let (target, secret) = a.server.connect().await?;
    let opts = a.options();
    let report = reminders::run(&target, &secret, &opts).await?;
    print_report(&report.to_table(), &report.to_json_line());
    if !report.all_delivered() {
        anyhow::bail!(
            "{} of {} reminders delivered{}",
            report.delivered,
            report.reminders,
            if report.timed_out {
                format!(" within {:?} of the due time", opts.timeout)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

async fn overload_scenario(a: OverloadArgs) -> anyhow::Result<()> {
    let (target, secret) = a.server.connect().await?;
    proc::check_server_pid(a.server.server_pid)?;
    let report = overload::run(&target, &secret, &a.overload, a.server.server_pid).await?;
    let json = serde_json::to_string(&report).context("encoding the summary")?;
    print_report(&report.to_table(), &json);
    if !report.bars_met {
        anyhow::bail!("the overload bars were not met (see the table)");
    }
    Ok(())
}

/// `--find-rate`: open-loop runs of the same workload until the highest rate that keeps p99
/// within `bound_ms` is known (`find_rate.rs`).
async fn find_highest_rate(
    args: &LoadArgs,
    name: &str,
    target: &Target,
    work: Arc<dyn Workload>,
    bound_ms: f64,
) -> anyhow::Result<()> {
    if bound_ms.is_nan() || bound_ms <= 0.0 {
        anyhow::bail!("--find-rate must be a positive number of milliseconds");
    }
    let start = args.load.rate.unwrap_or(1_000.0);
    let (tries, best) = find_rate::search(start, |rate| {
        let opts = LoadOptions {
            rate: Some(rate),
            ..args.load.clone()
        };
        let work = work.clone();
        async move {
            eprintln!("{name}: open loop at {rate:.0}/s for {:?}", opts.duration);
            let r = measure(name, target, work, &opts, args.threads, args.server_pid).await?;
            let t = find_rate::Try::new(
                rate,
                r.successes_per_s,
                r.latency_ms.p99,
                r.errors,
                bound_ms,
            );
            eprintln!(
                "  served {:.1}/s, p99 {:.3} ms, {} errors: {}",
                t.served_per_s,
                t.p99_ms,
                t.errors,
                if t.held { "held" } else { "missed" }
            );
            Ok(t)
        }
    })
    .await?;
    let json = serde_json::json!({
        "scenario": name,
        "find_rate_p99_ms": bound_ms,
        "connections": args.load.connections,
        "highest_rate_per_s": best,
        "tries": tries,
    });
    print_report(
        &find_rate::render(&tries, best, bound_ms),
        &json.to_string(),
    );
    Ok(())
}

async fn load_scenario(args: LoadArgs, setup: Setup) -> anyhow::Result<()> {
    let target = Target::resolve(&args.base).await?;
    if let Some(pid) = args.server_pid {
        proc::check_server_pid(pid)?;
    }
    let opts = &args.load;
    let (name, work): (&str, Arc<dyn Workload>) = match setup {
        Setup::Healthz => ("healthz", Arc::new(healthz_mix(&target)?)),
        Setup::Claim(c) => {
            let secret = args.secret()?;
            eprintln!(
                "setup: creating {} templates (stock {}, limit {}) and minting {} user tokens",
                c.templates, c.stock, c.limit, c.users
            );
            ("claim", Arc::new(claim::setup(&target, &secret, &c).await?))
        }
        Setup::Quote(q) => {
            let secret = args.secret()?;
            eprintln!(
                "setup: {} users from {}, 50 coupons each, {} carts",
                q.users, q.first_user, q.carts
            );
            ("quote", Arc::new(quote::setup(&target, &secret, &q).await?))
        }
        Setup::Discovery(d) => {
            let secret = args.secret()?;
            eprintln!(
                "setup: {} shops x {} templates, {} goods, {} users",
                d.shops, d.per_shop, d.goods, d.users
            );
            let work = discovery::setup(&target, &secret, &d).await?;
            ("discovery", Arc::new(work))
        }
        Setup::LockRedeem(l) => {
            let secret = args.secret()?;
            eprintln!(
                "setup: {} users from {}, {} coupons each",
                l.users, l.first_user, l.coupons_per_user
            );
            let work = lock_redeem::setup(&target, &secret, &l).await?;
            ("lock-redeem", Arc::new(work))
        }
    };
    let phase = |name: &str| {
        eprintln!(
            "{name}: {} against {}, {} connections, warmup {:?}, window {:?}",
            match opts.rate {
                Some(r) => format!("open loop at {r}/s"),
                None => "closed loop".to_owned(),
            },
            args.base,
            opts.connections,
            opts.warmup,
            opts.duration
        );
    };
    if let Some(bound) = args.find_rate {
        return find_highest_rate(&args, name, &target, work, bound).await;
    }
    phase(name);
    let queries_before = match name {
        "discovery" => Some(discovery::db_queries(&target).await?),
        _ => None,
    };
    let mut report = measure(
        name,
        &target,
        work.clone(),
        opts,
        args.threads,
        args.server_pid,
    )
    .await?;
    if let Some(before) = queries_before {
        let after = discovery::db_queries(&target).await?;
        eprintln!(
            "discovery database queries during the run (warm-up and window): {}",
            after.saturating_sub(before)
        );
    }
    if args.compare_healthz {
        phase("healthz");
        let work = Arc::new(healthz_mix(&target)?);
        let ceiling = measure(
            "healthz",
            &target,
            work,
            opts,
            args.threads,
            args.server_pid,
        );
        report = report.with_ceiling(ceiling.await?);
    }
    // A bare axum child measured like the server: its /healthz, or the same requests
    // answered with a fixed page.
    let bare = |page: Option<usize>, work: Option<Arc<dyn Workload>>| async move {
        let child = bare_axum::Child::start(page)?;
        let bare_target = Target::resolve(&child.base).await?;
        let (name, work): (&str, Arc<dyn Workload>) = match work {
            Some(w) => ("bare-page", w),
            None => ("bare-axum", Arc::new(healthz_mix(&bare_target)?)),
        };
        phase(&match page {
            Some(bytes) => format!("bare page ({bytes} bytes)"),
            None => "bare axum".to_owned(),
        });
        let r = measure(
            name,
            &bare_target,
            work,
            opts,
            args.threads,
            Some(child.pid()),
        );
        r.await
    };
    if args.compare_bare_axum {
        report = report.with_bare_axum(bare(None, None).await?);
    }
    if let Some(bytes) = args.compare_bare_page {
        let page = bare(Some(bytes), Some(work)).await?;
        if let Some(c) = &report.ceiling {
            eprintln!(
                "a bare server answering {bytes} bytes reaches {:.1}% of the healthz ceiling \
                 ({:.1} / {:.1} requests/s)",
                page.requests_per_s / c.requests_per_s.max(f64::MIN_POSITIVE) * 100.0,
                page.requests_per_s,
                c.requests_per_s
            );
        }
        report = report.with_bare_axum(page);
    }
    print_report(&report.to_table(), &report.to_json_line());
    Ok(())
}
