//! The `reminders` scenario: one template whose sale starts `60 min + --lead` from now, one
//! webhook reminder 60 minutes before it for each of `--reminders` users, and a webhook sink in
//! this process that counts the server's deliveries once they are due.
//!
//! 1. The sink (`sink`): an HTTP/1.1 server on `--sink-listen` answering `204` to `POST /hook`
//!    (start the server with `STAMPEDE_REMINDER__WEBHOOK_URL=http://ADDR/hook`), counting
//!    distinct reminders, duplicates and the lag from `remind_at` to receipt.
//! 2. A merchant token and the template, its claim start on a whole second so the due time is
//!    exact; then (`seeding`) one `PUT /api/v1/templates/{id}/reminders` per user,
//!    `--setup-in-flight` at a time on keep-alive connections. The first user's PUT is sent
//!    twice before the others: both must be accepted (idempotent), and a server without the
//!    webhook channel fails fast with a hint.
//! 3. Wait until the sink has seen every accepted reminder, or `--timeout` after the due time,
//!    sampling the server's RSS; then `--settle` more so late duplicates are counted.
//! 4. The insert ceiling of `--ceiling` with as many rows, next to the delivery rate
//!    (`report`: the numbers, the table and the JSON line).
//!
//! A PUT refused because the due time has passed (409 `REMINDER_TOO_LATE` / `CLAIM_STARTED`:
//! the seeding outlasted `--lead`) stops the seeding. The run still measures what was accepted,
//! from the due time, says so, and fails at the end since not every reminder was delivered.

mod report;
mod seeding;
mod sink;

pub use report::{LagMs, RemindersReport};
pub use sink::{Delivery, Item, Sink, Tally, parse_delivery};

use crate::auth::Tokens;
use crate::cli::{parse_duration, parse_shop};
use crate::client::Target;
use crate::insert_ceiling::{self, Ceiling};
use crate::proc;
use crate::render::mib;
use crate::round::{per_second, round3, secs};
use crate::server_run::{ServerWatch, Watched, cpu_delta};
use crate::setup::create_template;
use anyhow::{Context, bail};
use hyper::header::HeaderValue;
use jiff::{SignedDuration, Timestamp};
use seeding::Seeded;
use serde_json::json;
use sink::serve_sink;
use stampede_domain::ids::ShopId;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// The path the sink answers.
pub const HOOK_PATH: &str = "/hook";
/// Every reminder of the run is set this long before the sale.
pub const MINUTES_BEFORE: i64 = 60;
/// How often the wait checks the sink; receipt times are taken by the sink itself, so this
/// only bounds how late the wait notices the end.
const POLL_EVERY: Duration = Duration::from_millis(50);
const MAX_STOCK: u64 = 20_000_000;

/// The `reminders` flags (their docs are the `--help` text) and the server's pid.
#[derive(Debug, Clone, clap::Args)]
pub struct RemindersOptions {
    /// Reminders, one per user (users are consecutive ids from --first-user).
    #[arg(long, default_value_t = 1_000_000)]
    pub reminders: u64,
    /// First user id.
    #[arg(long, default_value_t = 1)]
    pub first_user: u64,
    /// The reminders fall due this long after the template is created (its claim starts
    /// 60 min + lead from now); the seeding has to finish before.
    #[arg(long, default_value = "150s", value_parser = parse_duration)]
    pub lead: Duration,
    /// Setup requests (reminder PUTs) in flight, each on its own keep-alive connection.
    #[arg(
        long = "setup-in-flight",
        value_name = "SETUP_IN_FLIGHT",
        default_value_t = 128
    )]
    pub in_flight: usize,
    /// Where the webhook sink listens: start the server with
    /// STAMPEDE_REMINDER__WEBHOOK_URL=http://ADDR/hook.
    #[arg(long, default_value = "127.0.0.1:18099")]
    pub sink_listen: SocketAddr,
    // `--server-pid`, read with the other server flags (`cli::ServerArgs`).
    #[arg(skip)]
    pub server_pid: u32,
    /// The merchant's shop.
    #[arg(long, default_value = "1", value_parser = parse_shop)]
    pub shop_id: ShopId,
    /// Also measure the database's bulk-insert ceiling with as many rows: sqlite:DIR or
    /// mysql:URL (as in `distribution`).
    #[arg(long)]
    pub ceiling: Option<Ceiling>,
    /// Give up when not every reminder has arrived this long after the due time.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Keep the sink open this long after the last reminder to count late duplicates.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub settle: Duration,
}

