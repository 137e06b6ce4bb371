//! Online copies of the SQLite file: `VACUUM INTO` writes a consistent snapshot of the
//! database (one read transaction) to a new file while the server keeps writing (WAL lets the
//! writer go on beside a reader). Why not SQLite's backup API: sqlx does not wrap it, and
//! calling `sqlite3_backup_*` on the raw handle needs `unsafe`; `VACUUM INTO` gives the
//! same consistency through plain SQL (and a compacted file).

use sqlx::Connection;
use sqlx::sqlite::SqliteConnectOptions;
use stampede_core::ports::StoreError;
use stampede_store_sql::db_err;
use std::path::Path;

/// A read-only connection to the database at `db`: a backup never migrates or changes it.
async fn read_only(db: &Path) -> Result<sqlx::SqliteConnection, StoreError> {
    let opts = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .busy_timeout(crate::BUSY_TIMEOUT);
    sqlx::SqliteConnection::connect_with(&opts)
        .await
        .map_err(db_err)
}

/// Writes a consistent snapshot of the database at `db` to `out` (which must not exist).
pub async fn snapshot_into(db: &Path, out: &Path) -> Result<(), StoreError> {
    if !db.is_file() {
        return Err(StoreError::Backend(
            format!("no database at {}", db.display()).into(),
        ));
    }
    let mut conn = read_only(db).await?;
    let target = out
        .to_str()
        .ok_or_else(|| StoreError::Backend("the backup path is not UTF-8".into()))?;
    sqlx::query("VACUUM INTO ?")
        .bind(target)
        .execute(&mut conn)
        .await
        .map_err(db_err)?;
    conn.close().await.map_err(db_err)
}

/// `PRAGMA integrity_check` on the database at `db`: `Ok` when SQLite finds nothing wrong,
/// otherwise the problems it lists.
pub async fn integrity_check(db: &Path) -> Result<(), StoreError> {
    let mut conn = read_only(db).await?;
    let rows: Vec<(String,)> = sqlx::query_as("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await
        .map_err(db_err)?;
    conn.close().await.map_err(db_err)?;
    match rows.as_slice() {
        [(ok,)] if ok == "ok" => Ok(()),
        problems => Err(StoreError::Backend(
            format!(
                "integrity check failed: {}",
                problems
                    .iter()
                    .map(|(p,)| p.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            )
            .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_snapshot_taken_while_writing_is_a_consistent_database() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = dir.path().join("live.db");
        let opts = SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
        let mut writer = sqlx::SqliteConnection::connect_with(&opts)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .execute(&mut writer)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // A write transaction stays open (uncommitted) while the snapshot is taken.
        sqlx::query("INSERT INTO t (v) VALUES ('committed')")
            .execute(&mut writer)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut writer)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        sqlx::query("INSERT INTO t (v) VALUES ('in flight')")
            .execute(&mut writer)
            .await
            .unwrap_or_else(|e| panic!("{e}"));

        let out = dir.path().join("copy.db");
        snapshot_into(&db, &out)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        sqlx::query("COMMIT")
            .execute(&mut writer)
            .await
            .unwrap_or_else(|e| panic!("{e}"));

        integrity_check(&out)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let copy_opts = SqliteConnectOptions::new().filename(&out).read_only(true);
        let mut copy = sqlx::SqliteConnection::connect_with(&copy_opts)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let rows: Vec<(String,)> = sqlx::query_as("SELECT v FROM t ORDER BY id")
            .fetch_all(&mut copy)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows, vec![("committed".to_owned(),)]);
        // VACUUM INTO refuses to overwrite: a second backup to the same path fails.
        assert!(snapshot_into(&db, &out).await.is_err());
        assert!(
            snapshot_into(&dir.path().join("missing.db"), &out)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_damaged_file_fails_the_integrity_check() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = dir.path().join("junk.db");
        std::fs::write(&db, vec![7u8; 8192]).unwrap_or_else(|e| panic!("{e}"));
        assert!(integrity_check(&db).await.is_err());
    }
}
