//! The `overload` scenario: does the node stay fast for what it admits when offered 10× what
//! it can serve?
//!
//! 1. Setup as `claim` (templates, user tokens). The per-user claim rule is switched off and
//!    the in-flight limit opened wide through the admin API, so the probe measures the node.
//! 2. **Capacity**: a closed loop of `--probe-connections` for `--probe-duration`; capacity is
//!    its claims answered 2xx per second.
//! 3. The in-flight limit is set from it by Little's law: capacity × `--latency-target-ms`
//!    (clamped to 8–4096), an eighth of it reserved for settlement, queue timeout 5 ms.
//! 4. **Overload**: an open loop at `--factor` × capacity on `--connections` (1,000)
//!    connections for `--duration`, while `--settlement-rate` checkout quotes per second
//!    (users with no coupons, so each quote is cheap) run beside it.
//! 5. The rules in force before the run are put back.
//!
//! Report: capacity (and the probe's p99), the offered and the achieved rate, answers by
//! status and code, p99 of admitted answers (anything but 429/503) and of refusals (429/503),
//! each timed from its actual send (the server's answer time; see `from_send`), the settlement
//! calls' successes and p99, and the server's peak RSS before and after, with the bars:
//! admitted p99 ≤ 50 ms, refusals p99 ≤ 10 ms, every settlement call 2xx.

use crate::auth::Tokens;
use crate::claim::{self, ClaimSetup};
use crate::client::Target;
use crate::load::{self, LoadOptions, LoadResult};
use crate::quote::{self, QuoteWork};
use crate::round::{round1, round3};
use crate::stats::Stats;
use crate::workload::RequestMix;
use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use hyper::Method;
use hyper::body::Bytes;
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const RULES: &str = "/api/v1/admin/flow-rules";

/// The `overload` flags (their docs are the `--help` text).
#[derive(Debug, Clone, clap::Args)]
pub struct OverloadOptions {
    #[command(flatten)]
    pub claim: ClaimSetup,
    /// Connections of the capacity probe (closed loop).
    #[arg(long, default_value_t = 32)]
    pub probe_connections: usize,
    /// Window of the capacity probe.
    #[arg(long, default_value = "5s", value_parser = crate::cli::parse_duration)]
    pub probe_duration: Duration,
    /// Offered load as a multiple of the measured capacity.
    #[arg(long, default_value_t = 10.0)]
    pub factor: f64,
    /// Connections of the overload phase (open loop; caps the requests in flight).
    #[arg(long, default_value_t = 1_000)]
    pub connections: usize,
    /// Window of the overload phase.
    #[arg(long, default_value = "10s", value_parser = crate::cli::parse_duration)]
    pub duration: Duration,
    /// Load before each window, not counted.
    #[arg(long, default_value = "2s", value_parser = crate::cli::parse_duration)]
    pub warmup: Duration,
    /// Checkout quotes per second during the overload (the order service's calls).
    #[arg(long, default_value_t = 20.0)]
    pub settlement_rate: f64,
    /// Mean latency the in-flight limit is sized for (Little's law).
    #[arg(long, default_value_t = 25)]
    pub latency_target_ms: u64,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = crate::cli::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let ms = |us: u64| round3(us as f64 / 1000.0);
    if h.is_empty() {
        return Percentiles {
            count: 0,
            p50_ms: 0.0,
            p99_ms: 0.0,
            max_ms: 0.0,
        };
    }
    Percentiles {
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.5)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    }
}

#[derive(Debug, Serialize)]
pub struct OverloadReport {
    pub scenario: &'static str,
    pub capacity_per_s: f64,
    pub probe_p99_ms: f64,
    pub max_in_flight: u32,
    pub offered_per_s: f64,
    pub connections: usize,
    pub window_s: f64,
    pub answered_per_s: f64,
    pub admitted_per_s: f64,
    pub status: Vec<(String, u64)>,
    pub codes: Vec<(String, u64)>,
    pub transport_errors: u64,
    pub admitted: Percentiles,
    pub refused: Percentiles,
    pub settlement_calls: u64,
    pub settlement_ok: u64,
    pub settlement: Percentiles,
    pub server_peak_rss_before_kb: u64,
    pub server_peak_rss_after_kb: u64,
    pub server_rss_after_kb: u64,
    pub bars_met: bool,
}

