//! Turning the configured URLs into pools, creating a database that does not exist yet.
//! Pools wait at most `acquire_timeout` for a connection (so a database that is down costs
//! a request that long, not the driver's 30 s), and the first connection at most
//! `connect_timeout`.

use crate::error::ConfigError;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions};
use sqlx::{AssertSqlSafe, Connection};
use stampede_core::ports::StoreError;
use stampede_store_sql::db_err;
use std::str::FromStr;
use std::time::Duration;

/// MariaDB's "unknown database" error number.
const ER_BAD_DB_ERROR: u16 = 1049;

/// One configured database: where it is and what it is called.
pub(crate) struct Target {
    pub name: String,
    /// Connects to `name`.
    pub options: MySqlConnectOptions,
    /// Connects to the same server without selecting a database (to create `name`).
    server: MySqlConnectOptions,
}

/// Database names are interpolated into DDL, so only plain identifiers are accepted.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `url` without its path (the database name), query string kept.
fn without_database(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let authority = before_query.split('/').next()?;
    Some(match query {
        Some(q) => format!("{scheme}://{authority}?{q}"),
        None => format!("{scheme}://{authority}"),
    })
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let bad =
            |why: &str| StoreError::Backend(Box::new(ConfigError(format!("database URL: {why}"))));
        let options = MySqlConnectOptions::from_str(url).map_err(|_| bad("cannot be parsed"))?;
        let name = options
            .get_database()
            .ok_or_else(|| bad("must name a database"))?
            .to_owned();
        if !valid_name(&name) {
            return Err(bad("the database name must be 1 to 64 of [A-Za-z0-9_]"));
        }
        let server = without_database(url)
            .and_then(|u| MySqlConnectOptions::from_str(&u).ok())
            .ok_or_else(|| bad("cannot be parsed"))?;
        Ok(Self {
            name,
            options,
            server,
        })
    }

    /// Where this database lives, to reject two entries naming the same one.
    pub fn identity(&self) -> (String, u16, String) {
        (
            self.options.get_host().to_owned(),
            self.options.get_port(),
            self.name.clone(),
        )
    }

    /// A pool on this database, creating the database first when the server lacks it.
    pub async fn connect(
        &self,
        max_connections: u32,
        acquire_timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<MySqlPool, StoreError> {
        // One direct connection first: a server that is down, unknown or refuses us answers
        // with its real cause at once, where the pool would retry until its acquire timeout
        // and report only that it timed out. Failing to start is reported as a backend
        // error with the driver's cause (not as a transient `Unavailable`).
        let first = tokio::time::timeout(
            connect_timeout,
            MySqlConnection::connect_with(&self.options),
        )
        .await
        .map_err(|_| {
            StoreError::Backend(Box::new(ConfigError(format!(
                "no connection to {} within {connect_timeout:?}",
                self.name
            ))))
        })?;
        match first {
            Ok(conn) => {
                if let Err(e) = conn.close().await {
                    tracing::debug!(error = %e, "closing the probe connection");
                }
            }
            Err(e) if is_unknown_database(&e) => self.create().await?,
            Err(e) => return Err(StoreError::Backend(Box::new(e))),
        }
        MySqlPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            .connect_with(self.options.clone())
            .await
            .map_err(db_err)
    }

    /// A pool that is closed from the start: what calls get while the database breaker is
    /// open, so they fail at once (`PoolClosed` → `Unavailable`) instead of waiting.
    pub async fn tripped_pool(&self) -> MySqlPool {
        let pool = MySqlPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(self.options.clone());
        pool.close().await;
        pool
    }

    async fn create(&self) -> Result<(), StoreError> {
        let mut conn = MySqlConnection::connect_with(&self.server)
            .await
            .map_err(db_err)?;
        // `name` passed `valid_name`, so it cannot break out of the quotes.
        let ddl = format!(
            "CREATE DATABASE IF NOT EXISTS `{}` CHARACTER SET utf8mb4",
            self.name
        );
        sqlx::raw_sql(AssertSqlSafe(ddl))
            .execute(&mut conn)
            .await
            .map_err(db_err)?;
        conn.close().await.map_err(db_err)
    }

    pub fn drop_statement(&self) -> String {
        format!("DROP DATABASE IF EXISTS `{}`", self.name)
    }
}

fn is_unknown_database(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .is_some_and(|d| d.number() == ER_BAD_DB_ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_the_database_and_keeps_options() {
        assert_eq!(
            without_database("mysql://root@h:3306/db").as_deref(),
            Some("mysql://root@h:3306")
        );
        assert_eq!(
            without_database("mysql://u:p@h/db?ssl-mode=disabled").as_deref(),
            Some("mysql://u:p@h?ssl-mode=disabled")
        );
        assert_eq!(without_database("mysql://h").as_deref(), Some("mysql://h"));
        assert_eq!(without_database("nonsense"), None);
    }

    #[test]
    fn accepts_only_plain_database_names() {
        assert!(Target::parse("mysql://root@127.0.0.1:3306/stampede_0").is_ok());
        assert!(Target::parse("mysql://root@127.0.0.1:3306").is_err());
        assert!(Target::parse("mysql://root@127.0.0.1:3306/a%60b").is_err());
        assert!(Target::parse("mysql://root@127.0.0.1:3306/with-dash").is_err());
    }
}
