//! `AccountStore`: accounts, login sessions and refresh tokens, in the global tables of
//! `databases[0]` (few rows, read by unique keys: nothing to gain from sharding them).

use crate::MysqlStore;
use crate::error::{col, db_err};
use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::mysql::MySqlRow;
use stampede_core::ports::{Account, AccountStore, RefreshOutcome, StoreError};
use stampede_domain::auth::Role;
use stampede_domain::ids::ShopId;
use stampede_domain::time::{from_ms, to_ms};

const ACCOUNT_BY_USERNAME: &str = "SELECT id, username, password_hash, role, shop_id, created_at_ms FROM accounts WHERE username = ?";
const ACCOUNT_BY_ID: &str =
    "SELECT id, username, password_hash, role, shop_id, created_at_ms FROM accounts WHERE id = ?";

fn account_from_row(row: &MySqlRow) -> Result<Account, StoreError> {
    let id: i64 = col(row, "id")?;
    let bad = |what: &str| StoreError::Corrupt(format!("account {id}: bad {what}"));
    let role: String = col(row, "role")?;
    let shop_id = col::<Option<i64>>(row, "shop_id")?
        .map(|s| ShopId::new(s).ok_or_else(|| bad("shop_id")))
        .transpose()?;
    Ok(Account {
        id,
        username: col(row, "username")?,
        password_hash: col(row, "password_hash")?,
        role: Role::parse(&role).ok_or_else(|| bad("role"))?,
        shop_id,
        created_at: from_ms(col(row, "created_at_ms")?),
    })
}

#[async_trait]
impl AccountStore for MysqlStore {
    async fn create_account(&self, a: &Account) -> Result<(), StoreError> {
        let sql = "INSERT INTO accounts (id, username, password_hash, role, shop_id, created_at_ms) \
                   VALUES (?, ?, ?, ?, ?, ?)";
        sqlx::query(sql)
            .bind(a.id)
            .bind(&a.username)
            .bind(&a.password_hash)
            .bind(a.role.as_str())
            .bind(a.shop_id.map(ShopId::get))
            .bind(to_ms(a.created_at))
            .execute(self.global())
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn account_by_username(&self, username: &str) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query(ACCOUNT_BY_USERNAME)
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
        let session_id: String = col(&token, "session_id")?;
        let account_id: i64 = col(&token, "account_id")?;
        let expires_at_ms: i64 = col(&token, "expires_at_ms")?;
        let used = col::<Option<i64>>(&token, "used_at_ms")?.is_some();
        let revoked = col::<Option<i64>>(&token, "revoked_at_ms")?.is_some();

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
        let account = sqlx::query(ACCOUNT_BY_ID)
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
        row.as_ref().map(|r| col(r, "session_id")).transpose()
    }
}
