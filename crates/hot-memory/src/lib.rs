//! The embedded hot path (`HotState` for one process): stock as an atomic per template,
//! the seqs each user holds and claim idempotency keys in sharded maps behind short `std` mutex
//! sections (never held across an await), and how a claim becomes durable before it is
//! answered: the claim journal (an fsync'd append-only file, SQLite applied behind it and
//! replayed from it at start) or the group-commit writer (the claims of many concurrent
//! requests in one SQLite transaction). Either way an acknowledged claim survives `kill -9`.
//!
//! State is rebuilt per template on first use from the system of record (stock from the
//! template row, held seqs and keys from its coupons), so a restart needs no warm-up step.
//!
//! Layout: `state.rs` (per-template hot state and the claim decision), `journal.rs` (the claim
//! journal, its applier and replay), `writer.rs` (group commit), `login.rs` (failed-login
//! counts of the login throttle, in process), `flow.rs` (the in-process rate limiter of flow
//! control).

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
