//! The Lua scripts, kept as `.lua` files and called by hash (`EVALSHA`), reloaded
//! automatically by `redis::Script` when the server answers `NOSCRIPT` (after a restart or a
//! failover).

use redis::Script;
use std::sync::LazyLock;

pub static CLAIM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/claim.lua")));
pub static LOAD: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/load.lua")));
pub static CHANGED: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/changed.lua")));
pub static LEASE_ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/lease_acquire.lua")));
pub static LEASE_RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/lease_release.lua")));
pub static RESERVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/reserve.lua")));
pub static RETURN_STOCK: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/return.lua")));
pub static FLOW: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/flow.lua")));