/// Runs the scenario against `target` (the server's JWT secret in `secret`).
pub async fn run(
    target: &Target,
    secret: &[u8],
    opts: &RemindersOptions,
) -> anyhow::Result<RemindersReport> {
    if opts.reminders == 0 {
        bail!("--reminders must be at least 1");
    }
    if opts.lead < Duration::from_secs(1) {
        bail!("--lead must be at least 1s");
    }
    let pid = opts.server_pid;
    proc::check_server_pid(pid)?;
    // Bound first: a taken port fails the run before any setup.
    let listener = TcpListener::bind(opts.sink_listen)
        .await
        .with_context(|| format!("binding the webhook sink to {}", opts.sink_listen))?;
    let sink_addr = listener.local_addr().context("the sink's address")?;

    // 1. The template.
    let tokens = Tokens::new(secret);
    let merchant = tokens.merchant("bench", opts.shop_id)?;
    let (template_id, due) = schedule(target, &merchant, opts, sink_addr).await?;
    let sink = Sink::new(Tally::new(template_id.clone(), opts.reminders)?);
    let serving = serve_sink(listener, Arc::clone(&sink));

    // 2. The seeding.
    let watch = ServerWatch::start(pid)?;
    let seeded = seeding::seed(target, tokens, &template_id, sink_addr, due, opts, &watch).await?;

    // 3. The wait.
    let timed_out = wait(&sink, seeded.accepted, due, opts).await?;
    let watched = watch.finish().await?;
    if !timed_out && !opts.settle.is_zero() {
        tokio::time::sleep(opts.settle).await;
    }
    drop(serving);
    let mut report = report(opts, template_id, due, &seeded, &sink, timed_out, watched);

    // 4. The ceiling, only after a complete delivery (like the distribution's).
    if let Some(c) = &opts.ceiling
        && report.all_delivered()
    {
        let (ceiling, ratio) =
            insert_ceiling::compare(c, report.reminders, report.deliveries_per_s).await?;
        report.ceiling = Some(ceiling);
        report.ceiling_ratio = ratio;
    }
    Ok(report)
}

/// Creates the template with its claim start on a whole second (rounded up, so the lead is
/// at least `--lead`) so that the due time is exactly the server's: its id and the due time.
async fn schedule(
    target: &Target,
    merchant: &HeaderValue,
    opts: &RemindersOptions,
    sink_addr: SocketAddr,
) -> anyhow::Result<(String, Timestamp)> {
    let lead = i64::try_from(opts.lead.as_secs() + u64::from(opts.lead.subsec_nanos() > 0))
        .context("--lead")?;
    let claim_start = Timestamp::from_second(
        Timestamp::now()
            .as_second()
            .saturating_add(MINUTES_BEFORE * 60 + 1)
            .saturating_add(lead),
    )
    .context("--lead is too long")?;
    let due = claim_start
        .checked_sub(SignedDuration::from_mins(MINUTES_BEFORE))
        .context("due time")?;
    let claim_end = claim_start
        .checked_add(SignedDuration::from_hours(1))
        .context("claim end")?;
    let mut conn = target.connect().await?;
    let template_id = create_template(
        target,
        &mut conn,
        merchant,
        &json!({
            "name": "bench reminders",
            "kind": "fixed",
            "amount_off": 100,
            "stock_total": opts.reminders.min(MAX_STOCK),
            "claim_start": claim_start.to_string(),
            "claim_end": claim_end.to_string(),
            "validity_hours": 24,
            "per_user_limit": 1,
        }),
    )
    .await
    .context("creating the template")?;
    drop(conn);
    eprintln!(
        "template {template_id}: claim start {claim_start}; reminders {MINUTES_BEFORE} min \
         before are due at {due} (in {:.1} s); sink on http://{sink_addr}{HOOK_PATH}",
        due.duration_since(Timestamp::now()).as_secs_f64()
    );
    Ok((template_id, due))
}