impl OverloadReport {
    pub fn to_table(&self) -> String {
        let mut t = String::new();
        let mut line = |k: &str, v: String| t.push_str(&format!("{k:<34} {v}\n"));
        line(
            "capacity (claims/s, probe p99)",
            format!("{} /s, p99 {} ms", self.capacity_per_s, self.probe_p99_ms),
        );
        line("in-flight limit", self.max_in_flight.to_string());
        line(
            "offered (open loop)",
            format!(
                "{} /s on {} connections",
                self.offered_per_s, self.connections
            ),
        );
        line(
            "answered / admitted",
            format!("{} /s / {} /s", self.answered_per_s, self.admitted_per_s),
        );
        line("answers by status", format!("{:?}", self.status));
        line("answers by code", format!("{:?}", self.codes));
        line("transport errors", self.transport_errors.to_string());
        line(
            "admitted p50 / p99 / max (ms)",
            format!(
                "{} / {} / {} (n={})",
                self.admitted.p50_ms,
                self.admitted.p99_ms,
                self.admitted.max_ms,
                self.admitted.count
            ),
        );
        line(
            "429/503 p50 / p99 / max (ms)",
            format!(
                "{} / {} / {} (n={})",
                self.refused.p50_ms, self.refused.p99_ms, self.refused.max_ms, self.refused.count
            ),
        );
        line(
            "settlement ok / calls, p99 (ms)",
            format!(
                "{} / {}, {}",
                self.settlement_ok, self.settlement_calls, self.settlement.p99_ms
            ),
        );
        line(
            "server peak RSS before / after",
            format!(
                "{} MiB / {} MiB (now {} MiB)",
                self.server_peak_rss_before_kb / 1024,
                self.server_peak_rss_after_kb / 1024,
                self.server_rss_after_kb / 1024
            ),
        );
        line(
            "bars (admitted ≤ 50, refused ≤ 10, settlement ok)",
            if self.bars_met { "met" } else { "NOT met" }.to_owned(),
        );
        t
    }
}

async fn send(
    target: &Target,
    method: Method,
    auth: &hyper::header::HeaderValue,
    body: Option<&Value>,
) -> anyhow::Result<Value> {
    let mut conn = target.connect().await?;
    let (status, bytes) = target
        .send_json(&mut conn, method, RULES, Some(auth), body)
        .await?;
    if !status.is_success() {
        bail!(
            "{RULES}: {status} {}",
            String::from_utf8_lossy(&bytes)
                .chars()
                .take(300)
                .collect::<String>()
        );
    }
    serde_json::from_slice(&bytes).context("the flow rules are not JSON")
}

fn rules_with(base: &Value, max_in_flight: u32, reserved: u32) -> Value {
    let mut r = base.clone();
    r["claim_per_user"] = Value::Null;
    r["concurrency"] = json!({
        "max_in_flight": max_in_flight,
        "settlement_reserved": reserved,
        "queue_timeout_ms": 5,
    });
    r
}

fn rate_of(r: &LoadResult) -> f64 {
    r.stats.successes as f64 / r.window.as_secs_f64().max(1e-9)
}

/// Runs the scenario against the server at `target` (process `server_pid`).
pub async fn run(
    target: &Target,
    secret: &[u8],
    opts: &OverloadOptions,
    server_pid: u32,
) -> anyhow::Result<OverloadReport> {
    if !(opts.factor.is_finite() && opts.factor > 0.0) {
        bail!("--factor must be positive");
    }
    let tokens = Tokens::new(secret);
    let admin = tokens.admin()?;
    let before = send(target, Method::GET, &admin, None).await?;
    let original = before["rules"].clone();
    eprintln!(
        "setup: {} templates, {} users; rules in force: version {}",
        opts.claim.templates, opts.claim.users, before["version"]
    );
    let work = Arc::new(claim::setup(target, secret, &opts.claim).await?);
    send(
        target,
        Method::PUT,
        &admin,
        Some(&rules_with(&original, 100_000, 1)),
    )
    .await?;

    let result = phases(target, &tokens, opts, server_pid, work, &original).await;
    // Put the rules back whatever happened.
    let restored = send(target, Method::PUT, &admin, Some(&original)).await;
    let report = result?;
    restored.context("restoring the flow rules")?;
    Ok(report)
}

