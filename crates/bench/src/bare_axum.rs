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

/// Serves until killed (the hidden `bare-axum` subcommand).
pub fn serve(listen: &str) -> anyhow::Result<()> {
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
        let app = axum::Router::new().route(
            "/healthz",
            get(|| async { axum::Json(Health { status: "ok" }) }),
        );
        axum::serve(listener, app).await.context("serving")
    })
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
    pub fn start() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating this executable")?;
        let mut child = Command::new(exe)
            .args(["bare-axum", "--listen", "127.0.0.1:0"])
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
