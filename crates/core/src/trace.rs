//! W3C Trace Context: the `traceparent` a request arrives with (or a new trace when it has none
//! or a malformed one), and the context of the request or job step being handled, kept in a
//! task-local so anything on that task can read it without threading it through every call.
//!
//! Format (version `00`): `00-<trace-id: 32 hex>-<parent-id: 16 hex>-<flags: 2 hex>`, lowercase;
//! an all-zero trace or parent id is invalid, version `ff` is invalid, and a later version is
//! read by its first four fields (as the recommendation asks of version-00 parsers).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether traces this process started are worth recording in events (spans are exported).
static RECORD_OWN: AtomicBool = AtomicBool::new(false);

/// Makes events record the traces this process starts too (set at start when spans are
/// exported). Otherwise only a caller's trace is recorded: a trace nobody follows is ~55
/// bytes per claim in the journal, the claim log and the outbox for nothing (measured: about
/// 8 % of embedded claim throughput).
pub fn record_own_traces(on: bool) {
    RECORD_OWN.store(on, Ordering::Relaxed);
}

/// The trace a unit of work belongs to and its own span id in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    /// This unit's span id (what a callee sees as its parent id).
    pub span_id: u64,
    /// The caller's span id, when the trace came from a `traceparent`.
    pub parent_id: Option<u64>,
    /// The `sampled` flag, kept from the caller (new traces are sampled).
    pub sampled: bool,
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

impl TraceContext {
    /// A new trace, this unit its root.
    pub fn root() -> Self {
        Self {
            trace_id: nonzero(rand::random::<u128>),
            span_id: nonzero(rand::random::<u64>),
            parent_id: None,
            sampled: true,
        }
    }

    /// A span of the trace `traceparent` names, or a new trace when it is absent or malformed
    /// (a malformed header is ignored, never an error: tracing must not fail a request).
    pub fn continue_from(traceparent: Option<&[u8]>) -> Self {
        match traceparent.and_then(parse) {
            Some((trace_id, parent, flags)) => Self {
                trace_id,
                span_id: nonzero(rand::random::<u64>),
                parent_id: Some(parent),
                sampled: flags & 1 == 1,
            },
            None => Self::root(),
        }
    }

    /// Whether the events this unit writes should carry its trace: it continues a caller's
    /// trace, or this process exports its own (see [`record_own_traces`]).
    pub fn recorded(&self) -> bool {
        self.parent_id.is_some() || RECORD_OWN.load(Ordering::Relaxed)
    }

    /// The `traceparent` value naming this unit as the parent (what it passes on).
    pub fn traceparent(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }

    /// The trace id as 32 lowercase hex digits (for logs).
    pub fn trace_hex(&self) -> TraceHex {
        TraceHex(self.trace_id)
    }

    /// Runs `f` with `self` as the current context.
    pub async fn scope<F: Future>(self, f: F) -> F::Output {
        CURRENT.scope(self, f).await
    }

    /// The context of the request or job step running on this task, if any.
    pub fn current() -> Option<TraceContext> {
        CURRENT.try_with(|c| *c).ok()
    }
}

/// Displays a trace id as 32 hex digits without allocating.
#[derive(Debug, Clone, Copy)]
pub struct TraceHex(u128);

impl fmt::Display for TraceHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

fn nonzero<T: PartialEq + Default>(mut draw: impl FnMut() -> T) -> T {
    loop {
        let v = draw();
        if v != T::default() {
            return v;
        }
    }
}

/// `(trace id, parent id, flags)` of a valid `traceparent`.
pub fn parse(v: &[u8]) -> Option<(u128, u64, u8)> {
    if v.len() < 55 || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let version = hex::<u8>(&v[0..2])?;
    if version == 0xff || (version == 0 && v.len() != 55) {
        return None;
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let trace = hex::<u128>(&v[3..35])?;
    let parent = hex::<u64>(&v[36..52])?;
    let flags = hex::<u8>(&v[53..55])?;
    (trace != 0 && parent != 0).then_some((trace, parent, flags))
}

/// Lowercase hex only (the format forbids uppercase).
fn hex<T: TryFrom<u128>>(digits: &[u8]) -> Option<T> {
    let mut n: u128 = 0;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        n = (n << 4) | u128::from(v);
    }
    T::try_from(n).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_span() {
        let c = TraceContext::continue_from(Some(VALID.as_bytes()));
        assert_eq!(c.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(c.parent_id, Some(0x00f067aa0ba902b7));
        assert_ne!(c.span_id, 0x00f067aa0ba902b7);
        assert!(c.sampled);
        let out = c.traceparent();
        assert!(
            out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{out}"
        );
        assert!(out.ends_with("-01"));
        assert_eq!(parse(out.as_bytes()).map(|p| p.1), Some(c.span_id));
        let unsampled = VALID.replace("-01", "-00");
        assert!(!TraceContext::continue_from(Some(unsampled.as_bytes())).sampled);
    }

    #[test]
    fn malformed_traceparents_start_a_new_trace() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ];
        for b in bad {
            assert_eq!(parse(b.as_bytes()), None, "{b:?}");
            let c = TraceContext::continue_from(Some(b.as_bytes()));
            assert_eq!(c.parent_id, None, "{b:?}");
            assert_ne!(c.trace_id, 0);
        }
        // A later version is read by its first fields, extra fields allowed.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever";
        assert!(parse(future.as_bytes()).is_some());
    }

    #[test]
    fn a_callers_trace_is_recorded_and_an_own_one_only_when_exported() {
        assert!(TraceContext::continue_from(Some(VALID.as_bytes())).recorded());
        let own = TraceContext::root();
        assert!(!own.recorded());
        record_own_traces(true);
        assert!(own.recorded());
        record_own_traces(false);
    }

    #[tokio::test]
    async fn the_current_context_is_the_scope_s() {
        assert_eq!(TraceContext::current(), None);
        let c = TraceContext::root();
        let seen = c.scope(async { TraceContext::current() }).await;
        assert_eq!(seen, Some(c));
        assert_eq!(format!("{}", c.trace_hex()).len(), 32);
    }
}
