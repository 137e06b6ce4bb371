//! Settings of the process itself: where it listens and keeps data, how it shuts down, HTTP
//! body limits and logging.

use super::units;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to listen on. Default `127.0.0.1:8080`; port 0 picks a free port.
    pub listen: String,
    /// Where the embedded mode keeps its SQLite file and generated JWT secret.
    pub data_dir: PathBuf,
    /// How long SIGTERM waits for in-flight requests and jobs before exiting. Default 10 s.
    #[serde(rename = "shutdown_grace_secs", with = "units::secs")]
    pub shutdown_grace: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./stampede-data"),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Largest JSON request body. Default 64 KiB (a template is well under 8 KiB).
    pub max_body_bytes: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
        }
    }
}

impl HttpSettings {
    pub(super) fn check(&self) -> anyhow::Result<()> {
        if self.max_body_bytes < 1024 {
            anyhow::bail!("http.max_body_bytes must be at least 1024");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable when stderr is a terminal, JSON lines otherwise.
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `stampede=debug,sqlx=warn`. `RUST_LOG` wins.
    pub level: String,
    /// Bytes of log lines waiting for the writer thread (it writes every 10 ms); beyond
    /// this, lines are dropped and counted (`stampede_log_lines_dropped_total`) rather than
    /// making a request wait.
    pub queue_bytes: usize,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
            level: "info".into(),
            queue_bytes: 8 << 20,
        }
    }
}

impl LogSettings {
    pub(super) fn check(&self) -> anyhow::Result<()> {
        if self.queue_bytes < 4096 {
            anyhow::bail!("log.queue_bytes must be at least 4096");
        }
        Ok(())
    }
}

/// Exporting spans (the request and job-step spans) over OTLP/HTTP (protobuf). Off unless
/// `otlp_endpoint` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingSettings {
    /// Where spans are sent, e.g. `http://collector:4318/v1/traces`. Default: none (no export).
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans. Default `stampede`.
    pub service_name: String,
    /// Longest one export may take. Default 5 s.
    #[serde(rename = "otlp_timeout_ms", with = "units::millis")]
    pub otlp_timeout: Duration,
    /// How often finished spans are sent (in batches, off the request path). Default 1 s.
    #[serde(rename = "export_interval_ms", with = "units::millis")]
    pub export_interval: Duration,
}

impl Default for TracingSettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "stampede".into(),
            otlp_timeout: Duration::from_secs(5),
            export_interval: Duration::from_secs(1),
        }
    }
}

impl TracingSettings {
    pub(super) fn check(&self) -> anyhow::Result<()> {
        if let Some(e) = &self.otlp_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            anyhow::bail!("tracing.otlp_endpoint must be an http:// or https:// URL, got {e:?}");
        }
        if self.service_name.is_empty() {
            anyhow::bail!("tracing.service_name must not be empty");
        }
        if self.otlp_timeout.is_zero() || self.export_interval.is_zero() {
            anyhow::bail!(
                "tracing.otlp_timeout_ms and tracing.export_interval_ms must be positive"
            );
        }
        Ok(())
    }
}
