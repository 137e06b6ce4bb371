//! A minimal HTTP/1.1 client: hyper's connection-level API over a tokio `TcpStream`, one
//! handshake per connection, reused for every request (keep-alive). No TLS, no pooling.

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use tokio::net::TcpStream;

fn json_type() -> HeaderValue {
    HeaderValue::from_static("application/json")
}

/// Request body type used everywhere (empty bodies are an empty `Bytes`, no allocation).
pub type Body = Full<Bytes>;

/// The server under test, resolved once.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `Host` header value (`host:port`).
    pub host: HeaderValue,
    /// Path prefix of `--base` without a trailing slash (usually empty).
    pub prefix: String,
}

impl Target {
    /// Parses `http://host:port[/prefix]` and resolves the host.
    pub async fn resolve(base: &str) -> anyhow::Result<Self> {
        let uri: Uri = base
            .parse()
            .with_context(|| format!("--base {base:?} is not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => bail!("--base: only http:// is supported, not {other}://"),
            None => bail!("--base {base:?} needs a scheme, e.g. http://127.0.0.1:8080"),
        }
        let host = uri
            .host()
            .with_context(|| format!("--base {base:?} has no host"))?;
        let port = uri.port_u16().unwrap_or(80);
        let lookup = host.trim_start_matches('[').trim_end_matches(']');
        let addr = tokio::net::lookup_host((lookup, port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} resolves to no address"))?;
        let authority = uri.authority().map_or(host, |a| a.as_str());
        let host = HeaderValue::from_str(authority).context("--base host")?;
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(Self { addr, host, prefix })
    }

    /// An origin-form URI (`/prefix/path`) for requests on this target.
    pub fn uri(&self, path: &str) -> anyhow::Result<Uri> {
        let full = format!("{}{}", self.prefix, path);
        Uri::from_maybe_shared(Bytes::from(full.clone()))
            .with_context(|| format!("bad request path {full:?}"))
    }

    /// A new keep-alive connection; its driver runs as a spawned task until the connection
    /// closes or the returned sender is dropped.
    pub async fn connect(&self) -> anyhow::Result<SendRequest<Body>> {
        let stream = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            let _closed = conn.await;
        });
        Ok(sender)
    }

    /// Builds a request with `Host` (and `Authorization` when given) set.
    pub fn request(
        &self,
        method: Method,
        uri: Uri,
        auth: Option<&HeaderValue>,
        body: Body,
    ) -> Request<Body> {
        let mut req = Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        let h = req.headers_mut();
        h.reserve(4);
        h.insert(HOST, self.host.clone());
        if let Some(a) = auth {
            h.insert(AUTHORIZATION, a.clone());
        }
        req
    }

    /// A POST of `body` as JSON (built on the measured path: no encoding here).
    pub fn post_json(&self, uri: Uri, auth: &HeaderValue, body: Bytes) -> Request<Body> {
        let mut req = self.request(Method::POST, uri, Some(auth), Full::new(body));
        req.headers_mut().insert(CONTENT_TYPE, json_type());
        req
    }

    /// One JSON request on `conn` (for setup, not the measured path): status and body.
    pub async fn send_json(
        &self,
        conn: &mut SendRequest<Body>,
        method: Method,
        path: &str,
        auth: Option<&HeaderValue>,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        self.send_json_keyed(conn, method, path, auth, body, None)
            .await
    }

    /// [`Self::send_json`] with an `Idempotency-Key` (claims require one).
    pub async fn send_json_keyed(
        &self,
        conn: &mut SendRequest<Body>,
        method: Method,
        path: &str,
        auth: Option<&HeaderValue>,
        body: Option<&serde_json::Value>,
        key: Option<&HeaderValue>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let payload = match body {
            Some(v) => Bytes::from(serde_json::to_vec(v).context("encoding the request body")?),
            None => Bytes::new(),
        };
        let has_body = body.is_some();
        let mut req = self.request(method, self.uri(path)?, auth, Full::new(payload));
        if has_body {
            req.headers_mut().insert(CONTENT_TYPE, json_type());
        }
        if let Some(k) = key {
            req.headers_mut().insert("idempotency-key", k.clone());
        }
        conn.ready().await.context("connection closed")?;
        let resp = conn
            .send_request(req)
            .await
            .with_context(|| format!("{path}: request failed"))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .with_context(|| format!("{path}: reading the response"))?
            .to_bytes();
        Ok((status, bytes))
    }
}

/// `Bearer <token>` as a header value whose clones share one buffer.
pub fn bearer(token: &str) -> anyhow::Result<HeaderValue> {
    HeaderValue::from_maybe_shared(Bytes::from(format!("Bearer {token}")))
        .context("the token is not a valid header value")
}
