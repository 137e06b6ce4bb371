//! The load engine: `connections` keep-alive connections, each a task that sends one request
//! at a time, either back-to-back (closed loop) or on a fixed schedule (open loop, `--rate`).
//!
//! Open loop: connection `k` owns the send slots `k, k + C, k + 2C, …` of a global schedule
//! of `rate` requests per second starting at the beginning of the warmup. A request whose slot
//! comes while its connection is still busy is sent late, and its latency is measured from
//! the slot, not from the actual send, so a stalled server cannot hide behind the tool's own
//! back-pressure (coordinated omission). A request sent on time is measured from the actual
//! send, so the timer's granularity (about 1 ms) does not count as server latency. Give the
//! open loop enough connections: at most `connections` requests are in flight.
//!
//! Only requests that complete inside the measurement window (after the warmup, before the
//! end) are counted; requests still in flight at the end are abandoned uncounted.
//!
//! What is sent is a [`Workload`] (see `workload`). A workload may run out (each operation
//! uses up a coupon): the connection that finds it empty stops, and once every connection
//! has, the window ends early; the result says so and its rates are over the shorter window.

use crate::cli::parse_duration;
use crate::client::{Body, Target};
use crate::proc;
use crate::stats::{Stats, TransportError};
use crate::workload::{Operation, Workload};
use anyhow::{Context, bail};
use http_body_util::BodyExt;
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout_at};

/// Pause after a failed connect before the next attempt, so a dead server is not hammered.
const CONNECT_BACKOFF: Duration = Duration::from_millis(50);

/// How the load is applied; the flags every load scenario shares (docs are `--help` text).
#[derive(Debug, Clone, clap::Args)]
pub struct LoadOptions {
    /// Keep-alive connections; each carries one request at a time. In open-loop mode this caps
    /// the requests in flight.
    #[arg(long, short = 'c', default_value_t = 50)]
    pub connections: usize,
    /// Measurement window (e.g. 10s, 500ms, 1m).
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load applied before the window, not counted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Open loop: requests per second on a fixed schedule (default: closed loop).
    #[arg(long, short = 'r')]
    pub rate: Option<f64>,
    /// Per-request timeout, connect included.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Open loop: measure latency from the actual send even when it is late (the server's
    /// answer time alone, when the tool cannot keep the schedule; `overload` reports how far
    /// it fell behind instead).
    #[arg(skip)]
    pub from_send: bool,
    /// Another process to report the CPU of, over the same window (e.g. `mariadb=1234`,
    /// `redis=5678`: the dependencies sharing the machine). Repeatable.
    #[arg(long = "watch-pid", value_name = "NAME=PID", value_parser = parse_watch)]
    pub watch: Vec<Watch>,
}

/// A process whose CPU use a run reports next to the server's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    pub name: String,
    pub pid: u32,
}

fn parse_watch(s: &str) -> Result<Watch, String> {
    let (name, pid) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=PID, got {s:?}"))?;
    let pid: u32 = pid
        .parse()
        .map_err(|_| format!("not a process id: {pid:?}"))?;
    if name.is_empty() {
        return Err("the name before '=' is empty".into());
    }
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return Err(format!("no process {pid}"));
    }
    Ok(Watch {
        name: name.to_owned(),
        pid,
    })
}

/// Stats of the window plus CPU use measured over it.
#[derive(Debug)]
pub struct LoadResult {
    pub stats: Stats,
    pub server_cpu_cores: Option<f64>,
    pub bench_cpu_cores: Option<f64>,
    /// CPU of each `--watch-pid` process over the window, in cores.
    pub watched: Vec<(Watch, Option<f64>)>,
    /// The measurement window as it ran: `--duration`, or less when the workload ran out.
    pub window: Duration,
    /// The workload ran out before the end of the window.
    pub exhausted: bool,
}

struct Plan {
    t0: Instant,
    measure_from: Instant,
    end: Instant,
    rate: Option<f64>,
    connections: u64,
    timeout: Duration,
    from_send: bool,
    /// Set by the first connection that finds the workload used up.
    exhausted: AtomicBool,
}

