//! Per-connection counters and the latency histogram, merged once at the end of a run.
//!
//! Everything here is updated on the hot path, so recording allocates nothing after the first
//! occurrence of a status or problem `code`.

use crate::problem::problem_code;
use anyhow::Context;
use hdrhistogram::Histogram;
use std::time::Duration;

/// Highest latency the histogram tracks exactly (60 s, in microseconds); longer values are
/// clamped to it.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Kinds of transport failure (no HTTP response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportError {
    /// The TCP connect or the HTTP handshake failed.
    Connect,
    /// The request was sent but the connection failed before a full response arrived.
    Io,
    /// No full response within `--timeout`.
    Timeout,
}

impl TransportError {
    pub const ALL: [TransportError; 3] = [Self::Connect, Self::Io, Self::Timeout];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Io => "io",
            Self::Timeout => "timeout",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Connect => 0,
            Self::Io => 1,
            Self::Timeout => 2,
        }
    }
}

/// What one connection (or, merged, a whole run) observed inside the measurement window.
///
/// `requests = successes + errors`, where `errors` are non-2xx responses plus transport
/// failures. Latency is recorded for every HTTP response (2xx or not), not for transport
/// failures.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency in microseconds.
    pub latency: Histogram<u64>,
    /// Latency of the answers that were not load refusals (anything but 429 and 503).
    pub admitted: Histogram<u64>,
    /// Latency of the load refusals: 429 (rate limited) and 503 (shed).
    pub refused: Histogram<u64>,
    pub requests: u64,
    pub successes: u64,
    /// Non-2xx responses and transport failures.
    pub errors: u64,
    /// Responses by HTTP status.
    pub status: Vec<(u16, u64)>,
    /// Non-2xx responses by problem+json `code` (those that carry one).
    pub codes: Vec<(Box<str>, u64)>,
    /// Transport failures by kind, indexed like `TransportError::ALL`.
    pub transport: [u64; 3],
}

impl Stats {
    pub fn new() -> anyhow::Result<Self> {
        let latency = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
            .context("creating the latency histogram")?;
        Ok(Self {
            admitted: latency.clone(),
            refused: latency.clone(),
            latency,
            requests: 0,
            successes: 0,
            errors: 0,
            status: Vec::with_capacity(8),
            codes: Vec::with_capacity(8),
            transport: [0; 3],
        })
    }

    /// Records one HTTP response. `body` is only looked at for non-2xx answers.
    pub fn record_response(&mut self, latency: Duration, status: u16, body: &[u8]) {
        self.record_step_response(latency, status, body, None);
    }

    /// Records the answer that ended an operation of several requests. A non-2xx answer's
    /// problem `code` is counted as `"{step} {code}"` (e.g. `lock COUPON_NOT_USABLE`), so the
    /// report says which request of the chain failed.
    pub fn record_step_response(
        &mut self,
        latency: Duration,
        status: u16,
        body: &[u8],
        step: Option<&str>,
    ) {
        self.requests += 1;
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency.saturating_record(us.clamp(1, MAX_LATENCY_US));
        if status == 429 || status == 503 {
            self.refused.saturating_record(us.clamp(1, MAX_LATENCY_US));
        } else {
            self.admitted.saturating_record(us.clamp(1, MAX_LATENCY_US));
        }
        match self.status.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => self.status.push((status, 1)),
        }
        if (200..300).contains(&status) {
            self.successes += 1;
            return;
        }
        self.errors += 1;
        if let Some(code) = problem_code(body) {
            match self
                .codes
                .iter_mut()
                .find(|(c, _)| same_code(c.as_bytes(), step, code))
            {
                Some((_, n)) => *n += 1,
                None => {
                    let code = String::from_utf8_lossy(code);
                    let key = match step {
                        Some(s) => format!("{s} {code}"),
                        None => code.into_owned(),
                    };
                    self.codes.push((key.into(), 1));
                }
            }
        }
    }

    /// Records a request that got no HTTP response.
    pub fn record_transport_error(&mut self, kind: TransportError) {
        self.requests += 1;
        self.errors += 1;
        self.transport[kind.index()] += 1;
    }

    pub fn transport_errors(&self) -> u64 {
        self.transport.iter().sum()
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Stats) -> anyhow::Result<()> {
        self.latency
            .add(&other.latency)
            .context("merging latency histograms")?;
        self.admitted
            .add(&other.admitted)
            .context("merging latency histograms")?;
        self.refused
            .add(&other.refused)
            .context("merging latency histograms")?;
        self.requests += other.requests;
        self.successes += other.successes;
        self.errors += other.errors;
        for &(s, n) in &other.status {
            match self.status.iter_mut().find(|(x, _)| *x == s) {
                Some((_, m)) => *m += n,
                None => self.status.push((s, n)),
            }
        }
        for (c, n) in &other.codes {
            match self.codes.iter_mut().find(|(x, _)| x == c) {
                Some((_, m)) => *m += n,
                None => self.codes.push((c.clone(), *n)),
            }
        }
        for (a, b) in self.transport.iter_mut().zip(other.transport) {
            *a += b;
        }
        Ok(())
    }
}

