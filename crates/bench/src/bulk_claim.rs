//! The claims that give the settlement scenarios' simulated users their coupons
//! ([`claim_all`]), many at a time through [`crate::setup::in_parallel`].
//!
//! Claims are rate-limited per user per node (`engine.claim_rate_per_user`, default 10/s with
//! a burst of 10). The intended setup runs the server with
//! `STAMPEDE_ENGINE__CLAIM_RATE_PER_USER=0` (no limit), so claims go as fast as the server
//! takes them. Against a limited server the setup still completes, only slower: a `429
//! RATE_LIMITED` (or a `503 UNAVAILABLE`) is retried after a pause that grows with each
//! attempt, and the number of such retries is printed.

use crate::client::Target;
use crate::setup::{claim_until_served, id_of, in_parallel};
use anyhow::{Context, bail};
use hyper::header::HeaderValue;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
    eprintln!(
        "claiming {} coupons ({} users x {}), {in_flight} in flight",
        claims.len(),
        auths.len(),
        claims.len() / auths.len().max(1)
    );
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
                    let key = HeaderValue::from_str(&format!("bench-{i}")).context("claim key")?;
                    let (status, body) =
                        claim_until_served(&t, &mut conn, path, auth, &key, &retries).await?;
                    match status {
                        201 | 200 => Ok((conn, coupon_id(&body)?)),
                        _ => bail!(
                            "claim #{i} ({path}, user #{user}): {status} {}",
                            String::from_utf8_lossy(&body)
                        ),
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
    id_of(&v["coupon"]["id"]).with_context(|| {
        format!(
            "the claim's answer has no coupon id: {}",
            String::from_utf8_lossy(body)
        )
    })
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
