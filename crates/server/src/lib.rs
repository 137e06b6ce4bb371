//! The composition root: configuration (`config`), wiring of stores and use cases into an
//! `Application` (`app`, `storage`), logging (`telemetry`), and the `stampede` command line
//! (`cli`, used by `main.rs`). This is the only crate that knows every adapter.

pub mod app;
pub mod cli;
pub mod config;
pub mod datagen;
pub mod engine;
pub mod storage;
pub mod telemetry;

pub use app::Application;
pub use config::Settings;
