//! The reminders' seeding: one `PUT /api/v1/templates/{id}/reminders` per user, tokens
//! minted as they go (a million held at once would take ~300 MB), retried while the server is
//! busy. The first "too late" (409 `REMINDER_TOO_LATE` / `CLAIM_STARTED`: the seeding outlasted
//! `--lead`) stops it: every later PUT would be refused too.

use super::{HOOK_PATH, MINUTES_BEFORE, RemindersOptions};
use crate::auth::{self, Tokens};
use crate::client::{Body, Target};
use crate::problem::problem_code;
use crate::server_run::ServerWatch;
use crate::setup::{in_parallel, send_until_served};
use anyhow::{Context, bail};
use hyper::Method;
use hyper::client::conn::http1::SendRequest;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

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

/// What the seeding did.
#[derive(Debug)]
pub struct Seeded {
    pub accepted: u64,
    pub too_late: u64,
    pub not_sent: u64,
    pub retries: u64,
    /// From the start of `watch` to the last answer.
    pub took: Duration,
    /// The due time minus the end of the seeding; negative when it ran past the due time.
    pub slack: SignedDuration,
    /// The server's CPU seconds at the end of the seeding.
    pub cpu_seeded: Option<f64>,
}

/// One reminder `PUT` for each user of `opts` (the first user's twice first: it must be
/// idempotent, and a misconfigured server fails there), `opts.in_flight` at a time, until
/// every user has one or the due time has passed.
pub async fn seed(
    target: &Target,
    tokens: Tokens,
    template_id: &str,
    sink: SocketAddr,
    due: Timestamp,
    opts: &RemindersOptions,
    watch: &ServerWatch,
) -> anyhow::Result<Seeded> {
    let seeding = Arc::new(Seeding {
        target: target.clone(),
        tokens,
        path: format!("/api/v1/templates/{template_id}/reminders"),
        body: json!({"channel": "webhook", "minutes_before": MINUTES_BEFORE}),
        sink,
        first_user: opts.first_user,
        accepted: AtomicU64::new(0),
        too_late: AtomicU64::new(0),
        not_sent: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
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
    let took = watch.started().elapsed();
    let seeded_at = Timestamp::now();
    let cpu_seeded = watch.server_cpu();
    let accepted = seeding.accepted.load(Ordering::Relaxed);
    let too_late = seeding.too_late.load(Ordering::Relaxed);
    let not_sent = seeding.not_sent.load(Ordering::Relaxed);
    let retries = seeding.retries.load(Ordering::Relaxed);
    let slack = due.duration_since(seeded_at);
    let seeding_s = took.as_secs_f64();
    eprintln!(
        "seeded {accepted} reminders in {seeding_s:.1} s ({:.0}/s), {retries} retries; {}",
        accepted as f64 / seeding_s.max(1e-9),
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
    Ok(Seeded {
        accepted,
        too_late,
        not_sent,
        retries,
        took,
        slack,
        cpu_seeded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
