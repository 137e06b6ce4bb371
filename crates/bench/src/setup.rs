//! Setup through the API before a measurement: many small requests with a bounded number in
//! flight ([`in_parallel`], one keep-alive connection per slot), one request bounded by the
//! setup's timeout ([`send`]), the same tried again while the server is busy
//! ([`send_until_served`]), and the templates the scenarios create ([`create_template`],
//! [`open_window`]).
//!
//! A server shedding load answers 429 (rate limited; claims are limited per user, see
//! `bulk_claim`) or 503 (unavailable): the setup pauses, longer at each attempt, and counts the
//! retry so the scenario can say how much the limit slowed it down.

use crate::auth;
use crate::client::{Body, Target};
use anyhow::{Context, bail};
use hyper::Method;
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderValue;
use jiff::{SignedDuration, Timestamp};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How often progress is printed while a bulk step runs.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// Longest a single request of the setup may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts of one request answered 429/503 before the setup gives up.
pub const BUSY_ATTEMPTS: u32 = 100;

/// Runs `f(i, conn)` for every `i` in `0..n`, `in_flight` at a time, each slot on its own
/// keep-alive connection (handed to `f` and back). The results in index order; the first
/// error stops the others and is returned. `what` names the step in the progress lines.
pub async fn in_parallel<T, F, Fut>(
    target: &Target,
    n: usize,
    in_flight: usize,
    what: &str,
    f: F,
) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize, SendRequest<Body>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<(SendRequest<Body>, T)>> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut slots = JoinSet::new();
    for _ in 0..in_flight.clamp(1, n.max(1)) {
        let (f, next, done, stop) = (f.clone(), next.clone(), done.clone(), stop.clone());
        let target = target.clone();
        slots.spawn(async move {
            let mut conn = target.connect().await?;
            let mut out = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                match f(i, conn).await {
                    Ok((c, t)) => {
                        conn = c;
                        out.push((i, t));
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
            anyhow::Ok(out)
        });
    }
    let started = Instant::now();
    let progress = {
        let (done, what) = (done.clone(), what.to_owned());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                eprintln!(
                    "  {what}: {}/{n} ({:.0} s)",
                    done.load(Ordering::Relaxed),
                    started.elapsed().as_secs_f64()
                );
            }
        })
    };
    let mut results: Vec<(usize, T)> = Vec::with_capacity(n);
    let mut first_err = None;
    while let Some(joined) = slots.join_next().await {
        match joined.context("a setup task failed") {
            Ok(Ok(out)) => results.extend(out),
            Ok(Err(e)) | Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    progress.abort();
    if let Some(e) = first_err {
        return Err(e.context(what.to_owned()));
    }
    if results.len() != n {
        bail!("{what}: {} of {n} done", results.len());
    }
    results.sort_unstable_by_key(|(i, _)| *i);
    Ok(results.into_iter().map(|(_, t)| t).collect())
}

/// One request of the setup on `conn`, given `SETUP_TIMEOUT` to answer.
pub async fn send(
    target: &Target,
    conn: &mut SendRequest<Body>,
    method: Method,
    path: &str,
    auth: &HeaderValue,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, Bytes)> {
    send_keyed(target, conn, method, path, auth, body, None).await
}

/// [`send`] with an `Idempotency-Key` (the same on every retry of one claim).
pub async fn send_keyed(
    target: &Target,
    conn: &mut SendRequest<Body>,
    method: Method,
    path: &str,
    auth: &HeaderValue,
    body: Option<&serde_json::Value>,
    key: Option<&HeaderValue>,
) -> anyhow::Result<(u16, Bytes)> {
    let (status, bytes) = tokio::time::timeout(
        SETUP_TIMEOUT,
        target.send_json_keyed(conn, method, path, Some(auth), body, key),
    )
    .await
    .with_context(|| format!("{path}: no answer within {SETUP_TIMEOUT:?}"))??;
    Ok((status.as_u16(), bytes))
}

/// The pause after busy attempt `attempt` (1-based): 100 ms more each time, at most 1 s.
pub fn busy_pause(attempt: u32) -> Duration {
    Duration::from_millis(100 * u64::from(attempt.min(10)))
}

/// [`send`], tried again after [`busy_pause`] while the answer is 429 or 503, at most
/// [`BUSY_ATTEMPTS`] times, each retry counted in `retries`. The last answer, busy or not.
pub async fn send_until_served(
    target: &Target,
    conn: &mut SendRequest<Body>,
    method: Method,
    path: &str,
    auth: &HeaderValue,
    body: Option<&serde_json::Value>,
    retries: &AtomicU64,
) -> anyhow::Result<(u16, Bytes)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (status, bytes) = send(target, conn, method.clone(), path, auth, body).await?;
        if !matches!(status, 429 | 503) || attempt >= BUSY_ATTEMPTS {
            return Ok((status, bytes));
        }
        retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(busy_pause(attempt)).await;
    }
}

