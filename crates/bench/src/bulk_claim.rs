//! Setup work in bulk for the settlement scenarios: many small requests with a bounded number
//! in flight ([`in_parallel`], one keep-alive connection per slot), and the claims that give
//! the simulated users their coupons ([`claim_all`]).
//!
//! Claims are rate-limited per user per node (`engine.claim_rate_per_user`, default 10/s with
//! a burst of 10). The intended setup runs the server with
//! `STAMPEDE_ENGINE__CLAIM_RATE_PER_USER=0` (no limit), so claims go as fast as the server
//! takes them. Against a limited server the setup still completes, only slower: a `429
//! RATE_LIMITED` (or a `503 UNAVAILABLE`) is retried after a pause that grows with each
//! attempt, and the number of such retries is printed.

use crate::client::{Body, Target};
use anyhow::{Context, bail};
use hyper::Method;
use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderValue;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How often progress is printed while a bulk step runs.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// Attempts of one claim answered 429/503 before the setup gives up.
const CLAIM_ATTEMPTS: u32 = 100;
/// Longest a single request of the setup may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

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

/// One request of the setup on `conn`, with [`SETUP_TIMEOUT`].
pub async fn send(
    target: &Target,
    conn: &mut SendRequest<Body>,
    method: Method,
    path: &str,
    auth: &HeaderValue,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, hyper::body::Bytes)> {
    let (status, bytes) = tokio::time::timeout(
        SETUP_TIMEOUT,
        target.send_json(conn, method, path, Some(auth), body),
    )
    .await
    .with_context(|| format!("{path}: no answer within {SETUP_TIMEOUT:?}"))??;
    Ok((status.as_u16(), bytes))
}

/// What [`claim_all`] did.
#[derive(Debug)]
pub struct Claimed {
    /// The claimed coupon's id, in the order of the claims asked for.
    pub coupons: Vec<String>,
    /// Claims answered 429/503 and tried again.
    pub retries: u64,
    pub elapsed: Duration,
}

/// Claims, for each `(user, template)` of `claims`, one coupon of `templates[template]` (its
/// id) as `auths[user]` (a user token), `in_flight` at a time.
pub async fn claim_all(
    target: &Target,
    auths: Arc<[HeaderValue]>,
    templates: &[String],
    claims: Arc<[(u32, u32)]>,
    in_flight: usize,
) -> anyhow::Result<Claimed> {
    let paths: Arc<[String]> = templates
        .iter()
        .map(|id| format!("/api/v1/templates/{id}/claim"))
        .collect();
    let retries = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let coupons = {
        let (t, retries, claims) = (target.clone(), retries.clone(), claims.clone());
        in_parallel(
            target,
            claims.len(),
            in_flight,
            "claims",
            move |i, mut conn| {
                let (t, retries, auths, paths) =
                    (t.clone(), retries.clone(), auths.clone(), paths.clone());
                let (user, template) = claims[i];
                async move {
                    let auth = &auths[user as usize];
                    let path = &paths[template as usize];
                    let mut attempt = 0;
                    loop {
                        attempt += 1;
                        let (status, body) =
                            send(&t, &mut conn, Method::POST, path, auth, None).await?;
                        match status {
                            201 | 200 => return Ok((conn, coupon_id(&body)?)),
                            429 | 503 if attempt < CLAIM_ATTEMPTS => {
                                retries.fetch_add(1, Ordering::Relaxed);
                                let pause = Duration::from_millis(100 * u64::from(attempt.min(10)));
                                tokio::time::sleep(pause).await;
                            }
                            _ => bail!(
                                "claim #{i} ({path}, user #{user}): {status} {}",
                                String::from_utf8_lossy(&body)
                            ),
                        }
                    }
                }
            },
        )
        .await?
    };
    let retries = retries.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    eprintln!(
        "claimed {} coupons in {:.1} s ({:.0}/s){}",
        coupons.len(),
        elapsed.as_secs_f64(),
        coupons.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        if retries > 0 {
            format!(
                "; {retries} claims were rate-limited and retried (run the server with \
                 STAMPEDE_ENGINE__CLAIM_RATE_PER_USER=0 for a faster setup)"
            )
        } else {
            String::new()
        }
    );
    Ok(Claimed {
        coupons,
        retries,
        elapsed,
    })
}

/// The coupon id of a claim's answer `{"coupon": {"id": "…", …}}`.
pub fn coupon_id(body: &[u8]) -> anyhow::Result<String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).context("the claim's answer is not JSON")?;
    match &v["coupon"]["id"] {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        _ => bail!(
            "the claim's answer has no coupon id: {}",
            String::from_utf8_lossy(body)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_coupon_id() -> anyhow::Result<()> {
        assert_eq!(
            coupon_id(br#"{"coupon":{"id":"42","status":"unused"}}"#)?,
            "42"
        );
        assert_eq!(coupon_id(br#"{"coupon":{"id":7}}"#)?, "7");
        assert!(coupon_id(br#"{"coupon":{}}"#).is_err());
        assert!(coupon_id(b"nope").is_err());
        Ok(())
    }
}
