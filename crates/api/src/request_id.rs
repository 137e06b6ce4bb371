//! Request context: every response carries `x-request-id` (the client's, when it sent a sane
//! one, else ours), error bodies quote it, and one structured access-log line is written per
//! request. The id lives in a task-local for the request's duration so any error rendered
//! inside the handler can read it without threading it through every call.

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use std::io::Write;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub const HEADER: &str = "x-request-id";
/// The target access lines are logged under (the server formats these lines itself).
pub const ACCESS_TARGET: &str = "stampede::access";

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
    let started = Instant::now();
    let mut resp = REQUEST_ID.scope(id.clone(), next.run(req)).await;
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
        micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    resp.headers_mut().insert(HEADER, id);
    resp
}