/// A claim (`POST path`, no body) with its `Idempotency-Key`, tried again like
/// [`send_until_served`]; the retries carry the same key, so none claims twice.
pub async fn claim_until_served(
    target: &Target,
    conn: &mut SendRequest<Body>,
    path: &str,
    auth: &HeaderValue,
    key: &HeaderValue,
    retries: &AtomicU64,
) -> anyhow::Result<(u16, Bytes)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (status, bytes) =
            send_keyed(target, conn, Method::POST, path, auth, None, Some(key)).await?;
        if !matches!(status, 429 | 503) || attempt >= BUSY_ATTEMPTS {
            return Ok((status, bytes));
        }
        retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(busy_pause(attempt)).await;
    }
}

/// `POST /api/v1/merchant/templates` with `body`: the new template's id.
pub async fn create_template(
    target: &Target,
    conn: &mut SendRequest<Body>,
    auth: &HeaderValue,
    body: &serde_json::Value,
) -> anyhow::Result<String> {
    let path = "/api/v1/merchant/templates";
    let (status, bytes) = target
        .send_json(conn, Method::POST, path, Some(auth), Some(body))
        .await?;
    let text = String::from_utf8_lossy(&bytes);
    if status.as_u16() == 401 {
        return Err(auth::rejected(&text));
    }
    if status.as_u16() != 201 {
        bail!("{status} {text}");
    }
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).context("the created template is not JSON")?;
    id_of(&v["id"]).with_context(|| format!("the created template has no id: {text}"))
}

/// An id as the API writes it: a string (64-bit ids), or a number.
pub fn id_of(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `claim_start` and `claim_end` of a template open from a second ago for `hours`.
pub fn open_window(hours: i64) -> (String, String) {
    let now = Timestamp::now();
    let start = now - SignedDuration::from_secs(1);
    let end = now + SignedDuration::from_hours(hours);
    (start.to_string(), end.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_strings_or_numbers() {
        assert_eq!(id_of(&serde_json::json!("42")), Some("42".to_owned()));
        assert_eq!(id_of(&serde_json::json!(7)), Some("7".to_owned()));
        assert_eq!(id_of(&serde_json::json!(null)), None);
        assert_eq!(id_of(&serde_json::json!({"id": 1})), None);
    }

    #[test]
    fn busy_pauses_grow_to_a_second() {
        assert_eq!(busy_pause(1), Duration::from_millis(100));
        assert_eq!(busy_pause(3), Duration::from_millis(300));
        assert_eq!(busy_pause(10), Duration::from_secs(1));
        assert_eq!(busy_pause(BUSY_ATTEMPTS), Duration::from_secs(1));
    }

    #[test]
    fn the_window_is_open_now() -> anyhow::Result<()> {
        let (start, end) = open_window(24);
        let (start, end): (Timestamp, Timestamp) = (start.parse()?, end.parse()?);
        let now = Timestamp::now();
        assert!(start < now && now < end);
        assert_eq!(
            end.duration_since(start),
            SignedDuration::from_secs(24 * 3600 + 1)
        );
        Ok(())
    }

    #[tokio::test]
    async fn in_parallel_keeps_the_index_order_and_stops_at_an_error() -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let target = Target::resolve(&format!("http://{}", listener.local_addr()?)).await?;
        // Connections are only opened, never used: the backlog accepts them.
        let squares = in_parallel(&target, 50, 4, "squares", |i, conn| async move {
            Ok((conn, i * i))
        })
        .await?;
        assert_eq!(squares, (0..50).map(|i| i * i).collect::<Vec<_>>());
        let err = in_parallel(&target, 50, 4, "failing", |i, conn| async move {
            if i == 7 {
                bail!("item {i} failed");
            }
            Ok((conn, ()))
        })
        .await
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
        assert_eq!(err, "failing: item 7 failed");
        drop(listener);
        Ok(())
    }
}
