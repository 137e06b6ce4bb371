//! What the load engine sends: a [`Workload`] gives each connection its next [`Operation`],
//! a single request (most scenarios) or a chain of requests sent one after the other on the
//! same connection and timed together as one (`lock-redeem`: lock then redeem), until it runs
//! out. [`RequestMix`] is the simple one: one method, random URIs and tokens.

use crate::client::{Body, Target};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{CONTENT_LENGTH, HeaderValue};
use hyper::{Method, Request, Uri};
use rand::Rng;
use rand::rngs::SmallRng;

/// One unit of work, timed from its first byte sent to the last answer read.
// Not boxed: one operation is built per request on the hot path, and moved once.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Operation {
    /// One request.
    Single(Request<Body>),
    /// Requests sent in order on one connection, each named for the error counts; the first
    /// non-2xx answer ends the chain and is counted as the operation's answer.
    Chain(Vec<(&'static str, Request<Body>)>),
}

/// A source of operations, shared by every connection of a run.
pub trait Workload: Send + Sync {
    /// The next operation, or `None` when the workload is used up (see the module docs).
    fn next(&self, target: &Target, rng: &mut SmallRng) -> Option<Operation>;

    /// HTTP requests per successful operation (for the report).
    fn requests_per_op(&self) -> u32 {
        1
    }
}

/// What to send: one method, a random URI and a random `Authorization` (if any) per request.
#[derive(Debug, Clone)]
pub struct RequestMix {
    pub method: Method,
    pub uris: Vec<Uri>,
    /// Empty: no `Authorization` header.
    pub auths: Vec<HeaderValue>,
}

impl RequestMix {
    pub fn get(uri: Uri) -> Self {
        Self {
            method: Method::GET,
            uris: vec![uri],
            auths: Vec::new(),
        }
    }

    fn request(&self, target: &Target, rng: &mut SmallRng) -> Option<Request<Body>> {
        let uri = match self.uris.len() {
            1 => self.uris.first(),
            n => self.uris.get(rng.random_range(0..n)),
        }?;
        let auth = match self.auths.len() {
            0 => None,
            n => self.auths.get(rng.random_range(0..n)),
        };
        let mut req = target.request(
            self.method.clone(),
            uri.clone(),
            auth,
            Full::new(Bytes::new()),
        );
        if self.method != Method::GET {
            // An explicit empty body (hyper omits the header for empty requests).
            req.headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        if self.method == Method::POST && uri.path().ends_with("/claim") {
            // Claims require an Idempotency-Key (`engine.claim_key_required`): one per claim.
            let key = HeaderValue::from_str(&format!("b{:016x}", rng.random::<u64>()))
                .unwrap_or_else(|_| HeaderValue::from_static("bench"));
            req.headers_mut().insert("idempotency-key", key);
        }
        Some(req)
    }
}

impl Workload for RequestMix {
    fn next(&self, target: &Target, rng: &mut SmallRng) -> Option<Operation> {
        self.request(target, rng).map(Operation::Single)
    }
}