/// Runs one load phase (warmup then measurement) against `target`.
pub async fn run(
    target: &Target,
    work: Arc<dyn Workload>,
    opts: &LoadOptions,
    server_pid: Option<u32>,
) -> anyhow::Result<LoadResult> {
    if opts.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if let Some(r) = opts.rate
        && !(r.is_finite() && r > 0.0)
    {
        bail!("--rate must be a positive number of requests per second");
    }
    if opts.duration.is_zero() {
        bail!("--duration must be positive");
    }

    // Connect everything before the clock starts.
    let mut connecting = JoinSet::new();
    for _ in 0..opts.connections {
        let t = target.clone();
        connecting.spawn(async move { t.connect().await });
    }
    let mut conns = Vec::with_capacity(opts.connections);
    let mut first_err = None;
    while let Some(joined) = connecting.join_next().await {
        match joined.context("a connect task failed")? {
            Ok(c) => conns.push(Some(c)),
            Err(e) => {
                first_err.get_or_insert(e);
                conns.push(None);
            }
        }
    }
    if let Some(e) = first_err
        && conns.iter().all(Option::is_none)
    {
        return Err(e.context(format!("cannot reach {}", target.addr)));
    }

    let t0 = Instant::now();
    let measure_from = t0 + opts.warmup;
    let plan = Arc::new(Plan {
        t0,
        measure_from,
        end: measure_from + opts.duration,
        rate: opts.rate,
        connections: opts.connections as u64,
        timeout: opts.timeout,
        from_send: opts.from_send,
        exhausted: AtomicBool::new(false),
    });
    let target = Arc::new(target.clone());
    let mut workers = JoinSet::new();
    for (k, conn) in conns.into_iter().enumerate() {
        workers.spawn(worker(
            k as u64,
            conn,
            target.clone(),
            work.clone(),
            plan.clone(),
        ));
    }

    // Workers end at the end of the window, or earlier when the workload runs out: the
    // window then closes when the last one stops.
    let mut stats = Stats::new()?;
    loop {
        tokio::select! {
            () = sleep_until(plan.measure_from) => break,
            joined = workers.join_next() => match joined {
                Some(j) => stats.merge(&j.context("a load worker failed")??)?,
                None => bail!(
                    "the workload ran out during the warmup: nothing left to measure \
                     (give the setup more work, or shorten --warmup)"
                ),
            },
        }
    }
    let before = CpuSample::take(server_pid, &opts.watch);
    loop {
        tokio::select! {
            () = sleep_until(plan.end) => break,
            joined = workers.join_next() => match joined {
                Some(j) => stats.merge(&j.context("a load worker failed")??)?,
                None => break,
            },
        }
    }
    let after = CpuSample::take(server_pid, &opts.watch);
    while let Some(joined) = workers.join_next().await {
        stats.merge(&joined.context("a load worker failed")??)?;
    }
    let window = after.at - before.at;
    let secs = window.as_secs_f64().max(1e-9);
    let per_sec = |a: Option<f64>, b: Option<f64>| Some(((b? - a?) / secs).max(0.0));
    Ok(LoadResult {
        stats,
        server_cpu_cores: per_sec(before.server, after.server),
        bench_cpu_cores: per_sec(before.bench, after.bench),
        watched: opts
            .watch
            .iter()
            .zip(before.watched.iter().zip(&after.watched))
            .map(|(w, (b, a))| (w.clone(), per_sec(*b, *a)))
            .collect(),
        window,
        exhausted: plan.exhausted.load(Ordering::Relaxed),
    })
}

struct CpuSample {
    at: Instant,
    server: Option<f64>,
    bench: Option<f64>,
    watched: Vec<Option<f64>>,
}

impl CpuSample {
    fn take(server_pid: Option<u32>, watch: &[Watch]) -> Self {
        Self {
            at: Instant::now(),
            server: server_pid.and_then(|p| proc::cpu_seconds(Some(p))),
            bench: proc::cpu_seconds(None),
            watched: watch
                .iter()
                .map(|w| proc::cpu_seconds(Some(w.pid)))
                .collect(),
        }
    }
}

