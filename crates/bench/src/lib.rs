//! Engine of `stampede-bench`, the load generator for an already running Stampede server
//! (see the binary's documentation for usage). Split from the binary so tests can drive it.
//!
//! Scenarios, one module each, saying only what is theirs (setup, requests, checks):
//! [`claim`], [`quote`], [`lock_redeem`] (load scenarios, plus `healthz` below),
//! [`distribution`] and [`reminders`] (one-shot runs), [`redis_ceiling`] and
//! [`insert_ceiling`] (what Redis and the database do on their own), [`overload`] (10× the
//! node's capacity: shedding, admitted latency, settlement beside it).
//!
//! What they share:
//! - the command line and running it: [`cli`], [`app`];
//! - talking to the server: [`client`] (HTTP/1.1), [`auth`] (secret and tokens), [`setup`]
//!   (bulk setup requests, busy retries, templates), [`bulk_claim`], [`multipart`];
//! - the load: [`workload`] (what is sent), [`load`] (the connections and the window),
//!   [`stats`] (counters and latency), [`problem`] (problem+json codes);
//! - the server process: [`proc`] (/proc readings), [`server_run`] (RSS sampling and CPU over
//!   a one-shot run), [`serve`] (this tool's own HTTP endpoints);
//! - the output: [`report`] (the load report), [`render`] (tables, JSON line, cells),
//!   [`round`] (rounding).

pub mod app;
pub mod auth;
pub mod bare_axum;
pub mod bulk_claim;
pub mod claim;
pub mod cli;
pub mod client;
pub mod discovery;
pub mod distribution;
pub mod find_rate;
pub mod hot_rebuild;
pub mod insert_ceiling;
pub mod load;
pub mod lock_redeem;
pub mod multipart;
pub mod overload;
pub mod problem;
pub mod proc;
pub mod quote;
pub mod redis_ceiling;
pub mod reminders;
pub mod render;
pub mod report;
pub mod round;
pub mod serve;
pub mod server_run;
pub mod setup;
pub mod stats;
pub mod workload;

use client::Target;
use load::LoadOptions;
use report::{Report, RunShape, ServerUsage};
use round::round2;
use std::sync::Arc;
use workload::{RequestMix, Workload};

/// Runs one scenario's load phase and turns it into a report (server memory read at the end).
pub async fn measure(
    scenario: &str,
    target: &Target,
    work: Arc<dyn Workload>,
    opts: &LoadOptions,
    threads: usize,
    server_pid: Option<u32>,
) -> anyhow::Result<Report> {
    let requests_per_op = work.requests_per_op();
    let result = load::run(target, work, opts, server_pid).await?;
    let shape = RunShape {
        mode: if opts.rate.is_some() {
            "open"
        } else {
            "closed"
        }
        .to_owned(),
        connections: opts.connections,
        target_rate: opts.rate,
        threads,
        warmup_s: opts.warmup.as_secs_f64(),
        // Rates are over the window as it ran (shorter when the workload ran out).
        duration_s: if result.exhausted {
            round2(result.window.as_secs_f64())
        } else {
            opts.duration.as_secs_f64()
        },
    };
    let mut report = Report::new(scenario, shape, &result.stats);
    report.exhausted = result.exhausted;
    report.requests_per_op = requests_per_op;
    report.bench_cpu_cores = result.bench_cpu_cores.map(round2);
    report.watched = result
        .watched
        .iter()
        .map(|(w, cores)| report::WatchedUsage {
            name: w.name.clone(),
            pid: w.pid,
            cpu_cores: cores.map(round2),
        })
        .collect();
    if let Some(pid) = server_pid {
        let (peak_rss_kb, rss_kb) = proc::memory_kb(pid)?;
        report.server = Some(ServerUsage {
            pid,
            peak_rss_kb,
            rss_kb,
            cpu_cores: result.server_cpu_cores.map(round2),
        });
    }
    Ok(report)
}

/// The `healthz` request mix.
pub fn healthz_mix(target: &Target) -> anyhow::Result<RequestMix> {
    Ok(RequestMix::get(target.uri("/healthz")?))
}
