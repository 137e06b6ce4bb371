//! The `reminders` scenario: one template whose sale starts `60 min + --lead` from now, one
//! webhook reminder 60 minutes before it for each of `--reminders` users, and a webhook sink in
//! this process that counts the server's deliveries once they are due.
//!
//! 1. The sink: an HTTP/1.1 server on `--sink-listen` answering `204` to `POST /hook` (start
//!    the server with `STAMPEDE_REMINDER__WEBHOOK_URL=http://ADDR/hook`). Of each reminder it
//!    reads only `dedupe_id`, `remind_at` and `template_id`; it counts distinct ids (a set of
//!    their 64-bit hashes) and duplicates, and records the lag from `remind_at` to receipt. A
//!    body it cannot read is answered `400` (so the server retries it) and counted.
//! 2. A merchant token and the template, its claim start on a whole second so the due time is
//!    exact; then one `PUT /api/v1/templates/{id}/reminders` per user, `--setup-in-flight` at
//!    a time on keep-alive connections, user tokens minted as they go (a million held at once
//!    would take ~300 MB). The first user's PUT is sent twice before the others: both must be
//!    accepted (idempotent), and a server without the webhook channel fails fast with a hint.
//! 3. Wait until the sink has seen every accepted reminder, or `--timeout` after the due time,
//!    sampling the server's RSS; then `--settle` more so late duplicates are counted.
//! 4. The insert ceiling of `--ceiling` with as many rows, next to the delivery rate.
//!
//! A PUT refused because the due time has passed (409 `REMINDER_TOO_LATE` / `CLAIM_STARTED`:
//! the seeding outlasted `--lead`) stops the seeding. The run still measures what was accepted,
//! from the due time, says so, and fails at the end since not every reminder was delivered.

use crate::auth::{self, Tokens};
use crate::client::{Body, Target};
use crate::insert_ceiling::{self, Ceiling, CeilingReport};
use crate::problem::problem_code;
use crate::proc;
use crate::render::{cpu_secs, dash, json_line, mib, secs3, two_columns};
use crate::round::{per_second, round3, secs};
use crate::server_run::{ServerRun, ServerWatch, cpu_delta};
use crate::setup::{create_template, in_parallel, send_until_served};
use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use stampede_domain::ids::ShopId;
use std::borrow::Cow;
use std::collections::HashSet;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The path the sink answers.
pub const HOOK_PATH: &str = "/hook";
/// Every reminder of the run is set this long before the sale.
pub const MINUTES_BEFORE: i64 = 60;
/// Lags beyond a day are clamped (something is badly wrong by then anyway).
const MAX_LAG_MS: u64 = 24 * 3_600_000;
/// How often the wait checks the sink; receipt times are taken by the sink itself, so this
/// only bounds how late the wait notices the end.
const POLL_EVERY: Duration = Duration::from_millis(50);
const MAX_STOCK: u64 = 20_000_000;

#[derive(Debug, Clone)]
pub struct RemindersOptions {
    /// Users, one reminder each: `first_user .. first_user + reminders`.
    pub reminders: u64,
    pub first_user: u64,
    /// The reminders are due this long after the template is created.
    pub lead: Duration,
    /// PUTs in flight during the seeding.
    pub in_flight: usize,
    pub sink_listen: SocketAddr,
    pub server_pid: u32,
    pub shop_id: ShopId,
    /// Give up when not everything has arrived this long after the due time.
    pub timeout: Duration,
    /// Keep the sink open this long after the last reminder, for late duplicates.
    pub settle: Duration,
    pub ceiling: Option<Ceiling>,
}

// ---------------------------------------------------------------------------------------------
// The sink.

/// A webhook body; only the fields the sink needs (the rest is skipped unparsed).
#[derive(Debug, Deserialize)]
pub struct Delivery<'a> {
    #[serde(borrow)]
    pub reminders: Vec<Item<'a>>,
}

/// One reminder of a webhook body. `Cow` borrows from the body unless a string has escapes.
#[derive(Debug, Deserialize)]
pub struct Item<'a> {
    #[serde(borrow)]
    pub dedupe_id: Cow<'a, str>,
    #[serde(borrow)]
    pub remind_at: Cow<'a, str>,
    /// Tells this run's reminders from any left over by an earlier run on the same server.
    #[serde(borrow, default)]
    pub template_id: Option<Cow<'a, str>>,
}

pub fn parse_delivery(body: &[u8]) -> Result<Delivery<'_>, serde_json::Error> {
    serde_json::from_slice(body)
}

