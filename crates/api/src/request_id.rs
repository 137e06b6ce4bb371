//! Request context: every response carries `x-request-id` (the client's, when it sent a sane
//! one, else ours), error bodies quote it, and one structured access-log line is written per
//! request, counted in the HTTP metrics. The id lives in a task-local for the request's duration so any error rendered
//! inside the handler can read it without threading it through every call. The request also
//! continues the caller's W3C trace (`traceparent`; a new trace without one): its context is
//! current for the handler (`stampede_core::trace`), the access line carries the trace id, and
//! the response's `traceresponse` names the request's own span.

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use stampede_core::trace::TraceContext;
use std::io::Write;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub const HEADER: &str = "x-request-id";
/// W3C Trace Context: the caller's trace, continued by the request (a new trace without it).
pub const TRACEPARENT: &str = "traceparent";
/// The request's own trace and span id, answered so a caller can find the server's side of
/// the trace (W3C Trace Context Level 2's `traceresponse`, same format as `traceparent`).
pub const TRACERESPONSE: &str = "traceresponse";
/// The target access lines are logged under (the server formats these lines itself).
pub const ACCESS_TARGET: &str = "stampede::access";
/// Requests by `method`, `route` (the route's template, `unmatched` for none) and `status`.
pub const REQUESTS: &str = "stampede_http_requests_total";
/// Their time in the server, seconds, with the same labels (a histogram: see
/// [`DURATION_BUCKETS`]).
pub const DURATION: &str = "stampede_http_request_duration_seconds";
/// Buckets of [`DURATION`]: 0.5 ms to 5 s, dense where the SLOs sit (5-50 ms).
pub const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

tokio::task_local! {
    static REQUEST_ID: HeaderValue;
}

/// A per-process random prefix plus a counter: unique across nodes and cheaper than a UUID.
static PREFIX: LazyLock<u32> = LazyLock::new(rand::random::<u32>);
static COUNTER: AtomicU64 = AtomicU64::new(1);

/// `pppppppp-c…` in hex, formatted on the stack: the header value is the id's only copy.
fn new_id() -> HeaderValue {
    let mut buf = std::io::Cursor::new([0u8; 8 + 1 + 16]);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let len = match write!(buf, "{:08x}-{n:x}", *PREFIX) {
        Ok(()) => usize::try_from(buf.position()).unwrap_or(0),
        Err(_) => 0,
    };
    HeaderValue::from_bytes(&buf.get_ref()[..len]).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

fn acceptable(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"-_.:".contains(&c))
}

/// The caller's span, as the parent of the request's span for an exporter.
fn remote_parent(trace: &TraceContext, parent: u64) -> opentelemetry::Context {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    let flags = if trace.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from(trace.trace_id),
        SpanId::from(parent),
        flags,
        true,
        TraceState::default(),
    ))
}

/// The id of the request being handled ("-" outside a request).
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(|v| v.to_str().unwrap_or("-").to_owned())
        .unwrap_or_else(|_| "-".to_owned())
}

pub async fn request_context(req: Request, next: Next) -> Response {
    // Cheap clones only (header bytes and the matched route are reference-counted).
    let id = match req.headers().get(HEADER) {
        Some(v) if acceptable(v) => v.clone(),
        _ => new_id(),
    };
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    // Unrouted requests (404s) log their path: rare, and what one needs to see.
    let unrouted = route.is_none().then(|| req.uri().path().to_owned());
    let trace = TraceContext::continue_from(req.headers().get(TRACEPARENT).map(|v| v.as_bytes()));
    let started = Instant::now();
    // Borrows what the access line needs afterwards; moves only `next` and `req`.
    let handled = async {
        // A span per request, made inside the trace's scope (an exporter takes its ids from
        // it); at debug level, so it costs nothing unless logs or an exporter ask for it.
        let span = tracing::debug_span!(
            "request",
            method = %method,
            route = route.as_ref().map_or("unmatched", MatchedPath::as_str),
            request_id = id.to_str().unwrap_or("-"),
            trace_id = %trace.trace_hex(),
        );
        if let Some(parent) = trace.parent_id
            && !span.is_disabled()
        {
            let _ = span.set_parent(remote_parent(&trace, parent));
        }
        next.run(req).instrument(span).await
    };
    let mut resp = REQUEST_ID.scope(id.clone(), trace.scope(handled)).await;
    let elapsed = started.elapsed();
    // Unrouted requests share one label: their paths would make a series each.
    let labels = [
        ("method", method.as_str().to_owned()),
        (
            "route",
            route
                .as_ref()
                .map_or_else(|| "unmatched".to_owned(), |r| r.as_str().to_owned()),
        ),
        ("status", resp.status().as_u16().to_string()),
    ];
    metrics::counter!(REQUESTS, &labels).increment(1);
    metrics::histogram!(DURATION, &labels).record(elapsed.as_secs_f64());
    tracing::info!(
        target: ACCESS_TARGET,
        request_id = id.to_str().unwrap_or("-"),
        method = method.as_str(),
        route = route
            .as_ref()
            .map(MatchedPath::as_str)
            .or(unrouted.as_deref())
            .unwrap_or("-"),
        status = resp.status().as_u16(),
        micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        trace_id = %trace.trace_hex(),
        "request"
    );
    resp.headers_mut().insert(HEADER, id);
    if let Ok(v) = HeaderValue::from_str(&trace.traceparent()) {
        resp.headers_mut().insert(TRACERESPONSE, v);
    }
    resp
}
