//! Storage ports: what the use cases need from a system of record, by capability. Each
//! method that changes data is one transaction in the adapter, including its audit entry.

use async_trait::async_trait;
use jiff::Timestamp;
use stampede_domain::audit::AuditEntry;
use stampede_domain::auth::Role;
use stampede_domain::ids::{GoodsId, ShopId, TemplateId};
use stampede_domain::template::{ChangeError, Kind, Template, TemplateChange, TemplateStatus};

/// A dependency a node talks to; named in `/readyz`, in metrics and in the `dependency` member
/// of a 503 answer, so an operator sees at once what is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dependency {
    /// The system of record (SQLite, or the MySQL databases).
    Database,
    /// The distributed hot store (Redis).
    Redis,
    /// The event broker.
    Broker,
}

impl Dependency {
    pub fn as_str(self) -> &'static str {
        match self {
            Dependency::Database => "database",
            Dependency::Redis => "redis",
            Dependency::Broker => "broker",
        }
    }
}

impl std::fmt::Display for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key already holds this value (e.g. a username).
    #[error("duplicate: {0}")]
    Duplicate(String),
    /// A stored row could not be read back into a domain value.
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// The database could not be reached or failed the statement.
    #[error("storage failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The dependency is down, unreachable or did not answer within its deadline (or its
    /// circuit breaker is open): nothing was done, or the outcome is not known.
    #[error("{dependency} unavailable")]
    Unavailable {
        dependency: Dependency,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A write was sent but its answer was lost (connection reset or deadline after the
    /// request left): it may or may not have happened. Only the caller can resolve it (a claim
    /// looks itself up by its idempotency key).
    #[error("{dependency}: the outcome of a sent request is unknown")]
    OutcomeUnknown {
        dependency: Dependency,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What an `Idempotency-Key` bound a creation to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub shop_id: ShopId,
    pub key: String,
    /// SHA-256 (hex) of the canonical request body.
    pub request_hash: String,
    pub template_id: TemplateId,
    pub created_at: Timestamp,
}

// Returned once per create and matched at once; boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum CreateOutcome {
    Created,
    /// The idempotency key was already used; nothing was written.
    KeyExists {
        record: IdempotencyRecord,
        template: Option<Template>,
    },
}

#[derive(Debug, Clone)]
pub struct TemplateQuery {
    /// `None` only for admins listing every shop.
    pub shop_id: Option<ShopId>,
    pub status: Option<TemplateStatus>,
    pub kind: Option<Kind>,
    /// Case-insensitive substring of the name.
    pub name: Option<String>,
    /// Templates listing this goods id (goods-scoped ones).
    pub goods_id: Option<GoodsId>,
    /// Templates whose claim window `[claim_start, claim_end)` overlaps
    /// `[claim_from, claim_to)`; either end may be open.
    pub claim_from: Option<Timestamp>,
    pub claim_to: Option<Timestamp>,
    /// 1-based.
    pub page: u32,
    pub page_size: u32,
    /// Decides `active` vs `ended` for templates the end sweep has not reached yet.
    pub now: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}

#[derive(Debug)]
pub enum ChangeOutcome {
    Changed(Template),
    /// The change had already happened; nothing was written.
    Unchanged(Template),
    Refused(ChangeError),
    NotFound,
    /// The idempotency key was already bound (to this or another request); nothing written.
    KeyExists(IdempotencyRecord),
}

#[async_trait]
pub trait TemplateStore: Send + Sync + 'static {
    /// Inserts `t`, its audit entry and (when given) its idempotency record in one
    /// transaction. A key already present for the shop writes nothing and returns what it
    /// was bound to.
    async fn create_template(
        &self,
        t: &Template,
        audit: &AuditEntry,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<CreateOutcome, StoreError>;

    /// The record `key` is bound to in `shop`, with the template it points at.
    async fn find_idempotency_key(
        &self,
        shop: ShopId,
        key: &str,
    ) -> Result<Option<(IdempotencyRecord, Option<Template>)>, StoreError>;

    async fn get_template(&self, id: TemplateId) -> Result<Option<Template>, StoreError>;

    /// The templates of `ids` that exist, in no particular order: one query per shard
    /// holding any of them (a user's reminders span shops).
    async fn get_templates(&self, ids: &[TemplateId]) -> Result<Vec<Template>, StoreError>;

    /// Newest first (by id), with the total matching count.
    async fn list_templates(&self, q: &TemplateQuery) -> Result<Page<Template>, StoreError>;

    /// Locks the row, lets `Template::apply` decide, and writes the new state with its audit
    /// entry in one transaction.
    async fn change_template(
        &self,
        id: TemplateId,
        change: TemplateChange,
        actor: &str,
        now: Timestamp,
    ) -> Result<ChangeOutcome, StoreError> {
        self.change_template_keyed(id, change, actor, now, None)
            .await
    }

    /// `change_template` that also binds an idempotency key to the change, in the same
    /// transaction, when the change happens. A key already bound in the shop writes nothing
    /// and returns `KeyExists`.
    async fn change_template_keyed(
        &self,
        id: TemplateId,
        change: TemplateChange,
        actor: &str,
        now: Timestamp,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<ChangeOutcome, StoreError>;

    /// Oldest first.
    async fn audit_log(&self, id: TemplateId) -> Result<Vec<AuditEntry>, StoreError>;

    /// Active templates whose claim window closed at or before `now`, at most `limit`.
    async fn templates_due_to_end(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<TemplateId>, StoreError>;

    /// Drops idempotency records created before `cutoff`; returns how many.
    async fn purge_idempotency_keys(&self, cutoff: Timestamp) -> Result<u64, StoreError>;

    /// Template ids in ascending order after `after`, at most `limit` (to rebuild the bloom
    /// filter of existing ids at start).
    async fn template_ids(
        &self,
        after: Option<TemplateId>,
        limit: u32,
    ) -> Result<Vec<TemplateId>, StoreError>;

    /// Whether every database behind the store answers.
    async fn ping(&self) -> Result<(), StoreError>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: i64,
    pub username: String,
    /// PHC string (argon2id).
    pub password_hash: String,
    pub role: Role,
    pub shop_id: Option<ShopId>,
    pub created_at: Timestamp,
}

#[derive(Debug)]
pub enum RefreshOutcome {
    Rotated {
        account: Account,
        session_id: String,
    },
    /// The token had already been rotated: the whole session is now revoked.
    Reused,
    /// Unknown, expired, or its session was revoked.
    Invalid,
}

#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// `StoreError::Duplicate` when the username is taken.
    async fn create_account(&self, a: &Account) -> Result<(), StoreError>;

    async fn account_by_username(&self, username: &str) -> Result<Option<Account>, StoreError>;

    /// Opens a login session with its first refresh token (stored as a hash).
    async fn create_session(
        &self,
        session_id: &str,
        account_id: i64,
        refresh_hash: &str,
        refresh_expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// In one transaction: the presented token must be current (unused, unexpired, session
    /// live); it is marked used and `next_hash` becomes the session's token. Presenting an
    /// already-used token revokes the session.
    async fn rotate_refresh(
        &self,
        presented_hash: &str,
        next_hash: &str,
        next_expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<RefreshOutcome, StoreError>;

    async fn revoke_session(&self, session_id: &str, now: Timestamp) -> Result<(), StoreError>;

    /// The session a refresh token belongs to, if it exists.
    async fn session_of_refresh(&self, refresh_hash: &str) -> Result<Option<String>, StoreError>;
}
