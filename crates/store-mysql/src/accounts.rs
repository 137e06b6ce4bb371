//! `AccountStore`: accounts, login sessions and refresh tokens, in the global tables of
//! `databases[0]` (few rows, read by unique keys: nothing to gain from sharding them).

use crate::MysqlStore;
use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::mysql::MySqlRow;
use stampede_core::ports::{Account, AccountStore, RefreshOutcome, StoreError};
use stampede_domain::time::to_ms;
use stampede_store_sql::text::placeholders;
use stampede_store_sql::{Columns, SqlRow, db_err};
use std::sync::LazyLock;

static ACCOUNT_BY_USERNAME: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM accounts WHERE username = ?",
        Account::COLUMNS
    )
});
static ACCOUNT_BY_ID: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {} FROM accounts WHERE id = ?", Account::COLUMNS));
static INSERT_ACCOUNT: LazyLock<String> = LazyLock::new(|| {
    let columns = Account::COLUMNS;
    format!(
        "INSERT INTO accounts ({columns}) VALUES ({})",
        placeholders(columns)
    )
});

fn account_from_row(row: &MySqlRow) -> Result<Account, StoreError> {
    Account::read(row)
}

#[async_trait]
impl AccountStore for MysqlStore {
    async fn create_account(&self, a: &Account) -> Result<(), StoreError> {
        a.bind(sqlx::query(INSERT_ACCOUNT.as_str()))
            .execute(self.global())
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn account_by_username(&self, username: &str) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query(ACCOUNT_BY_USERNAME.as_str())
            .bind(username)
            .fetch_optional(self.global())
            .await
            .map_err(db_err)?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn create_session(
        &self,
        session_id: &str,
        account_id: i64,
        refresh_hash: &str,
        refresh_expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut tx = self.global().begin().await.map_err(db_err)?;
        sqlx::query("INSERT INTO auth_sessions (id, account_id, created_at_ms, revoked_at_ms) VALUES (?, ?, ?, NULL)")
            .bind(session_id)
            .bind(account_id)
            .bind(to_ms(now))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, session_id, expires_at_ms, used_at_ms) VALUES (?, ?, ?, NULL)",
        )
        .bind(refresh_hash)
        .bind(session_id)
        .bind(to_ms(refresh_expires_at))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn rotate_refresh(
        &self,
        presented_hash: &str,
        next_hash: &str,
        next_expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<RefreshOutcome, StoreError> {
        let now_ms = to_ms(now);
        let mut tx = self.global().begin().await.map_err(db_err)?;
        // Locking the token serialises two presentations of it: exactly one rotates, the
        // other sees it used.
        let token = sqlx::query(
            "SELECT r.session_id, r.expires_at_ms, r.used_at_ms, s.account_id, s.revoked_at_ms \
             FROM refresh_tokens r JOIN auth_sessions s ON s.id = r.session_id \
             WHERE r.token_hash = ? FOR UPDATE",
        )
        .bind(presented_hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let Some(token) = token else {
            tx.rollback().await.map_err(db_err)?;
            return Ok(RefreshOutcome::Invalid);
        };
        let session_id = token.text("session_id")?;
        let account_id = token.int("account_id")?;
        let expires_at_ms = token.int("expires_at_ms")?;
        let used = token.opt_int("used_at_ms")?.is_some();
        let revoked = token.opt_int("revoked_at_ms")?.is_some();

        if revoked {
            tx.rollback().await.map_err(db_err)?;
            return Ok(RefreshOutcome::Invalid);
        }
        if used {
            // A rotated token presented again means it leaked: end the whole session.
            sqlx::query(
                "UPDATE auth_sessions SET revoked_at_ms = ? WHERE id = ? AND revoked_at_ms IS NULL",
            )
            .bind(now_ms)
            .bind(&session_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            return Ok(RefreshOutcome::Reused);
        }
        if expires_at_ms <= now_ms {
            tx.rollback().await.map_err(db_err)?;
            return Ok(RefreshOutcome::Invalid);
        }
        let account = sqlx::query(ACCOUNT_BY_ID.as_str())
            .bind(account_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        let Some(account) = account.as_ref().map(account_from_row).transpose()? else {
            tx.rollback().await.map_err(db_err)?;
            return Ok(RefreshOutcome::Invalid);
        };
        sqlx::query("UPDATE refresh_tokens SET used_at_ms = ? WHERE token_hash = ?")
            .bind(now_ms)
            .bind(presented_hash)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, session_id, expires_at_ms, used_at_ms) VALUES (?, ?, ?, NULL)",
        )
        .bind(next_hash)
        .bind(&session_id)
        .bind(to_ms(next_expires_at))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(RefreshOutcome::Rotated {
            account,
            session_id,
        })
    }

    async fn revoke_session(&self, session_id: &str, now: Timestamp) -> Result<(), StoreError> {
        // Keeps the first revocation time; revoking again changes nothing.
        sqlx::query(
            "UPDATE auth_sessions SET revoked_at_ms = ? WHERE id = ? AND revoked_at_ms IS NULL",
        )
        .bind(to_ms(now))
        .bind(session_id)
        .execute(self.global())
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn session_of_refresh(&self, refresh_hash: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT session_id FROM refresh_tokens WHERE token_hash = ?")
            .bind(refresh_hash)
            .fetch_optional(self.global())
            .await
            .map_err(db_err)?;
        row.as_ref().map(|r| r.text("session_id")).transpose()
    }
}