/// Whether the counted key `key` is `code` (or `"{step} {code}"`), compared without allocating.
fn same_code(key: &[u8], step: Option<&str>, code: &[u8]) -> bool {
    match step {
        None => key == code,
        Some(s) => key
            .strip_prefix(s.as_bytes())
            .and_then(|rest| rest.strip_prefix(b" "))
            .is_some_and(|rest| rest == code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_and_merge() -> anyhow::Result<()> {
        let mut a = Stats::new()?;
        a.record_response(Duration::from_micros(100), 201, b"{}");
        a.record_response(Duration::from_micros(200), 409, br#"{"code":"SOLD_OUT"}"#);
        a.record_transport_error(TransportError::Timeout);
        let mut b = Stats::new()?;
        b.record_response(
            Duration::from_micros(300),
            409,
            br#"{"code":"LIMIT_REACHED"}"#,
        );
        b.record_response(Duration::from_micros(300), 409, br#"{"code":"SOLD_OUT"}"#);
        b.record_response(Duration::from_micros(300), 503, b"busy");
        a.merge(&b)?;
        assert_eq!(a.requests, 6);
        assert_eq!(a.successes, 1);
        assert_eq!(a.errors, 5);
        assert_eq!(a.successes + a.errors, a.requests);
        assert_eq!(a.latency.len(), 5);
        assert_eq!((a.admitted.len(), a.refused.len()), (4, 1));
        assert_eq!(a.transport_errors(), 1);
        let sold = a.codes.iter().find(|(c, _)| &**c == "SOLD_OUT");
        assert_eq!(sold.map(|x| x.1), Some(2));
        let s409 = a.status.iter().find(|(s, _)| *s == 409);
        assert_eq!(s409.map(|x| x.1), Some(3));
        Ok(())
    }

    #[test]
    fn step_codes_are_named_after_their_step() -> anyhow::Result<()> {
        let mut a = Stats::new()?;
        let body = br#"{"code":"CONFLICT"}"#;
        let us = Duration::from_micros(100);
        a.record_step_response(us, 409, body, Some("lock"));
        a.record_step_response(us, 409, body, Some("lock"));
        a.record_step_response(us, 409, body, Some("redeem"));
        a.record_step_response(us, 409, body, None);
        a.record_step_response(us, 200, body, Some("redeem"));
        let count = |k: &str| a.codes.iter().find(|(c, _)| &**c == k).map(|x| x.1);
        assert_eq!(count("lock CONFLICT"), Some(2));
        assert_eq!(count("redeem CONFLICT"), Some(1));
        assert_eq!(count("CONFLICT"), Some(1));
        assert_eq!(a.codes.len(), 3);
        assert_eq!((a.requests, a.successes, a.errors), (5, 1, 4));
        Ok(())
    }
}