/// The set keeps 8 bytes per id instead of the id (~40 bytes); with SipHash's fixed keys a
/// collision among a million ids has a probability around 3e-8.
fn id_key(id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

/// What the sink has received.
#[derive(Debug)]
pub struct Tally {
    template_id: String,
    seen: HashSet<u64>,
    /// HTTP requests to the hook, readable or not.
    pub posts: u64,
    /// Bodies that were not a reminder delivery (answered 400).
    pub bad_posts: u64,
    /// Posts without an `x-stampede-signature: sha256=…` header.
    pub unsigned_posts: u64,
    /// Reminders of this run received, duplicates included.
    pub received: u64,
    pub duplicates: u64,
    /// Reminders of other templates.
    pub foreign: u64,
    /// First receipts before their `remind_at` (their lag is recorded as 0).
    pub early: u64,
    /// First receipts whose `remind_at` is not an RFC 3339 time (no lag recorded).
    pub bad_remind_at: u64,
    /// When the first and the latest new id arrived.
    pub first_at: Option<Timestamp>,
    pub last_at: Option<Timestamp>,
    /// Receipt − `remind_at` of each first receipt, in milliseconds.
    pub lag_ms: Histogram<u64>,
}

impl Tally {
    /// Counts the reminders of `template_id`; room for `expected` ids is made up front so
    /// the set does not rehash during the delivery.
    pub fn new(template_id: String, expected: u64) -> anyhow::Result<Self> {
        let room = usize::try_from(expected.min(MAX_STOCK)).unwrap_or(0);
        Ok(Self {
            template_id,
            seen: HashSet::with_capacity(room),
            posts: 0,
            bad_posts: 0,
            unsigned_posts: 0,
            received: 0,
            duplicates: 0,
            foreign: 0,
            early: 0,
            bad_remind_at: 0,
            first_at: None,
            last_at: None,
            lag_ms: Histogram::new_with_max(MAX_LAG_MS, 3).context("creating the lag histogram")?,
        })
    }

    /// Distinct reminders of this run received.
    pub fn delivered(&self) -> u64 {
        self.seen.len() as u64
    }

    /// Records the reminders of one body received `at`.
    pub fn record(&mut self, items: &[Item<'_>], at: Timestamp) {
        for item in items {
            if item
                .template_id
                .as_deref()
                .is_some_and(|t| t != self.template_id)
            {
                self.foreign += 1;
                continue;
            }
            self.received += 1;
            if !self.seen.insert(id_key(&item.dedupe_id)) {
                self.duplicates += 1;
                continue;
            }
            self.first_at.get_or_insert(at);
            self.last_at = Some(at);
            match item.remind_at.parse::<Timestamp>() {
                Ok(due) => {
                    let ms = at.duration_since(due).as_millis();
                    if ms < 0 {
                        self.early += 1;
                    }
                    self.lag_ms
                        .saturating_record(u64::try_from(ms.max(0)).unwrap_or(u64::MAX));
                }
                Err(_) => self.bad_remind_at += 1,
            }
        }
    }
}

/// The sink's state, shared by its connections and the waiting scenario.
#[derive(Debug)]
pub struct Sink {
    tally: Mutex<Tally>,
}

impl Sink {
    pub fn new(tally: Tally) -> Arc<Self> {
        Arc::new(Self {
            tally: Mutex::new(tally),
        })
    }

    /// A panic elsewhere cannot leave the counters half-updated in a way that matters here.
    pub fn lock(&self) -> MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one POST body received `at`; false when it is not a reminder delivery.
    pub fn accept(&self, body: &[u8], signed: bool, at: Timestamp) -> bool {
        // Parsed outside the lock; only the counting is inside.
        let parsed = parse_delivery(body);
        let mut t = self.lock();
        t.posts += 1;
        if !signed {
            t.unsigned_posts += 1;
        }
        match parsed {
            Ok(d) => {
                t.record(&d.reminders, at);
                true
            }
            Err(_) => {
                t.bad_posts += 1;
                false
            }
        }
    }

    /// `(distinct, duplicates)` so far.
    pub fn progress(&self) -> (u64, u64) {
        let t = self.lock();
        (t.delivered(), t.duplicates)
    }
}

async fn handle(sink: Arc<Sink>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let status = if req.method() != Method::POST || req.uri().path() != HOOK_PATH {
        StatusCode::NOT_FOUND
    } else {
        let signed = req
            .headers()
            .get("x-stampede-signature")
            .is_some_and(|v| v.as_bytes().starts_with(b"sha256="));
        match req.into_body().collect().await {
            Ok(body) => {
                // Received once the whole body is in.
                let at = Timestamp::now();
                if sink.accept(&body.to_bytes(), signed, at) {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::BAD_REQUEST
                }
            }
            Err(_) => StatusCode::BAD_REQUEST,
        }
    };
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    Ok(resp)
}

/// The sink's accept loop; stops (with its connections) when dropped.
struct Serving(JoinHandle<()>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn serve(listener: TcpListener, sink: Arc<Sink>) -> Serving {
    Serving(tokio::spawn(async move {
        // Owned here so that aborting the loop drops (aborts) every connection too.
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        let sink = Arc::clone(&sink);
                        conns.spawn(async move {
                            let svc = service_fn(move |req| handle(Arc::clone(&sink), req));
                            let _closed = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: pause rather than spin.
                        eprintln!("sink: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    }))
}

// ---------------------------------------------------------------------------------------------
// The seeding.

/// How the server answered one PUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Accepted,
    /// The due time is not ahead any more.
    TooLate,
    /// 429/503: retried, and still busy after the last attempt.
    Busy,
    Refused,
}

fn classify(status: u16, body: &[u8]) -> Answer {
    match status {
        200..=299 => Answer::Accepted,
        409 if matches!(
            problem_code(body),
            Some(b"REMINDER_TOO_LATE" | b"CLAIM_STARTED")
        ) =>
        {
            Answer::TooLate
        }
        429 | 503 => Answer::Busy,
        _ => Answer::Refused,
    }
}

/// The error for a refused PUT, with a hint for the likely causes.
fn refused(status: u16, body: &[u8], sink: SocketAddr) -> anyhow::Error {
    let text = String::from_utf8_lossy(body);
    match status {
        401 => auth::rejected(&text),
        422 => anyhow::anyhow!(
            "422 {text}\nis the webhook channel on? Start the server with \
             STAMPEDE_REMINDER__WEBHOOK_URL=http://{sink}{HOOK_PATH}"
        ),
        _ => anyhow::anyhow!("{status} {text}"),
    }
}

/// What the PUTs share.
struct Seeding {
    target: Target,
    tokens: Tokens,
    path: String,
    body: Value,
    sink: SocketAddr,
    first_user: u64,
    accepted: AtomicU64,
    too_late: AtomicU64,
    not_sent: AtomicU64,
    retries: AtomicU64,
    /// Set at the first "too late": every later PUT would be refused too.
    stop: AtomicBool,
}

impl Seeding {
    /// One user's PUT, retried while the server is busy: accepted or too late.
    async fn put(&self, conn: &mut SendRequest<Body>, user: u64) -> anyhow::Result<Answer> {
        let auth = self.tokens.user(user)?;
        let (status, bytes) = send_until_served(
            &self.target,
            conn,
            Method::PUT,
            &self.path,
            &auth,
            Some(&self.body),
            &self.retries,
        )
        .await?;
        match classify(status, &bytes) {
            a @ (Answer::Accepted | Answer::TooLate) => Ok(a),
            Answer::Busy | Answer::Refused => Err(refused(status, &bytes, self.sink)
                .context(format!("PUT {} as user {user}", self.path))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The report.

/// Percentiles of the lag from `remind_at` to receipt, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LagMs {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemindersReport {
    pub scenario: String,
    pub template_id: String,
    /// Reminders asked for (one user each).
    pub reminders: u64,
    /// PUTs answered 2xx.
    pub accepted: u64,
    /// PUTs refused because the due time had passed.
    pub rejected_too_late: u64,
    /// PUTs skipped after the first "too late".
    pub not_sent: u64,
    pub seeding_s: f64,
    /// `accepted / seeding_s`.
    pub seeding_per_s: f64,
    /// PUTs answered 429/503 and tried again.
    pub seeding_retries: u64,
    /// `claim_start − 60 min`.
    pub due_at: Timestamp,
    /// Due time − end of the seeding; negative when the seeding ran past the due time.
    pub seeding_slack_s: f64,
    /// Distinct reminders of this run received.
    pub delivered: u64,
    /// Reminders of this run received, duplicates included.
    pub received: u64,
    pub duplicates: u64,
    /// Reminders of other templates (left over from earlier runs).
    pub foreign: u64,
    pub posts: u64,
    pub bad_posts: u64,
    pub unsigned_posts: u64,
    /// Received before their `remind_at`.
    pub early: u64,
    pub bad_remind_at: u64,
    pub first_delivery_after_due_s: Option<f64>,
    /// Due time → receipt of the last new reminder: the headline number.
    pub due_to_last_delivery_s: Option<f64>,
    /// First → last new reminder.
    pub delivery_window_s: Option<f64>,
    /// `delivered / delivery_window_s`.
    pub deliveries_per_s: Option<f64>,
    pub lag_ms: Option<LagMs>,
    /// The wait ended at `--timeout` with reminders missing.
    pub timed_out: bool,
    /// From the start of the seeding to the end of the wait.
    pub server: ServerRun,
    pub server_cpu_seeding_s: Option<f64>,
    /// From the end of the seeding to the end of the wait.
    pub server_cpu_delivery_s: Option<f64>,
    pub bench_cpu_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<CeilingReport>,
    /// `deliveries_per_s` divided by the ceiling's rows/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling_ratio: Option<f64>,
}

impl RemindersReport {
    pub fn all_delivered(&self) -> bool {
        self.delivered >= self.reminders
    }

    /// The one-line JSON summary.
    pub fn to_json_line(&self) -> String {
        json_line(self)
    }

    /// The delivery and, when measured, the insert ceiling side by side.
    pub fn to_table(&self) -> String {
        let c = self.ceiling.as_ref();
        let mut rows: Vec<(&str, String, String)> = vec![
            (
                "scenario",
                "reminders (webhook)".into(),
                c.map_or_else(dash, CeilingReport::title),
            ),
            (
                "reminders",
                self.reminders.to_string(),
                c.map_or_else(dash, |c| c.rows.to_string()),
            ),
            ("accepted (PUT 2xx)", self.accepted.to_string(), dash()),
        ];
        if self.rejected_too_late + self.not_sent > 0 {
            rows.push((
                "refused too late / not sent",
                format!("{} / {}", self.rejected_too_late, self.not_sent),
                dash(),
            ));
        }
        rows.extend([
            ("seeding", secs3(Some(self.seeding_s)), dash()),
            (
                "seeding rate",
                format!("{:.0}/s", self.seeding_per_s),
                dash(),
            ),
            (
                "seeding retries (429/503)",
                self.seeding_retries.to_string(),
                dash(),
            ),
            ("due at", self.due_at.to_string(), dash()),
            (
                "seeding slack (due − end)",
                format!("{:+.3} s", self.seeding_slack_s),
                dash(),
            ),
            ("delivered (distinct)", self.delivered.to_string(), dash()),
            (
                "first delivery after due",
                secs3(self.first_delivery_after_due_s),
                dash(),
            ),
            (
                "due → last delivery (≤ 30 s for 1M)",
                secs3(self.due_to_last_delivery_s),
                c.map_or_else(dash, |c| secs3(Some(c.seconds))),
            ),
            (
                "delivery window (first → last)",
                secs3(self.delivery_window_s),
                dash(),
            ),
            (
                "deliveries/s",
                self.deliveries_per_s
                    .map_or_else(dash, |r| format!("{r:.0}")),
                c.map_or_else(dash, |c| format!("{:.0} rows/s", c.rows_per_s)),
            ),
            ("duplicates", self.duplicates.to_string(), dash()),
            (
                "received (with duplicates)",
                self.received.to_string(),
                dash(),
            ),
            (
                "webhook POSTs (bad / unsigned)",
                format!(
                    "{} ({} / {})",
                    self.posts, self.bad_posts, self.unsigned_posts
                ),
                dash(),
            ),
            (
                "lag p50 / p99 / max",
                self.lag_ms
                    .as_ref()
                    .map_or_else(dash, |l| format!("{} / {} / {} ms", l.p50, l.p99, l.max)),
                dash(),
            ),
        ]);
        if self.early > 0 {
            rows.push(("early (before remind_at)", self.early.to_string(), dash()));
        }
        if self.bad_remind_at > 0 {
            rows.push((
                "unreadable remind_at",
                self.bad_remind_at.to_string(),
                dash(),
            ));
        }
        if self.foreign > 0 {
            rows.push((
                "other templates' reminders",
                self.foreign.to_string(),
                dash(),
            ));
        }
        rows.extend(self.server.memory_rows());
        rows.extend([
            (
                "server CPU seeding",
                cpu_secs(self.server_cpu_seeding_s),
                dash(),
            ),
            (
                "server CPU delivery",
                cpu_secs(self.server_cpu_delivery_s),
                dash(),
            ),
            ("server CPU total", self.server.cpu_cell(), dash()),
            ("bench CPU", cpu_secs(self.bench_cpu_s), dash()),
        ]);
        if let Some(c) = c {
            rows.extend(c.own_rows());
        }
        let mut out = two_columns(&rows, c.is_some());
        if self.seeding_slack_s < 0.0 {
            let _ = writeln!(
                out,
                "note: the seeding ended {:.1} s after the due time (raise --lead); \
                 the delivery numbers still count from the due time",
                -self.seeding_slack_s
            );
        }
        if self.timed_out {
            let _ = writeln!(
                out,
                "timed out: {} of {} reminders delivered",
                self.delivered, self.reminders
            );
        }
        if let (Some(r), Some(c), Some(d)) = (self.ceiling_ratio, c, self.deliveries_per_s) {
            let _ = writeln!(
                out,
                "deliveries reach {:.1}% of the {} insert ceiling ({d:.0} / {:.0} per s)",
                r * 100.0,
                c.backend,
                c.rows_per_s
            );
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The run.

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

    // 1. The template, on a whole second (rounded up, so the lead is at least --lead) so that
    // `due` is exactly the server's.
    let tokens = Tokens::new(secret);
    let merchant = tokens.merchant("bench", opts.shop_id)?;
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
        &merchant,
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
    let sink = Sink::new(Tally::new(template_id.clone(), opts.reminders)?);
    let serving = serve(listener, Arc::clone(&sink));

    // 2. The seeding.
    let watch = ServerWatch::start(pid)?;
    let started = watch.started();
    let seeding = Arc::new(Seeding {
        target: target.clone(),
        tokens,
        path: format!("/api/v1/templates/{template_id}/reminders"),
        body: json!({"channel": "webhook", "minutes_before": MINUTES_BEFORE}),
        sink: sink_addr,
        first_user: opts.first_user,
        accepted: AtomicU64::new(0),
        too_late: AtomicU64::new(0),
        not_sent: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    // The first user twice: the PUT must be idempotent, and a misconfigured server fails here.
    let mut probe = target.connect().await?;
    for round in 1..=2 {
        match seeding.put(&mut probe, opts.first_user).await? {
            Answer::Accepted => {}
            _ => bail!(
                "the first reminder (PUT #{round}) was refused as too late: the due time \
                 {due} is already past? (--lead {:?})",
                opts.lead
            ),
        }
    }
    drop(probe);
    seeding.accepted.store(1, Ordering::Relaxed);
    let rest = usize::try_from(opts.reminders - 1).context("--reminders")?;
    eprintln!(
        "seeding {} reminders (users {}..={}), {} in flight",
        opts.reminders,
        opts.first_user,
        opts.first_user.saturating_add(opts.reminders - 1),
        opts.in_flight
    );
    if rest > 0 {
        let s = Arc::clone(&seeding);
        in_parallel(
            target,
            rest,
            opts.in_flight,
            "reminders",
            move |i, mut conn| {
                let s = Arc::clone(&s);
                async move {
                    if s.stop.load(Ordering::Relaxed) {
                        s.not_sent.fetch_add(1, Ordering::Relaxed);
                        return Ok((conn, ()));
                    }
                    let user = s.first_user.saturating_add(1 + i as u64);
                    if s.put(&mut conn, user).await? == Answer::Accepted {
                        s.accepted.fetch_add(1, Ordering::Relaxed);
                    } else {
                        s.too_late.fetch_add(1, Ordering::Relaxed);
                        s.stop.store(true, Ordering::Relaxed);
                    }
                    Ok((conn, ()))
                }
            },
        )
        .await?;
    }
    let seeding_took = started.elapsed();
    let seeded_at = Timestamp::now();
    let cpu_seeded = watch.server_cpu();
    let accepted = seeding.accepted.load(Ordering::Relaxed);
    let too_late = seeding.too_late.load(Ordering::Relaxed);
    let not_sent = seeding.not_sent.load(Ordering::Relaxed);
    let slack = due.duration_since(seeded_at);
    let seeding_s = seeding_took.as_secs_f64();
    eprintln!(
        "seeded {accepted} reminders in {seeding_s:.1} s ({:.0}/s), {} retries; {}",
        accepted as f64 / seeding_s.max(1e-9),
        seeding.retries.load(Ordering::Relaxed),
        if slack.is_negative() {
            format!(
                "{:.1} s AFTER the due time ({too_late} refused as too late, {not_sent} not \
                 sent): raise --lead",
                -slack.as_secs_f64()
            )
        } else {
            format!("{:.1} s before the due time", slack.as_secs_f64())
        }
    );

    // 3. The wait.
    let deadline = due
        .checked_add(SignedDuration::try_from(opts.timeout).context("--timeout")?)
        .context("--timeout is too long")?;
    let mut last_note = Instant::now();
    let mut timed_out = false;
    loop {
        let (delivered, duplicates) = sink.progress();
        if delivered >= accepted {
            break;
        }
        let now = Timestamp::now();
        if now >= deadline {
            timed_out = true;
            break;
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
                mib(proc::rss_kb(pid))
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    let watched = watch.finish().await?;
    if !timed_out && !opts.settle.is_zero() {
        tokio::time::sleep(opts.settle).await;
    }
    drop(serving);

    let mut report = {
        let t = sink.lock();
        let since_due = |at: Option<Timestamp>| at.map(|a| secs(a.duration_since(due)));
        let window = t.first_at.zip(t.last_at).map(|(a, b)| b.duration_since(a));
        let delivered = t.delivered();
        RemindersReport {
            scenario: "reminders".into(),
            template_id,
            reminders: opts.reminders,
            accepted,
            rejected_too_late: too_late,
            not_sent,
            seeding_s: round3(seeding_s),
            seeding_per_s: per_second(accepted, seeding_s),
            seeding_retries: seeding.retries.load(Ordering::Relaxed),
            due_at: due,
            seeding_slack_s: secs(slack),
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
            server_cpu_seeding_s: cpu_delta(watched.cpu_start, cpu_seeded),
            server_cpu_delivery_s: cpu_delta(cpu_seeded, watched.cpu_end),
            bench_cpu_s: watched.bench_cpu_s,
            ceiling: None,
            ceiling_ratio: None,
        }
    };

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

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = "777";

    fn body(items: &[(&str, &str, &str)]) -> Vec<u8> {
        let reminders: Vec<Value> = items
            .iter()
            .map(|(user, template, remind_at)| {
                json!({
                    "dedupe_id": format!("reminder:{user}:{template}:webhook:60"),
                    "user_id": user,
                    "template_id": template,
                    "template_name": "bench \"reminders\"",
                    "channel": "webhook",
                    "minutes_before": 60,
                    "claim_start": "2030-01-01T01:00:00Z",
                    "remind_at": remind_at,
                })
            })
            .collect();
        serde_json::to_vec(&json!({"event": "reminder.due", "reminders": reminders}))
            .unwrap_or_default()
    }

    fn ts(s: &str) -> anyhow::Result<Timestamp> {
        Ok(s.parse()?)
    }

    #[test]
    fn parses_only_what_it_needs() -> anyhow::Result<()> {
        let b = body(&[("1", TEMPLATE, "2030-01-01T00:00:00Z")]);
        let d = parse_delivery(&b)?;
        assert_eq!(d.reminders.len(), 1);
        let item = &d.reminders[0];
        assert_eq!(item.dedupe_id, "reminder:1:777:webhook:60");
        assert_eq!(item.remind_at, "2030-01-01T00:00:00Z");
        assert_eq!(item.template_id.as_deref(), Some(TEMPLATE));
        // Borrowed from the body, not copied.
        assert!(matches!(item.dedupe_id, Cow::Borrowed(_)));
        // Escaped strings still parse (owned).
        let d = parse_delivery(br#"{"reminders":[{"dedupe_id":"a\"b","remind_at":"x"}]}"#)?;
        assert_eq!(d.reminders[0].dedupe_id, "a\"b");
        assert_eq!(d.reminders[0].template_id, None);
        assert!(parse_delivery(b"{}").is_err());
        assert!(parse_delivery(br#"{"reminders":[{"dedupe_id":"a"}]}"#).is_err());
        assert!(parse_delivery(b"nope").is_err());
        Ok(())
    }

    #[test]
    fn counts_distinct_ids_duplicates_and_lag() -> anyhow::Result<()> {
        let mut t = Tally::new(TEMPLATE.into(), 10)?;
        let due = "2030-01-01T00:00:00Z";
        let at1 = ts("2030-01-01T00:00:01.5Z")?;
        let b = body(&[
            ("1", TEMPLATE, due),
            ("2", TEMPLATE, due),
            ("1", TEMPLATE, due),
        ]);
        t.record(&parse_delivery(&b)?.reminders, at1);
        assert_eq!((t.delivered(), t.duplicates, t.received), (2, 1, 3));
        assert_eq!(t.first_at, Some(at1));
        // A retry of the same batch later: all duplicates, the last new id's time holds.
        let at2 = ts("2030-01-01T00:00:03Z")?;
        t.record(&parse_delivery(&b)?.reminders, at2);
        assert_eq!((t.delivered(), t.duplicates, t.received), (2, 4, 6));
        assert_eq!(t.last_at, Some(at1));
        // Another template's reminder is not ours; an early one counts with lag 0.
        let b = body(&[("3", "999", due), ("3", TEMPLATE, "2030-01-01T00:00:05Z")]);
        t.record(&parse_delivery(&b)?.reminders, at2);
        assert_eq!((t.delivered(), t.foreign, t.early), (3, 1, 1));
        assert_eq!(t.last_at, Some(at2));
        assert_eq!(t.lag_ms.len(), 3);
        assert_eq!(t.lag_ms.min(), 0);
        assert!(
            t.lag_ms.equivalent(t.lag_ms.max(), 1_500),
            "{}",
            t.lag_ms.max()
        );
        let b = body(&[("4", TEMPLATE, "yesterday")]);
        t.record(&parse_delivery(&b)?.reminders, at2);
        assert_eq!((t.delivered(), t.bad_remind_at), (4, 1));
        Ok(())
    }

    #[test]
    fn id_keys_are_stable_and_distinct() {
        assert_eq!(
            id_key("reminder:1:7:webhook:60"),
            id_key("reminder:1:7:webhook:60")
        );
        let keys: HashSet<u64> = (0..100_000)
            .map(|u| id_key(&format!("reminder:{u}:7:webhook:60")))
            .collect();
        assert_eq!(keys.len(), 100_000);
    }

    #[test]
    fn sink_counts_bad_and_unsigned_posts() -> anyhow::Result<()> {
        let sink = Sink::new(Tally::new(TEMPLATE.into(), 1)?);
        let now = Timestamp::now();
        let b = body(&[("1", TEMPLATE, "2030-01-01T00:00:00Z")]);
        assert!(sink.accept(&b, true, now));
        assert!(sink.accept(&b, false, now));
        assert!(!sink.accept(b"{\"reminders\": 3}", true, now));
        let t = sink.lock();
        assert_eq!((t.posts, t.bad_posts, t.unsigned_posts), (3, 1, 1));
        assert_eq!((t.delivered(), t.duplicates), (1, 1));
        Ok(())
    }

    #[test]
    fn classifies_answers() -> anyhow::Result<()> {
        let late = br#"{"status":409,"code":"REMINDER_TOO_LATE"}"#;
        let started = br#"{"status":409,"code":"CLAIM_STARTED"}"#;
        let conflict = br#"{"status":409,"code":"CONFLICT"}"#;
        assert_eq!(classify(200, b"{}"), Answer::Accepted);
        assert_eq!(classify(204, b""), Answer::Accepted);
        assert_eq!(classify(409, late), Answer::TooLate);
        assert_eq!(classify(409, started), Answer::TooLate);
        assert_eq!(classify(409, conflict), Answer::Refused);
        assert_eq!(classify(429, b""), Answer::Busy);
        assert_eq!(classify(503, b""), Answer::Busy);
        assert_eq!(classify(422, b"{}"), Answer::Refused);
        let sink: SocketAddr = "127.0.0.1:18099".parse()?;
        let e = refused(422, b"{}", sink).to_string();
        assert!(
            e.contains("STAMPEDE_REMINDER__WEBHOOK_URL=http://127.0.0.1:18099/hook"),
            "{e}"
        );
        Ok(())
    }

    async fn post(
        target: &Target,
        conn: &mut SendRequest<Body>,
        path: &str,
        v: &Value,
    ) -> anyhow::Result<u16> {
        let (status, _) = target
            .send_json(conn, Method::POST, path, None, Some(v))
            .await?;
        Ok(status.as_u16())
    }

    #[tokio::test]
    async fn sink_answers_over_http() -> anyhow::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let sink = Sink::new(Tally::new(TEMPLATE.into(), 4)?);
        let _serving = serve(listener, Arc::clone(&sink));
        let target = Target::resolve(&format!("http://{addr}")).await?;
        // Keep-alive: every request on one connection.
        let mut conn = target.connect().await?;
        let b: Value = serde_json::from_slice(&body(&[
            ("1", TEMPLATE, "2030-01-01T00:00:00Z"),
            ("2", TEMPLATE, "2030-01-01T00:00:00Z"),
        ]))?;
        assert_eq!(post(&target, &mut conn, HOOK_PATH, &b).await?, 204);
        assert_eq!(post(&target, &mut conn, HOOK_PATH, &b).await?, 204);
        assert_eq!(
            post(&target, &mut conn, HOOK_PATH, &json!("nope")).await?,
            400
        );
        assert_eq!(
            post(&target, &mut conn, "/elsewhere", &json!({})).await?,
            404
        );
        let t = sink.lock();
        assert_eq!(
            (t.delivered(), t.duplicates, t.posts, t.bad_posts),
            (2, 2, 3, 1)
        );
        // send_json signs nothing.
        assert_eq!(t.unsigned_posts, 3);
        Ok(())
    }

    fn sample() -> anyhow::Result<RemindersReport> {
        Ok(RemindersReport {
            scenario: "reminders".into(),
            template_id: "9".into(),
            reminders: 1_000_000,
            accepted: 1_000_000,
            rejected_too_late: 0,
            not_sent: 0,
            seeding_s: 40.0,
            seeding_per_s: 25_000.0,
            seeding_retries: 0,
            due_at: ts("2030-01-01T00:00:00Z")?,
            seeding_slack_s: 110.0,
            delivered: 1_000_000,
            received: 1_000_010,
            duplicates: 10,
            foreign: 0,
            posts: 2_001,
            bad_posts: 0,
            unsigned_posts: 0,
            early: 0,
            bad_remind_at: 0,
            first_delivery_after_due_s: Some(0.2),
            due_to_last_delivery_s: Some(20.2),
            delivery_window_s: Some(20.0),
            deliveries_per_s: Some(50_000.0),
            lag_ms: Some(LagMs {
                p50: 10_000,
                p99: 19_800,
                max: 20_100,
            }),
            timed_out: false,
            server: ServerRun {
                pid: 1,
                rss_before_kb: 20_480,
                max_sampled_rss_kb: 102_400,
                peak_rss_kb: 110_592,
                rss_end_kb: 51_200,
                cpu_s: Some(12.0),
                cpu_cores: Some(0.2),
            },
            server_cpu_seeding_s: Some(8.0),
            server_cpu_delivery_s: Some(4.0),
            bench_cpu_s: Some(3.0),
            ceiling: Some(CeilingReport {
                backend: "sqlite".into(),
                target: "/tmp/c/ceiling.db".into(),
                shape: "1 connection".into(),
                rows: 1_000_000,
                seconds: 4.0,
                rows_per_s: 250_000.0,
            }),
            ceiling_ratio: Some(0.2),
        })
    }

    #[test]
    fn table_and_json_carry_the_numbers() -> anyhow::Result<()> {
        let r = sample()?;
        assert!(r.all_delivered());
        let table = r.to_table();
        for needle in [
            "sqlite insert ceiling",
            "25000/s",
            "20.200 s",
            "50000",
            "250000 rows/s",
            "10000 / 19800 / 20100 ms",
            "+110.000 s",
            "108.0 MiB",
            "2001 (0 / 0)",
            "20.0% of the sqlite insert ceiling",
        ] {
            assert!(table.contains(needle), "{needle} missing from\n{table}");
        }
        assert!(!table.contains("note:"), "{table}");
        let line = r.to_json_line();
        assert!(!line.contains('\n'));
        let back: RemindersReport = serde_json::from_str(&line)?;
        assert_eq!(back, r);
        let v: Value = serde_json::from_str(&line)?;
        assert_eq!(v["due_to_last_delivery_s"], 20.2);
        assert_eq!(v["due_at"], "2030-01-01T00:00:00Z");
        assert_eq!(v["lag_ms"]["p99"], 19_800);
        Ok(())
    }

    #[test]
    fn a_late_seeding_and_a_timeout_are_said() -> anyhow::Result<()> {
        let mut r = sample()?;
        r.ceiling = None;
        r.ceiling_ratio = None;
        r.seeding_slack_s = -3.5;
        r.rejected_too_late = 3;
        r.not_sent = 400;
        r.accepted = 999_597;
        r.delivered = 999_597;
        r.timed_out = true;
        assert!(!r.all_delivered());
        let table = r.to_table();
        assert!(table.contains("3.5 s after the due time"), "{table}");
        assert!(table.contains("3 / 400"), "{table}");
        assert!(table.contains("999597 of 1000000"), "{table}");
        assert!(!table.contains("ceiling"), "{table}");
        assert!(table.lines().all(|l| !l.ends_with(' ')), "{table}");
        Ok(())
    }
}
