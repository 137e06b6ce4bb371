//! `AccountStore` on SQLite: accounts, login sessions and rotating refresh tokens.

use crate::SqliteStore;
use crate::error::db;
use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use stampede_core::ports::{Account, AccountStore, RefreshOutcome, StoreError};
use stampede_domain::auth::Role;
use stampede_domain::ids::ShopId;
use stampede_domain::time::{from_ms, to_ms};

/// The `accounts` columns, as a literal so `concat!` can build `&'static str` queries.
macro_rules! account_columns {
    () => {
        "id, username, password_hash, role, shop_id, created_at_ms"
    };
}
const ACCOUNT_BY_ID: &str = concat!("SELECT ", account_columns!(), " FROM accounts WHERE id = ?");
const ACCOUNT_BY_USERNAME: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts WHERE username = ?"
);

fn decode_account(row: &SqliteRow) -> Result<Account, StoreError> {
    let id: i64 = row.try_get("id").map_err(db)?;
    let bad = |what: &str| StoreError::Corrupt(format!("account {id}: bad {what}"));
    let role: String = row.try_get("role").map_err(db)?;
    let shop_id: Option<i64> = row.try_get("shop_id").map_err(db)?;
    Ok(Account {
        id,
        username: row.try_get("username").map_err(db)?,
        password_hash: row.try_get("password_hash").map_err(db)?,
        role: Role::parse(&role).ok_or_else(|| bad("role"))?,
        shop_id: shop_id
            .map(|s| ShopId::from_stored(s).ok_or_else(|| bad("shop_id")))
            .transpose()?,
        created_at: from_ms(row.try_get("created_at_ms").map_err(db)?),
    })
}

async fn account_by_id(
    conn: &mut SqliteConnection,
    id: i64,
) -> Result<Option<Account>, StoreError> {
    let row = sqlx::query(ACCOUNT_BY_ID)
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(db)?;
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
        .map_err(db)?;
    Ok(())
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn create_account(&self, a: &Account) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT INTO accounts (",
            account_columns!(),
            ") VALUES (?, ?, ?, ?, ?, ?)"
        ))
        .bind(a.id)
        .bind(&a.username)
        .bind(&a.password_hash)
        .bind(a.role.as_str())
        .bind(a.shop_id.map(ShopId::get))
        .bind(to_ms(a.created_at))
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn account_by_username(&self, username: &str) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query(ACCOUNT_BY_USERNAME)
            .bind(username)
            .fetch_optional(&self.reader)
            .await
            .map_err(db)?;
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
            .map_err(db)?;
        sqlx::query("INSERT INTO auth_sessions (id, account_id, created_at_ms, revoked_at_ms) VALUES (?, ?, ?, NULL)")
            .bind(session_id)
            .bind(account_id)
            .bind(to_ms(now))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        insert_refresh(&mut tx, refresh_hash, session_id, refresh_expires_at).await?;
        tx.commit().await.map_err(db)?;
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
            .map_err(db)?;
        let row = sqlx::query(
            "SELECT r.session_id, r.expires_at_ms, r.used_at_ms, s.account_id, s.revoked_at_ms \
             FROM refresh_tokens r JOIN auth_sessions s ON s.id = r.session_id WHERE r.token_hash = ?",
        )
        .bind(presented_hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some(row) = row else {
            tx.rollback().await.map_err(db)?;
            return Ok(RefreshOutcome::Invalid);
        };
        let session_id: String = row.try_get("session_id").map_err(db)?;
        let expires_at_ms: i64 = row.try_get("expires_at_ms").map_err(db)?;
        let used_at_ms: Option<i64> = row.try_get("used_at_ms").map_err(db)?;
        let account_id: i64 = row.try_get("account_id").map_err(db)?;
        let revoked_at_ms: Option<i64> = row.try_get("revoked_at_ms").map_err(db)?;

        if revoked_at_ms.is_some() {
            tx.rollback().await.map_err(db)?;
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
            .map_err(db)?;
            tx.commit().await.map_err(db)?;
            return Ok(RefreshOutcome::Reused);
        }
        if expires_at_ms <= to_ms(now) {
            tx.rollback().await.map_err(db)?;
            return Ok(RefreshOutcome::Invalid);
        }
        let Some(account) = account_by_id(&mut tx, account_id).await? else {
            tx.rollback().await.map_err(db)?;
            return Ok(RefreshOutcome::Invalid);
        };
        sqlx::query("UPDATE refresh_tokens SET used_at_ms = ? WHERE token_hash = ?")
            .bind(to_ms(now))
            .bind(presented_hash)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        insert_refresh(&mut tx, next_hash, &session_id, next_expires_at).await?;
        tx.commit().await.map_err(db)?;
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
        .map_err(db)?;
        Ok(())
    }

    async fn session_of_refresh(&self, refresh_hash: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT session_id FROM refresh_tokens WHERE token_hash = ?")
            .bind(refresh_hash)
            .fetch_optional(&self.reader)
            .await
            .map_err(db)
    }
}
