//! The reminders' webhook sink: `POST /hook` bodies counted as the server delivers them.
//!
//! Of each reminder it reads only `dedupe_id`, `remind_at` and `template_id` (borrowed from
//! the body); it counts distinct ids (a set of their 64-bit hashes) and duplicates, and records
//! the lag from `remind_at` to receipt. A body it cannot read is answered `400` (so the server
//! retries it) and counted, as are posts without a signature.

use super::{HOOK_PATH, MAX_STOCK};
use crate::client::Body;
use crate::serve::{Serving, serve};
use anyhow::Context;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use jiff::Timestamp;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashSet;
use std::convert::Infallible;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::net::TcpListener;

/// Lags beyond a day are clamped (something is badly wrong by then anyway).
const MAX_LAG_MS: u64 = 24 * 3_600_000;

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

/// Serves `sink` on `listener` until the returned guard is dropped.
pub(super) fn serve_sink(listener: TcpListener, sink: Arc<Sink>) -> Serving {
    serve("sink", listener, move |req| handle(Arc::clone(&sink), req))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Target;
    use hyper::client::conn::http1::SendRequest;
    use serde_json::{Value, json};

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
        let _serving = serve_sink(listener, Arc::clone(&sink));
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
}
