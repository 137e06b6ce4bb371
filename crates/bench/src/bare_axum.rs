//! The HTTP ceiling the server's stack is judged against: an axum hello-world answering
//! `GET /healthz` with the same JSON body, on a multi-thread runtime sized like the
//! server's (one worker per core), run as a child process of this tool so it is measured
//! exactly like the server (same client, same load, same machine, same run).

use anyhow::{Context, bail};
use axum::routing::get;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[derive(serde::Serialize)]
struct Health {
    status: &'static str,
}

/// Serves until killed (the hidden `bare-axum` subcommand). With `page_bytes`, every other
/// GET is answered with a fixed JSON body of that size (`{"items":"xxx…"}`): the ceiling
/// of answers that size, whatever the server computes to write them.
pub fn serve(listen: &str, page_bytes: Option<usize>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        println!("listening on {addr}");
        let mut app = axum::Router::new().route(
            "/healthz",
            get(|| async { axum::Json(Health { status: "ok" }) }),
        );
        if let Some(n) = page_bytes {
            let page = axum::body::Bytes::from(fixed_page(n));
            app = app.fallback(get(move || {
                let page = page.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        page,
                    )
                }
            }));
        }
        axum::serve(listener, app).await.context("serving")
    })
}

/// Valid JSON of exactly `n` bytes (or the 12 of `{"items":""}` when `n` is smaller).
fn fixed_page(n: usize) -> String {
    let pad = n.saturating_sub(r#"{"items":""}"#.len());
    format!(r#"{{"items":"{}"}}"#, "x".repeat(pad))
}

/// A running bare axum server; killed when dropped.
pub struct Child {
    child: std::process::Child,
    /// `http://ADDR`.
    pub base: String,
}

impl Child {
    /// Starts this executable's `bare-axum` subcommand on a free port and waits until it
    /// listens.
    pub fn start(page_bytes: Option<usize>) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating this executable")?;
        let mut args = vec![
            "bare-axum".to_owned(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        if let Some(n) = page_bytes {
            args.extend(["--page-bytes".to_owned(), n.to_string()]);
        }
        let mut child = Command::new(exe)
            .args(&args)
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .context("starting the bare axum server")?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out)
                .read_line(&mut line)
                .context("reading the bare axum server's address")?;
        }
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            bail!("the bare axum server did not start (it said {line:?})");
        };
        let base = format!("http://{addr}");
        Ok(Self { child, base })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::fixed_page;

    #[test]
    fn a_fixed_page_is_json_of_the_size_asked() {
        for n in [0, 12, 13, 9_912] {
            let page = fixed_page(n);
            assert_eq!(page.len(), n.max(12));
            assert!(serde_json::from_str::<serde_json::Value>(&page).is_ok());
        }
    }
}
