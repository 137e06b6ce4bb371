//! A minimal HTTP/1.1 server for this tool's own endpoints (the reminders' webhook sink): an
//! accept loop on an already bound listener and one task per keep-alive connection, all
//! stopped when the returned [`Serving`] is dropped.

use crate::client::Body;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The accept loop; stops (with its connections) when dropped.
pub struct Serving(JoinHandle<()>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Answers every request on `listener` with `handler`; `name` prefixes accept errors.
pub fn serve<H, Fut>(name: &'static str, listener: TcpListener, handler: H) -> Serving
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    Serving(tokio::spawn(async move {
        // Owned here so that aborting the loop drops (aborts) every connection too.
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        let handler = handler.clone();
                        conns.spawn(async move {
                            let _closed = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service_fn(handler))
                                .await;
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: pause rather than spin.
                        eprintln!("{name}: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Target;
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::{Method, StatusCode};

    #[tokio::test]
    async fn answers_until_dropped() -> anyhow::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let target = Target::resolve(&format!("http://{}", listener.local_addr()?)).await?;
        let serving = serve("test", listener, |req: Request<Incoming>| async move {
            let mut resp = Response::new(Full::new(Bytes::from(req.uri().path().to_owned())));
            *resp.status_mut() = StatusCode::ACCEPTED;
            Ok(resp)
        });
        let mut conn = target.connect().await?;
        for path in ["/a", "/b"] {
            let (status, body) = target
                .send_json(&mut conn, Method::GET, path, None, None)
                .await?;
            assert_eq!((status, &body[..]), (StatusCode::ACCEPTED, path.as_bytes()));
        }
        drop(serving);
        // The abort lands at the loop's next await; the listener goes with it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(target.connect().await.is_err());
        Ok(())
    }
}