/// Waits until the sink has seen `accepted` reminders, noting progress (every 10 s before the
/// due time, every second after); true when `--timeout` after the due time came first.
async fn wait(
    sink: &Sink,
    accepted: u64,
    due: Timestamp,
    opts: &RemindersOptions,
) -> anyhow::Result<bool> {
    let deadline = due
        .checked_add(SignedDuration::try_from(opts.timeout).context("--timeout")?)
        .context("--timeout is too long")?;
    let mut last_note = Instant::now();
    loop {
        let (delivered, duplicates) = sink.progress();
        if delivered >= accepted {
            return Ok(false);
        }
        let now = Timestamp::now();
        if now >= deadline {
            return Ok(true);
        }
        let to_due = due.duration_since(now);
        let every = if to_due.is_positive() { 10 } else { 1 };
        if last_note.elapsed() >= Duration::from_secs(every) {
            last_note = Instant::now();
            let when = if to_due.is_positive() {
                format!("due in {:.0} s", to_due.as_secs_f64())
            } else {
                format!("{:.1} s after due", -to_due.as_secs_f64())
            };
            eprintln!(
                "  {when}: {delivered}/{accepted} delivered, {duplicates} duplicates, \
                 server RSS {}",
                mib(proc::rss_kb(opts.server_pid))
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The report of a run without its ceiling.
fn report(
    opts: &RemindersOptions,
    template_id: String,
    due: Timestamp,
    seeded: &Seeded,
    sink: &Sink,
    timed_out: bool,
    watched: Watched,
) -> RemindersReport {
    let t = sink.lock();
    let since_due = |at: Option<Timestamp>| at.map(|a| secs(a.duration_since(due)));
    let window = t.first_at.zip(t.last_at).map(|(a, b)| b.duration_since(a));
    let delivered = t.delivered();
    let seeding_s = seeded.took.as_secs_f64();
    RemindersReport {
        scenario: "reminders".into(),
        template_id,
        reminders: opts.reminders,
        accepted: seeded.accepted,
        rejected_too_late: seeded.too_late,
        not_sent: seeded.not_sent,
        seeding_s: round3(seeding_s),
        seeding_per_s: per_second(seeded.accepted, seeding_s),
        seeding_retries: seeded.retries,
        due_at: due,
        seeding_slack_s: secs(seeded.slack),
        delivered,
        received: t.received,
        duplicates: t.duplicates,
        foreign: t.foreign,
        posts: t.posts,
        bad_posts: t.bad_posts,
        unsigned_posts: t.unsigned_posts,
        early: t.early,
        bad_remind_at: t.bad_remind_at,
        first_delivery_after_due_s: since_due(t.first_at),
        due_to_last_delivery_s: since_due(t.last_at),
        delivery_window_s: window.map(secs),
        deliveries_per_s: window
            .filter(|w| w.is_positive())
            .map(|w| per_second(delivered, w.as_secs_f64())),
        lag_ms: (!t.lag_ms.is_empty()).then(|| LagMs {
            p50: t.lag_ms.value_at_quantile(0.5),
            p99: t.lag_ms.value_at_quantile(0.99),
            max: t.lag_ms.max(),
        }),
        timed_out,
        server: watched.server,
        server_cpu_seeding_s: cpu_delta(watched.cpu_start, seeded.cpu_seeded),
        server_cpu_delivery_s: cpu_delta(seeded.cpu_seeded, watched.cpu_end),
        bench_cpu_s: watched.bench_cpu_s,
        ceiling: None,
        ceiling_ratio: None,
    }
}