async fn phases(
    target: &Target,
    tokens: &Tokens,
    opts: &OverloadOptions,
    server_pid: u32,
    work: Arc<RequestMix>,
    original: &Value,
) -> anyhow::Result<OverloadReport> {
    eprintln!(
        "capacity: closed loop, {} connections, {:?}",
        opts.probe_connections, opts.probe_duration
    );
    let probe = load::run(
        target,
        work.clone(),
        &LoadOptions {
            connections: opts.probe_connections,
            duration: opts.probe_duration,
            warmup: opts.warmup,
            rate: None,
            timeout: opts.timeout,
            from_send: false,
            watch: Vec::new(),
        },
        Some(server_pid),
    )
    .await?;
    let capacity = rate_of(&probe);
    if capacity < 1.0 {
        bail!(
            "the probe saw no successful claim: {:?}",
            probe.stats.status
        );
    }
    let probe_p99 = percentiles(&probe.stats.latency).p99_ms;
    let in_flight = (capacity * opts.latency_target_ms as f64 / 1000.0).clamp(8.0, 4096.0) as u32;
    let reserved = (in_flight / 8).max(2);
    let admin = tokens.admin()?;
    send(
        target,
        Method::PUT,
        &admin,
        Some(&rules_with(original, in_flight + reserved, reserved)),
    )
    .await?;

    let offered = capacity * opts.factor;
    let (peak_before, _) = crate::proc::memory_kb(server_pid)?;
    eprintln!(
        "overload: capacity {:.0}/s (p99 {probe_p99} ms), in-flight {in_flight} + {reserved} \
         for settlement; offering {offered:.0}/s on {} connections for {:?}",
        capacity, opts.connections, opts.duration
    );
    // Settlement: users past the claimers (no coupons: cheap quotes).
    let first = opts.claim.first_user + opts.claim.users + 1;
    let carts = quote::carts(8)
        .iter()
        .map(|c| serde_json::to_vec(c).map(Bytes::from))
        .collect::<Result<Vec<_>, _>>()
        .context("encoding carts")?;
    let quotes = Arc::new(QuoteWork::new(
        target.uri("/api/v1/checkout/quote")?,
        tokens.users(first, 100)?,
        carts,
    ));
    let overload_opts = LoadOptions {
        connections: opts.connections,
        duration: opts.duration,
        warmup: opts.warmup,
        rate: Some(offered),
        timeout: opts.timeout,
        // The server's answer time: on a small machine the tool itself cannot send 10× the
        // node's capacity on schedule, and how far it fell behind is reported as the
        // achieved rate next to the offered one.
        from_send: true,
        watch: Vec::new(),
    };
    let settle_opts = LoadOptions {
        connections: 4,
        rate: Some(opts.settlement_rate),
        ..overload_opts.clone()
    };
    let (over, settle) = tokio::join!(
        load::run(target, work, &overload_opts, Some(server_pid)),
        load::run(target, quotes, &settle_opts, None),
    );
    let (over, settle) = (over?, settle?);
    let (peak_after, rss_after) = crate::proc::memory_kb(server_pid)?;
    Ok(report(
        capacity,
        probe_p99,
        in_flight + reserved,
        offered,
        opts,
        &over,
        &settle.stats,
        (peak_before, peak_after, rss_after),
    ))
}

#[allow(clippy::too_many_arguments)]
fn report(
    capacity: f64,
    probe_p99: f64,
    max_in_flight: u32,
    offered: f64,
    opts: &OverloadOptions,
    over: &LoadResult,
    settle: &Stats,
    (peak_before, peak_after, rss_after): (u64, u64, u64),
) -> OverloadReport {
    let s = &over.stats;
    let secs = over.window.as_secs_f64().max(1e-9);
    let admitted = percentiles(&s.admitted);
    let refused = percentiles(&s.refused);
    let settlement = percentiles(&settle.latency);
    let bars_met = admitted.p99_ms <= 50.0
        && refused.p99_ms <= 10.0
        && settle.requests > 0
        && settle.successes == settle.requests;
    OverloadReport {
        scenario: "overload",
        capacity_per_s: round1(capacity),
        probe_p99_ms: probe_p99,
        max_in_flight,
        offered_per_s: round1(offered),
        connections: opts.connections,
        window_s: round3(secs),
        answered_per_s: round1((s.requests - s.transport_errors()) as f64 / secs),
        admitted_per_s: round1(admitted.count as f64 / secs),
        status: s.status.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
        codes: s.codes.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
        transport_errors: s.transport_errors(),
        admitted,
        refused,
        settlement_calls: settle.requests,
        settlement_ok: settle.successes,
        settlement,
        server_peak_rss_before_kb: peak_before,
        server_peak_rss_after_kb: peak_after,
        server_rss_after_kb: rss_after,
        bars_met,
    }
}
