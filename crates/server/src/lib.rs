//! The composition root: configuration (`config`), this node's identity (`node`), the
//! stores (`storage`) and services every entry point builds (`services`, `secrets`), the
//! claim path (`claim_path`), the server's use cases, API and jobs (`use_cases`, `http`,
//! `notifiers`, `jobs`, `background`), flow control's limiter and rule poller (`flow`), the `Application` that runs them (`app`), logging
//! (`telemetry`), and the `stampede` command line (`cli`, used by `main.rs`). This is the
//! only crate that knows every adapter.

mod access_log;
pub mod app;
pub mod background;
pub mod backup;
pub mod claim_path;
pub mod cli;
pub mod config;
pub mod datagen;
pub mod flow;
pub mod http;
pub mod jobs;
mod log_writer;
pub mod node;
pub mod notifiers;
pub mod otlp;
pub mod secrets;
pub mod services;
pub mod storage;
pub mod telemetry;
pub mod use_cases;

pub use app::Application;
pub use config::Settings;
