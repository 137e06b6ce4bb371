//! `CouponStore` on SQLite: user coupons, their `coupon.claimed` outbox events, and the group
//! commit that makes a whole batch of claims durable in one transaction.
//!
//! The group commit is the embedded mode's durable-acknowledgement hot path, so it keeps the
//! write lock as short as it can: rows and payloads are built before `BEGIN IMMEDIATE`, and
//! rows go in through multi-row INSERTs of a few fixed sizes (256, 128, …, 1 rows). A batch of
//! any length is cut greedily into those sizes, so only nine statement texts exist per table
//! and each stays prepared in the writer connection's statement cache.

use crate::SqliteStore;
use async_trait::async_trait;
use futures::TryStreamExt;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{AssertSqlSafe, Sqlite, SqliteConnection};
use stampede_core::claim_ports::{
    ClaimIndex, ClaimJournalStore, ClaimRecord, ClaimState, CouponQuery, CouponStore,
    OutboxBacklog, OutboxEvent,
};
use stampede_core::ports::StoreError;
use stampede_core::records::CouponRecord;
use stampede_domain::coupon::UserCoupon;
use stampede_domain::ids::{CouponId, TemplateId, UserId};
use stampede_domain::time::to_ms;
use stampede_store_sql::SqlRow;
use stampede_store_sql::rows::{push_claim_index_row, read_keyed, read_user_seq};
use stampede_store_sql::text::{CouponStatusFilter, multi_insert};
use stampede_store_sql::{db_err, refused};
use std::collections::BTreeMap;
use std::sync::LazyLock;

pub(crate) type Query = sqlx::query::Query<'static, Sqlite, SqliteArguments>;

/// Kind of the event every stored claim records.
use stampede_core::events::claimed_event;

/// Rows per INSERT statement, largest first. The largest binds 256 × 13 = 3,328 variables,
/// far under SQLite's limit of 32,766; larger statements buy little once a batch is one
/// transaction.
const CHUNK_ROWS: [usize; 9] = [256, 128, 64, 32, 16, 8, 4, 2, 1];

/// Multi-row INSERT statements of one table, one per size in `CHUNK_ROWS`.
pub(crate) struct MultiInsert(Vec<(usize, String)>);

impl MultiInsert {
    pub(crate) fn new(table: &str, columns: &str) -> Self {
        Self::with_verb("INSERT", table, columns)
    }

    /// `verb` is `INSERT` or, to skip rows that break a constraint, `INSERT OR IGNORE`.
    pub(crate) fn with_verb(verb: &str, table: &str, columns: &str) -> Self {
        MultiInsert(
            CHUNK_ROWS
                .iter()
                .map(|&n| (n, multi_insert(verb, table, columns, n)))
                .collect(),
        )
    }

    /// Inserts `rows`, each bound by its `SqlRow::bind`.
    pub(crate) async fn insert<T: SqlRow>(
        &'static self,
        conn: &mut SqliteConnection,
        rows: &[T],
    ) -> Result<u64, StoreError> {
        self.run(conn, rows, |q, r| r.bind(q)).await
    }

    /// Inserts `rows` with as few statements as the fixed sizes allow, binding each row with
    /// `bind` (which must bind exactly the table's columns, in order). Returns the rows
    /// inserted.
    pub(crate) async fn run<T>(
        &'static self,
        conn: &mut SqliteConnection,
        rows: &[T],
        bind: impl Fn(Query, &T) -> Query,
    ) -> Result<u64, StoreError> {
        let mut inserted = 0;
        let mut rest = rows;
        for (size, sql) in &self.0 {
            while let Some((chunk, tail)) = rest.split_at_checked(*size) {
                let mut q: Query = sqlx::query(sql.as_str());
                for r in chunk {
                    q = bind(q, r);
                }
                inserted += q.execute(&mut *conn).await.map_err(db_err)?.rows_affected();
                rest = tail;
            }
        }
        Ok(inserted)
    }
}

static INSERT_COUPONS: LazyLock<MultiInsert> =
    LazyLock::new(|| MultiInsert::new("user_coupons", CouponRecord::COLUMNS));
pub(crate) static INSERT_EVENTS: LazyLock<MultiInsert> =
    LazyLock::new(|| MultiInsert::new("outbox", OutboxEvent::COLUMNS));

static SELECT_COUPON: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM user_coupons WHERE id = ? AND user_id = ?",
        CouponRecord::COLUMNS
    )
});
static SELECT_KEYED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM user_coupons WHERE template_id = ? AND claim_key IS NOT NULL AND origin = 'claim'",
        CouponRecord::COLUMNS
    )
});

