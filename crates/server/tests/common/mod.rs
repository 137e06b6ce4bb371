//! Running the real `stampede` binary from tests (shared by the HTTP suite and the crash test).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// An HTTP client for tests. reqwest is built with `rustls-no-provider` (the server installs
/// ring's provider when it builds its callback client); a test process that makes a client
/// before any server exists must install it too.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A `stampede serve` child process; killed when dropped, so a failing assertion never
/// leaves it running.
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:<port>`, as the server printed it.
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `stampede serve --config <config> --listen 127.0.0.1:0` and waits for the line it
/// prints with its address. Its stdout keeps being drained, as a supervisor would.
pub fn serve(config: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stampede"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .env("STAMPEDE_LOG__LEVEL", "warn")
        .env_remove("STAMPEDE_TEST_BACKEND")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut reader = BufReader::new(stdout);
    let mut first = String::new();
    reader
        .read_line(&mut first)
        .unwrap_or_else(|e| panic!("{e}"));
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_owned();
    Server {
        child,
        base: format!("http://{addr}"),
    }
}
