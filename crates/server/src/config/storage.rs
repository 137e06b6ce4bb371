//! Settings of the system of record: embedded SQLite or sharded MySQL.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Embedded: one SQLite file in `server.data_dir`.
    Sqlite,
    /// Distributed: MySQL/MariaDB, N databases × M tables.
    Mysql,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    pub backend: Backend,
    /// Read connections of the SQLite pool (writes go through one connection).
    pub sqlite_read_connections: u32,
    /// fsync every SQLite commit (survives power loss). `false` keeps every acknowledged
    /// write safe from a killed process (WAL, `synchronous=NORMAL`) but not from power loss.
    pub sqlite_fsync: bool,
    pub mysql: MysqlSettings,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            backend: Backend::Sqlite,
            sqlite_read_connections: 4,
            sqlite_fsync: true,
            mysql: MysqlSettings::default(),
        }
    }
}

impl StorageSettings {
    pub(super) fn check(&self) -> anyhow::Result<()> {
        if self.backend == Backend::Mysql {
            if self.mysql.databases.is_empty() {
                anyhow::bail!("storage.mysql.databases must list at least one database URL");
            }
            if self.mysql.tables_per_database == 0 {
                anyhow::bail!("storage.mysql.tables_per_database must be at least 1");
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MysqlSettings {
    /// One URL per database (N); the first also holds the unsharded tables.
    pub databases: Vec<String>,
    /// Tables per database (M) for each sharded table.
    pub tables_per_database: u32,
    pub max_connections_per_database: u32,
}

impl Default for MysqlSettings {
    fn default() -> Self {
        Self {
            databases: Vec::new(),
            tables_per_database: 1,
            max_connections_per_database: 16,
        }
    }
}
