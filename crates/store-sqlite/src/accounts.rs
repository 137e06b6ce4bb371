//! `AccountStore` on SQLite: accounts, login sessions and rotating refresh tokens.

use crate::SqliteStore;
use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use stampede_core::ports::{Account, AccountStore, RefreshOutcome, StoreError};
use stampede_domain::time::to_ms;
use stampede_store_sql::text::placeholders;
use stampede_store_sql::{SqlRow, db_err};
use std::sync::LazyLock;

static ACCOUNT_BY_ID: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {} FROM accounts WHERE id = ?", Account::COLUMNS));
static ACCOUNT_BY_USERNAME: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM accounts WHERE username = ?",
        Account::COLUMNS
    )
});

static INSERT_ACCOUNT: LazyLock<String> = LazyLock::new(|| {
    let columns = Account::COLUMNS;
    format!(
        "INSERT INTO accounts ({columns}) VALUES ({})",
        placeholders(columns)
    )
});

fn decode_account(row: &SqliteRow) -> Result<Account, StoreError> {
    Account::read(row)
}

async fn account_by_id(
    conn: &mut SqliteConnection,
    id: i64,
) -> Result<Option<Account>, StoreError> {
    let row = sqlx::query(ACCOUNT_BY_ID.as_str())
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(db_err)?;
    row.as_ref().map(decode_account).transpose()
}

async fn insert_refresh(
    conn: &mut SqliteConnection,
    token_hash: &str,
    session_id: &str,
    expires_at: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, expires_at_ms, used_at_ms) VALUES (?, ?, ?, NULL)")
        .bind(token_hash)
        .bind(session_id)
        .bind(to_ms(expires_at))
        .execute(conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn create_account(&self, a: &Account) -> Result<(), StoreError> {
        a.bind(sqlx::query(INSERT_ACCOUNT.as_str()))
            .execute(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn account_by_username(&self, username: &str) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query(ACCOUNT_BY_USERNAME.as_str())
            .bind(username)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?;
        row.as_ref().map(decode_account).transpose()
    }

    async fn create_session(
        &self,
        session_id: &str,
        account_id: i64,
        refresh_hash: &str,
        refresh_expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        sqlx::query("INSERT INTO auth_sessions (id, account_id, created_at_ms, revoked_at_ms) VALUES (?, ?, ?, NULL)")
            .bind(session_id)
            .bind(account_id)
            .bind(to_ms(now))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        insert_refresh(&mut tx, refresh_hash, session_id, refresh_expires_at).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn rotate_refresh(
        &self,
        presented_hash: &str,
        next_hash: &str,
        next_expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<RefreshOutcome, StoreError> {
        // IMMEDIATE: two concurrent refreshes with the same token are serialised, so exactly
        // one rotates and the other sees it used (and revokes the session).
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let row = sqlx::query(
            "SELECT r.session_id, r.expires_at_ms, r.used_at_ms, s.account_id, s.revoked_at_ms \
             FROM refresh_tokens r JOIN auth_sessions s ON s.id = r.session_id WHERE r.token_hash = ?",
        )
        .bind(presented_hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let Some(row) = row else {
            tx.rollback().await.map_err(db_err)?;
            return Ok(RefreshOutcome::Invalid);
        };
        let session_id: String = row.try_get("session_id").map_err(db_err)?;
        let expires_at_ms: i64 = row.try_get("expires_at_ms").map_err(db_err)?;
        let used_at_ms: Option<i64> = row.try_get("used_at_ms").map_err(db_err)?;
        let account_id: i64 = row.try_get("account_id").map_err(db_err)?;
        let revoked_at_ms: Option<i64> = row.try_get("revoked_at_ms").map_err(db_err)?;

        if revoked_at_ms.is_some() {
            tx.rollback().await.map_err(db_err)?;
            return Ok(RefreshOutcome::Invalid);
        }
        if used_at_ms.is_some() {
            // A rotated token came back: someone holds a copy. Kill the session, and commit
            // that even though the request itself fails.
            sqlx::query(
                "UPDATE auth_sessions SET revoked_at_ms = ? WHERE id = ? AND revoked_at_ms IS NULL",
            )
            .bind(to_ms(now))
            .bind(&session_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            return Ok(RefreshOutcome::Reused);
        }
        if expires_at_ms <= to_ms(now) {
            tx.rollback().await.map_err(db_err)?;
            return Ok(RefreshOutcome::Invalid);
        }
        let Some(account) = account_by_id(&mut tx, account_id).await? else {
            tx.rollback().await.map_err(db_err)?;
            return Ok(RefreshOutcome::Invalid);
        };
        sqlx::query("UPDATE refresh_tokens SET used_at_ms = ? WHERE token_hash = ?")
            .bind(to_ms(now))
            .bind(presented_hash)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        insert_refresh(&mut tx, next_hash, &session_id, next_expires_at).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(RefreshOutcome::Rotated {
            account,
            session_id,
        })
    }

    async fn revoke_session(&self, session_id: &str, now: Timestamp) -> Result<(), StoreError> {
        // Keeps the first revocation time, so repeating it changes nothing.
        sqlx::query(
            "UPDATE auth_sessions SET revoked_at_ms = ? WHERE id = ? AND revoked_at_ms IS NULL",
        )
        .bind(to_ms(now))
        .bind(session_id)
        .execute(&self.writer)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn session_of_refresh(&self, refresh_hash: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT session_id FROM refresh_tokens WHERE token_hash = ?")
            .bind(refresh_hash)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)
    }
}