/// One connection's loop.
async fn worker(
    k: u64,
    mut conn: Option<SendRequest<Body>>,
    target: Arc<Target>,
    work: Arc<dyn Workload>,
    plan: Arc<Plan>,
) -> anyhow::Result<Stats> {
    let mut stats = Stats::new()?;
    let mut rng = SmallRng::from_rng(&mut rand::rng());
    let mut slot: u64 = 0;
    loop {
        // When the operation is due and where its latency is measured from.
        let origin = match plan.rate {
            None => None,
            Some(rate) => {
                let index = k.saturating_add(slot.saturating_mul(plan.connections));
                slot += 1;
                let due = plan.t0 + Duration::from_secs_f64(index as f64 / rate);
                if due >= plan.end {
                    break;
                }
                if due > Instant::now() {
                    sleep_until(due).await;
                    None
                } else {
                    Some(due)
                }
            }
        };
        let now = Instant::now();
        if now >= plan.end {
            break;
        }

        let deadline = (now + plan.timeout).min(plan.end);
        if !matches!(
            timeout_at(deadline, ready(&mut conn, &target)).await,
            Ok(Some(_))
        ) {
            conn = None;
            let now = Instant::now();
            if now >= plan.end {
                break;
            }
            if now >= plan.measure_from {
                stats.record_transport_error(TransportError::Connect);
            }
            sleep_until((now + CONNECT_BACKOFF).min(plan.end)).await;
            continue;
        }
        let Some(op) = work.next(&target, &mut rng) else {
            plan.exhausted.store(true, Ordering::Relaxed);
            break;
        };
        let sent = Instant::now();
        let start = if plan.from_send {
            sent
        } else {
            origin.unwrap_or(sent)
        };
        let deadline = (sent + plan.timeout).min(plan.end);
        let outcome = timeout_at(deadline, perform(&mut conn, &target, op)).await;
        let done = Instant::now();
        let counted = done >= plan.measure_from;
        match outcome {
            Ok(Ok(a)) => {
                if counted {
                    stats.record_step_response(done - start, a.status.as_u16(), &a.body, a.step);
                }
            }
            Ok(Err(kind)) => {
                conn = None;
                if counted {
                    stats.record_transport_error(kind);
                }
            }
            Err(_) => {
                conn = None;
                if deadline >= plan.end {
                    break; // the run is over, not the operation's time
                }
                if counted {
                    stats.record_transport_error(TransportError::Timeout);
                }
            }
        }
    }
    Ok(stats)
}

/// The answer that ended an operation: the last request's, or the first non-2xx of a chain
/// (then `step` names it).
struct Answer {
    status: StatusCode,
    body: Bytes,
    step: Option<&'static str>,
}

/// Sends `op` on `conn` (made ready by the caller for the first request).
async fn perform(
    conn: &mut Option<SendRequest<Body>>,
    target: &Target,
    op: Operation,
) -> Result<Answer, TransportError> {
    match op {
        Operation::Single(req) => {
            let sender = conn.as_mut().ok_or(TransportError::Io)?;
            let (status, body) = exchange(sender, req)
                .await
                .map_err(|_| TransportError::Io)?;
            Ok(Answer {
                status,
                body,
                step: None,
            })
        }
        Operation::Chain(steps) => {
            let last = steps.len().saturating_sub(1);
            for (i, (step, req)) in steps.into_iter().enumerate() {
                let sender = if i == 0 {
                    conn.as_mut().ok_or(TransportError::Io)?
                } else {
                    ready(conn, target).await.ok_or(TransportError::Connect)?
                };
                let (status, body) = exchange(sender, req)
                    .await
                    .map_err(|_| TransportError::Io)?;
                if i == last || !status.is_success() {
                    return Ok(Answer {
                        status,
                        body,
                        step: Some(step),
                    });
                }
            }
            Err(TransportError::Io) // an empty chain: nothing was answered
        }
    }
}

/// A connection ready for the next request: the current one, or a new one when it was closed
/// (keep-alive timeout, `connection: close`, an earlier failure). `None` if connecting fails.
async fn ready<'a>(
    conn: &'a mut Option<SendRequest<Body>>,
    target: &Target,
) -> Option<&'a mut SendRequest<Body>> {
    let usable = match conn.as_mut() {
        Some(s) => !s.is_closed() && s.ready().await.is_ok(),
        None => false,
    };
    if !usable {
        *conn = None;
        let mut fresh = target.connect().await.ok()?;
        fresh.ready().await.ok()?;
        *conn = Some(fresh);
    }
    conn.as_mut()
}

/// Sends `req` and reads the whole answer. Bodies of 2xx answers are drained, not kept.
async fn exchange(
    sender: &mut SendRequest<Body>,
    req: Request<Body>,
) -> Result<(StatusCode, Bytes), hyper::Error> {
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let mut body = resp.into_body();
    if status.is_success() {
        while let Some(frame) = body.frame().await {
            frame?;
        }
        Ok((status, Bytes::new()))
    } else {
        Ok((status, body.collect().await?.to_bytes()))
    }
}
