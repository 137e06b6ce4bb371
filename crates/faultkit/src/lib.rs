//! Fault injection for tests (dev-only): [`FaultProxy`], a small TCP proxy put between the
//! server and one dependency whose behaviour ([`Mode`]) is switched at run time, and
//! [`PrivateRedis`] / [`PrivateMariadb`], throw-away instances on spare ports that a test may
//! kill, restart or cut without touching the shared services.
//!
//! Why not a crate: the Rust crates around Toxiproxy are clients of its Go server, which is not
//! installed here, and nothing embeddable did cut / reset / blackhole / delay in-process.

mod process;
mod proxy;

pub use process::{PrivateMariadb, PrivateRedis, spare_port};
pub use proxy::{FaultProxy, Mode};
