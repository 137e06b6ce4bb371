//! The embedded hot path (`HotState` for one process): stock as an atomic per template,
//! the seqs each user holds and claim idempotency keys in sharded maps behind short `std` mutex
//! sections (never held across an await), and a group-commit writer that puts the claims of
//! many concurrent requests into one SQLite transaction. A claim is answered only after the
//! transaction holding it committed, so an acknowledged claim survives `kill -9`.
//!
//! State is rebuilt per template on first use from the system of record (stock from the
//! template row, held seqs and keys from its coupons), so a restart needs no warm-up step.
//!
//! Layout: `state.rs` (per-template hot state and the claim decision), `writer.rs` (group
//! commit), `login.rs` (failed-login counts of the login throttle, in process), `flow.rs` (the
//! in-process rate limiter of flow control).

mod flow;
mod journal;
mod login;
mod state;
mod writer;

pub use flow::MemoryRateLimiter;
pub use journal::{ClaimJournal, JournalOptions, JournalStats};
pub use login::MemoryLoginAttempts;
pub use state::MemoryHotState;
pub use writer::WriterStats;