pub(crate) fn decode_coupon(row: &SqliteRow) -> Result<UserCoupon, StoreError> {
    CouponRecord::read(row)?.into_coupon()
}

/// Everything `commit_claims` writes, prepared before the write lock is taken.
struct Batch {
    coupons: Vec<CouponRecord>,
    events: Vec<OutboxEvent>,
    /// Coupons per template, to take off its stock.
    taken: BTreeMap<i64, i64>,
}

impl Batch {
    fn new(claims: &[ClaimRecord]) -> Self {
        let mut taken = BTreeMap::new();
        for c in claims {
            *taken.entry(c.coupon.template_id.get()).or_insert(0) += 1;
        }
        Batch {
            coupons: claims
                .iter()
                .map(|c| CouponRecord::from_coupon(&c.coupon, c.claim_key.as_deref()))
                .collect(),
            events: claims.iter().map(claimed_event).collect(),
            taken,
        }
    }

    async fn write(&self, conn: &mut SqliteConnection) -> Result<(), StoreError> {
        INSERT_COUPONS.insert(conn, &self.coupons).await?;
        INSERT_EVENTS.insert(conn, &self.events).await?;
        for (&template, &count) in &self.taken {
            let done = sqlx::query("UPDATE templates SET stock = stock - ? WHERE id = ?")
                .bind(count)
                .bind(template)
                .execute(&mut *conn)
                .await
                .map_err(db_err)?;
            if done.rows_affected() != 1 {
                // Coupons of a template that is not stored would be counted nowhere.
                return Err(refused(format!("claims for unknown template {template}")));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ClaimJournalStore for SqliteStore {
    async fn journal_applied(&self) -> Result<u64, StoreError> {
        let (lsn,): (i64,) = sqlx::query_as("SELECT applied_lsn FROM claim_journal WHERE id = 1")
            .fetch_one(&self.reader)
            .await
            .map_err(db_err)?;
        u64::try_from(lsn).map_err(|_| StoreError::Corrupt(format!("journal position {lsn}")))
    }

    async fn apply_journaled(
        &self,
        claims: &[ClaimRecord],
        through: u64,
    ) -> Result<(), StoreError> {
        let through = i64::try_from(through)
            .map_err(|_| refused(format!("journal position {through} out of range")))?;
        self.store_batch(claims, Some(through)).await
    }
}

impl SqliteStore {
    /// One transaction: the claims, their events and the stock moves; with `through` (the
    /// claims being the journal records `through - len + 1 ..= through`), also the journal
    /// position, and only the records after the stored position are written: a batch
    /// applied before, whole or in part (a replay racing an applier that cut its batches
    /// elsewhere), is not written twice. All or nothing.
    async fn store_batch(
        &self,
        claims: &[ClaimRecord],
        through: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let mut fresh = claims;
        if let Some(through) = through {
            let (applied,): (i64,) =
                sqlx::query_as("SELECT applied_lsn FROM claim_journal WHERE id = 1")
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_err)?;
            if applied >= through {
                tx.rollback().await.map_err(db_err)?;
                return Ok(());
            }
            let first = through - claims.len() as i64 + 1;
            let done = usize::try_from(applied - first + 1).unwrap_or(0);
            fresh = &claims[done.min(claims.len())..];
            sqlx::query("UPDATE claim_journal SET applied_lsn = ? WHERE id = 1")
                .bind(through)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        let batch = Batch::new(fresh);
        match batch.write(&mut tx).await {
            Ok(()) => tx.commit().await.map_err(db_err),
            Err(e) => {
                // The caller fails (or retries) every claim of the batch.
                if let Err(r) = tx.rollback().await {
                    tracing::warn!(error = %r, "rolling back a failed claim batch failed");
                }
                Err(e)
            }
        }
    }
}

#[async_trait]
impl CouponStore for SqliteStore {
    async fn commit_claims(&self, claims: &[ClaimRecord]) -> Result<(), StoreError> {
        if claims.is_empty() {
            return Ok(());
        }
        self.store_batch(claims, None).await
    }

    async fn claim_state(&self, template: TemplateId) -> Result<ClaimState, StoreError> {
        // One read transaction: seqs and keyed coupons come from the same snapshot.
        let mut tx = self.reader.begin().await.map_err(db_err)?;
        let seqs = sqlx::query("SELECT user_id, seq FROM user_coupons WHERE template_id = ?")
            .bind(template.get())
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        let keyed = sqlx::query(SELECT_KEYED.as_str())
            .bind(template.get())
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.rollback().await.map_err(db_err)?;

        let mut state = ClaimState::default();
        for row in &seqs {
            state.user_seqs.push(read_user_seq(row)?);
        }
        for row in &keyed {
            state.keyed.push(read_keyed(row)?);
        }
        Ok(state)
    }

    async fn claim_index(&self, template: TemplateId) -> Result<ClaimIndex, StoreError> {
        // One statement (one snapshot), four narrow columns, rows decoded as they stream
        // rather than collected first: this is what a restart reads for millions of holders.
        let mut rows = sqlx::query(
            "SELECT user_id, seq, id, CASE WHEN origin = 'claim' THEN claim_key END AS claim_key \
             FROM user_coupons WHERE template_id = ?",
        )
        .bind(template.get())
        .fetch(&self.reader);
        let mut index = ClaimIndex::default();
        while let Some(row) = rows.try_next().await.map_err(db_err)? {
            push_claim_index_row(&mut index, &row)?;
        }
        Ok(index)
    }

    async fn get_coupon(
        &self,
        user: UserId,
        id: CouponId,
    ) -> Result<Option<UserCoupon>, StoreError> {
        let row = sqlx::query(SELECT_COUPON.as_str())
            .bind(id.get())
            .bind(user.get())
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?;
        row.as_ref().map(decode_coupon).transpose()
    }

    async fn list_coupons(&self, q: &CouponQuery) -> Result<Vec<UserCoupon>, StoreError> {
        if q.limit == 0 {
            return Ok(Vec::new());
        }
        // Only fixed fragments go into the SQL text; every value is bound.
        let mut sql = format!(
            "SELECT {} FROM user_coupons WHERE user_id = ?",
            CouponRecord::COLUMNS
        );
        let filter = CouponStatusFilter::new(q.status, to_ms(q.now));
        if let Some(f) = &filter {
            sql.push_str(f.condition);
        }
        if q.after.is_some() {
            // A row value compares lexicographically and lets SQLite seek the listing index.
            sql.push_str(" AND (valid_until_ms, id) > (?, ?)");
        }
        sql.push_str(" ORDER BY valid_until_ms, id LIMIT ?");

        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(q.user_id.get());
        if let Some(f) = &filter {
            query = f.bind(query);
        }
        if let Some((until, id)) = q.after {
            query = query.bind(until).bind(id);
        }
        let rows = query
            .bind(i64::from(q.limit))
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?;
        rows.iter().map(decode_coupon).collect()
    }

    async fn outbox_events(&self, kind: &str, limit: u32) -> Result<Vec<OutboxEvent>, StoreError> {
        let sql = format!(
            "SELECT {} FROM outbox WHERE kind = ? ORDER BY seq LIMIT ?",
            OutboxEvent::COLUMNS
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(kind)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?;
        rows.iter().map(OutboxEvent::read).collect()
    }

    /// Three index lookups on `seq` (the rowid order), never a scan of the published prefix
    /// as long as published events are deleted or few.
    async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError> {
        let (first, created, last): (Option<i64>, Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT h.seq, h.created_at_ms, (SELECT MAX(seq) FROM outbox) \
             FROM (SELECT 1) LEFT JOIN (SELECT seq, created_at_ms FROM outbox \
                 WHERE published_at_ms IS NULL ORDER BY seq LIMIT 1) h",
        )
        .fetch_one(&self.reader)
        .await
        .map_err(db_err)?;
        let mut backlog = OutboxBacklog::default();
        backlog.add_table(first.zip(created), last);
        Ok(backlog)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::SqliteOptions;

    #[test]
    fn statements_stay_under_the_variable_limit() {
        for inserts in [&*INSERT_COUPONS, &*INSERT_EVENTS] {
            assert_eq!(inserts.0.len(), CHUNK_ROWS.len());
            for (rows, sql) in &inserts.0 {
                let vars = sql.matches('?').count();
                assert!(vars < 32_766);
                assert_eq!(vars % rows, 0);
            }
        }
        assert_eq!(INSERT_COUPONS.0[0].1.matches('?').count(), 256 * 13);
    }

    /// The migration and the shared record must agree on the column set.
    #[tokio::test]
    async fn user_coupons_table_has_exactly_the_shared_columns() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db"), SqliteOptions::default())
            .await
            .unwrap();
        let names: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info('user_coupons') ORDER BY cid")
                .fetch_all(&store.reader)
                .await
                .unwrap();
        let expected: Vec<&str> = CouponRecord::COLUMNS.split(',').map(str::trim).collect();
        assert_eq!(names, expected);
    }
}
