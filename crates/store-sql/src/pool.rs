//! A pool's occupancy as `/metrics` publishes it, the same for every backend.

use stampede_core::telemetry::PoolGauge;

/// `pool`'s connections in use, idle, and its maximum, labelled `database`.
pub fn pool_gauge<DB: sqlx::Database>(database: String, pool: &sqlx::Pool<DB>) -> PoolGauge {
    let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
    PoolGauge {
        database,
        in_use: pool.size().saturating_sub(idle),
        idle,
        max: pool.options().get_max_connections(),
    }
}
