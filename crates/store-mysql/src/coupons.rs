//! `CouponStore`: user coupons and their outbox, on the shard of the coupon's *user*, so a
//! coupon and the event that records it are written in one local transaction, and a user's
//! "my coupons" is one indexed query on one table.
//!
//! Distributed mode does not use `commit_claims`: claims land in the Redis claim log and the
//! persisters store them through `ClaimLogStore` (`claim_log.rs`), which is exactly-once across
//! shards. `commit_claims` is implemented for completeness (e.g. one node over MySQL without
//! Redis): one transaction per database, committed only when every database's part worked.

use crate::MysqlStore;
use crate::listing::union;
use crate::router::Shard;
use async_trait::async_trait;
use futures::future::{join_all, try_join, try_join_all};
use sqlx::mysql::{MySqlArguments, MySqlConnection};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, MySql};
use stampede_core::claim_ports::{
    ClaimRecord, ClaimState, CouponQuery, CouponStore, OutboxBacklog, OutboxEvent,
};
use stampede_core::ports::StoreError;
use stampede_core::records::CouponRecord;
use stampede_domain::coupon::UserCoupon;
use stampede_domain::ids::{CouponId, TemplateId, UserId};
use stampede_domain::time::to_ms;
use stampede_store_sql::SqlRow;
use stampede_store_sql::rows::{read_keyed, read_user_seq};
use stampede_store_sql::text::{CouponStatusFilter, multi_insert};
use stampede_store_sql::{Columns, db_err, refused};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

pub(crate) type Q = Query<'static, MySql, MySqlArguments>;

#[cfg(test)]
use stampede_core::events::COUPON_CLAIMED as CLAIMED;
/// Kind of the event every stored claim records.
use stampede_core::events::claimed_event;

/// Rows per multi-row INSERT, largest first. Powers of four keep the statement texts per
/// table few (each stays prepared in the connection's cache) while a batch's tail needs at
/// most three statements of each smaller size; 256 × 13 = 3,328 placeholders is far below
/// the protocol's 65,535 and the packet stays well under `max_allowed_packet`.
pub(crate) const CHUNK_ROWS: [usize; 5] = [256, 64, 16, 4, 1];

/// Ids per `IN (…)` list when checking which coupons are stored.
pub(crate) const LOOKUP_CHUNK: usize = 1_000;

/// What a duplicate row (on any unique key) does to an insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Duplicates {
    /// Fails the statement, and so the transaction (the group commit).
    Fail,
    /// Is skipped (`INSERT IGNORE`): replaying a claim-log batch is a no-op.
    Skip,
}

impl Duplicates {
    fn verb(self) -> &'static str {
        match self {
            Duplicates::Fail => "INSERT",
            Duplicates::Skip => "INSERT IGNORE",
        }
    }
}

/// Inserts `rows` into `table` in as few statements as the fixed sizes allow, binding each
/// with `bind` (exactly `columns`, in order). Returns how many rows were inserted; the driver's
/// error is kept so callers can tell what failed.
pub(crate) async fn insert_rows<T>(
    conn: &mut MySqlConnection,
    verb: &str,
    table: &str,
    columns: &str,
    rows: &[T],
    bind: impl Fn(Q, &T) -> Q,
) -> Result<u64, sqlx::Error> {
    let mut rest = rows;
    let mut inserted = 0;
    for size in CHUNK_ROWS {
        if rest.len() < size {
            continue;
        }
        // Only the table name (from the router) and fixed text are interpolated.
        let sql = multi_insert(verb, table, columns, size);
        while let Some((chunk, tail)) = rest.split_at_checked(size) {
            let mut q: Q = sqlx::query(AssertSqlSafe(sql.clone()));
            for r in chunk {
                q = bind(q, r);
            }
            inserted += q.execute(&mut *conn).await?.rows_affected();
            rest = tail;
        }
    }
    Ok(inserted)
}

/// Inserts `rows` of a `SqlRow` type, each bound in its column order (see `insert_rows`).
pub(crate) async fn insert_records<T: SqlRow>(
    conn: &mut MySqlConnection,
    verb: &str,
    table: &str,
    rows: &[T],
) -> Result<u64, sqlx::Error> {
    insert_rows(conn, verb, table, T::COLUMNS, rows, |q, r| r.bind(q)).await
}

/// Ids of `ids` present in `table`, read inside the caller's transaction.
async fn stored_ids(
    conn: &mut MySqlConnection,
    table: &str,
    ids: &[i64],
) -> Result<HashSet<i64>, StoreError> {
    let mut found = HashSet::new();
    for chunk in ids.chunks(LOOKUP_CHUNK) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let sql = format!("SELECT id FROM {table} WHERE id IN ({marks})");
        // Sizes vary: keep these rare statements out of the prepared-statement cache.
        let mut q = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql)).persistent(false);
        for id in chunk {
            q = q.bind(*id);
        }
        found.extend(q.fetch_all(&mut *conn).await.map_err(db_err)?);
    }
    Ok(found)
}

/// Writes one user shard's coupons and their `coupon.claimed` events, inside the caller's
/// transaction.
pub(crate) async fn write_coupons(
    conn: &mut MySqlConnection,
    shard: Shard,
    claims: &[&ClaimRecord],
    duplicates: Duplicates,
) -> Result<(), StoreError> {
    // Coupons go in sorted by their unique key, so concurrent writers take row locks in one
    // order and do not deadlock; events keep the callers' (claim-log) order.
    let mut coupons: Vec<CouponRecord> = claims
        .iter()
        .map(|c| CouponRecord::from_coupon(&c.coupon, c.claim_key.as_deref()))
        .collect();
    coupons.sort_by_key(|c| (c.user_id, c.template_id, c.seq));
    let mut events: Vec<OutboxEvent> = claims.iter().map(|c| claimed_event(c)).collect();
    let verb = duplicates.verb();
    let table = shard.coupons_table();
    let inserted = insert_records(conn, verb, &table, &coupons)
        .await
        .map_err(db_err)?;
    if inserted < coupons.len() as u64 {
        // Some were skipped. One already stored (a replay) keeps its event, deduplicated by
        // id; one whose slot holds another coupon is not stored, so gets no event.
        let ids: Vec<i64> = coupons.iter().map(|c| c.id).collect();
        let present = stored_ids(conn, &table, &ids).await?;
        let lost = ids.len() - present.len();
        if lost > 0 {
            tracing::warn!(
                lost,
                "claims skipped: their (user, template, seq) or claim key holds another coupon"
            );
        }
        events.retain(|e| present.contains(&e.aggregate_id));
    }
    insert_records(conn, verb, &shard.outbox_table(), &events)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Takes `count` off the stock of `template` (on `shard`), inside the caller's transaction.
async fn take_stock(
    conn: &mut MySqlConnection,
    shard: Shard,
    template: TemplateId,
    count: i64,
) -> Result<(), StoreError> {
    let sql = format!(
        "UPDATE {} SET stock = stock - ? WHERE id = ?",
        shard.templates_table()
    );
    let done = sqlx::query(AssertSqlSafe(sql))
        .bind(count)
        .bind(template.get())
        .execute(conn)
        .await
        .map_err(db_err)?;
    if done.rows_affected() != 1 {
        // Filed in the directory but never written: its coupons would be counted nowhere.
        return Err(refused(format!("claims for unknown template {template}")));
    }
    Ok(())
}

impl MysqlStore {
    /// `claims` grouped by the shard of their user, each group in the callers' order.
    pub(crate) fn by_user_shard<'a>(
        &self,
        claims: &'a [ClaimRecord],
    ) -> Vec<(Shard, Vec<&'a ClaimRecord>)> {
        let mut groups: HashMap<Shard, Vec<&ClaimRecord>> = HashMap::new();
        for c in claims {
            groups
                .entry(self.router().route(c.coupon.user_id.get()))
                .or_default()
                .push(c);
        }
        groups.into_iter().collect()
    }

    /// The shard of a template the directory must know.
    pub(crate) async fn template_shard(&self, t: TemplateId) -> Result<Shard, StoreError> {
        self.shard_of(t)
            .await?
            .ok_or_else(|| refused(format!("unknown template {t}")))
    }

    /// Held seqs and keyed coupons of `template` in one database's tables.
    async fn claim_state_in(
        &self,
        database: usize,
        template: TemplateId,
    ) -> Result<ClaimState, StoreError> {
        let tables = self.router().tables_per_database();
        let shards = || (0..tables).map(move |table| Shard { database, table });
        let seqs_sql = union(shards().map(|s| {
            format!(
                "SELECT user_id, seq FROM {} WHERE template_id = ?",
                s.coupons_table()
            )
        }));
        let keyed_sql = union(shards().map(|s| {
            format!(
                "SELECT {} FROM {} WHERE template_id = ? AND claim_key IS NOT NULL AND origin = 'claim'",
                CouponRecord::COLUMNS,
                s.coupons_table()
            )
        }));
        let mut seqs = sqlx::query(AssertSqlSafe(seqs_sql));
        let mut keyed = sqlx::query(AssertSqlSafe(keyed_sql));
        for _ in 0..tables {
            seqs = seqs.bind(template.get());
            keyed = keyed.bind(template.get());
        }
        let pool = self.pool(database);
        let (seqs, keyed) = try_join(seqs.fetch_all(pool), keyed.fetch_all(pool))
            .await
            .map_err(db_err)?;

        let mut state = ClaimState::default();
        for row in &seqs {
            state.user_seqs.push(read_user_seq(row)?);
        }
        for row in &keyed {
            state.keyed.push(read_keyed(row)?);
        }
        Ok(state)
    }

    /// The oldest `limit` events of `kind` of each table of one database, one list per
    /// table in insertion order.
    async fn outbox_in(
        &self,
        database: usize,
        kind: &str,
        limit: u32,
    ) -> Result<Vec<Vec<OutboxEvent>>, StoreError> {
        let tables = self.router().tables_per_database();
        // The table index is a number from the router, safe to interpolate.
        let sql = union((0..tables).map(|table| {
            format!(
                "(SELECT {table} AS tbl, seq, {} FROM {} WHERE kind = ? \
                 ORDER BY seq LIMIT ?)",
                OutboxEvent::COLUMNS,
                Shard { database, table }.outbox_table()
            )
        }));
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for _ in 0..tables {
            q = q.bind(kind.to_owned()).bind(limit);
        }
        let rows = q.fetch_all(self.pool(database)).await.map_err(db_err)?;
        let mut per_table: Vec<Vec<(i64, OutboxEvent)>> = vec![Vec::new(); tables];
        for row in &rows {
            let table = row.int("tbl")?;
            let stream = usize::try_from(table)
                .ok()
                .and_then(|t| per_table.get_mut(t))
                .ok_or_else(|| StoreError::Corrupt(format!("bad outbox table {table}")))?;
            stream.push((row.int("seq")?, OutboxEvent::read(row)?));
        }
        // UNION ALL promises no order; each list is put back in its table's order.
        Ok(per_table
            .into_iter()
            .map(|mut stream| {
                stream.sort_unstable_by_key(|(seq, _)| *seq);
                stream.into_iter().map(|(_, e)| e).collect()
            })
            .collect())
    }
}

/// Merges per-table event lists (each in insertion order) into one of at most `limit`:
/// repeatedly the head with the smallest `(created_at_ms, id)`. Each table's order is kept, so
/// the first `limit` of the merge depend only on the first `limit` of each table.
fn merge_streams(streams: Vec<Vec<OutboxEvent>>, limit: usize) -> Vec<OutboxEvent> {
    let mut streams: Vec<VecDeque<OutboxEvent>> = streams.into_iter().map(VecDeque::from).collect();
    let mut merged = Vec::new();
    while merged.len() < limit {
        let oldest = streams
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.front().map(|e| (i, e)))
            .min_by(|(_, a), (_, b)| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)))
            .map(|(i, _)| i);
        let Some(e) = oldest
            .and_then(|i| streams.get_mut(i))
            .and_then(VecDeque::pop_front)
        else {
            break;
        };
        merged.push(e);
    }
    merged
}

#[async_trait]
impl CouponStore for MysqlStore {
    /// One transaction per database, covering the users' coupon and outbox tables and the
    /// templates' stock on it. All of them are committed only once every database's part has
    /// succeeded, so a duplicate or an unknown template anywhere writes nothing; a failure
    /// between the commits themselves can still leave some databases committed (true
    /// atomicity would need XA). Meant for a single writer, like the embedded group commit:
    /// concurrent callers touching the same rows on several databases may wait on each
    /// other's locks until InnoDB's lock wait timeout.
    async fn commit_claims(&self, claims: &[ClaimRecord]) -> Result<(), StoreError> {
        if claims.is_empty() {
            return Ok(());
        }
        let mut taken: BTreeMap<TemplateId, i64> = BTreeMap::new();
        for c in claims {
            *taken.entry(c.coupon.template_id).or_insert(0) += 1;
        }
        let mut stock = Vec::with_capacity(taken.len());
        for (t, n) in taken {
            stock.push((self.template_shard(t).await?, t, n));
        }
        let groups = self.by_user_shard(claims);

        let per_database = (0..self.router().databases()).map(|database| {
            let groups = &groups;
            let stock = &stock;
            async move {
                let mine = |s: &Shard| s.database == database;
                if !groups.iter().any(|(s, _)| mine(s)) && !stock.iter().any(|(s, _, _)| mine(s)) {
                    return Ok(None);
                }
                let mut tx = self.pool(database).begin().await.map_err(db_err)?;
                for (shard, g) in groups.iter().filter(|(s, _)| mine(s)) {
                    write_coupons(&mut tx, *shard, g, Duplicates::Fail).await?;
                }
                // Templates in id order, so two writers lock them in the same order.
                for &(shard, t, n) in stock.iter().filter(|(s, _, _)| mine(s)) {
                    take_stock(&mut tx, shard, t, n).await?;
                }
                Ok::<_, StoreError>(Some(tx))
            }
        });
        // Every part runs to its end (no write is cancelled midway); then an error anywhere
        // drops every open transaction, which rolls it back.
        let parts = join_all(per_database).await;
        let mut open = Vec::with_capacity(parts.len());
        for part in parts {
            open.extend(part?);
        }
        for tx in open {
            tx.commit().await.map_err(db_err)?;
        }
        Ok(())
    }

    async fn claim_state(&self, template: TemplateId) -> Result<ClaimState, StoreError> {
        let parts =
            try_join_all((0..self.router().databases()).map(|d| self.claim_state_in(d, template)))
                .await?;
        // One row per coupon: the databases' rows together are every coupon once.
        let mut state = ClaimState::default();
        for p in parts {
            state.user_seqs.extend(p.user_seqs);
            state.keyed.extend(p.keyed);
        }
        Ok(state)
    }

    async fn get_coupon(
        &self,
        user: UserId,
        id: CouponId,
    ) -> Result<Option<UserCoupon>, StoreError> {
        let shard = self.router().route(user.get());
        let sql = format!(
            "SELECT {} FROM {} WHERE id = ? AND user_id = ?",
            CouponRecord::COLUMNS,
            shard.coupons_table()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id.get())
            .bind(user.get())
            .fetch_optional(self.pool(shard.database))
            .await
            .map_err(db_err)?;
        row.as_ref()
            .map(|r| CouponRecord::read(r)?.into_coupon())
            .transpose()
    }

    async fn list_coupons(&self, q: &CouponQuery) -> Result<Vec<UserCoupon>, StoreError> {
        if q.limit == 0 {
            return Ok(Vec::new());
        }
        let shard = self.router().route(q.user_id.get());
        // Only the table name and fixed fragments go into the SQL text; every value is bound.
        let mut sql = format!(
            "SELECT {} FROM {} WHERE user_id = ?",
            CouponRecord::COLUMNS,
            shard.coupons_table()
        );
        let filter = CouponStatusFilter::new(q.status, to_ms(q.now));
        if let Some(f) = &filter {
            sql.push_str(f.condition);
        }
        if q.after.is_some() {
            // `(valid_until, id) > (?, ?)` spelled out: the leading `>=` gives the optimizer a
            // range on the listing index, which row comparisons do not reliably get.
            sql.push_str(" AND valid_until_ms >= ? AND (valid_until_ms > ? OR id > ?)");
        }
        sql.push_str(" ORDER BY valid_until_ms, id LIMIT ?");

        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(q.user_id.get());
        if let Some(f) = &filter {
            query = f.bind(query);
        }
        if let Some((until, id)) = q.after {
            query = query.bind(until).bind(until).bind(id);
        }
        let rows = query
            .bind(q.limit)
            .fetch_all(self.pool(shard.database))
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| CouponRecord::read(r)?.into_coupon())
            .collect()
    }

    /// Each table's events come in insertion order (`seq`); the tables' lists are merged by
    /// `created_at_ms`, then event id.
    async fn outbox_events(&self, kind: &str, limit: u32) -> Result<Vec<OutboxEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let parts =
            try_join_all((0..self.router().databases()).map(|d| self.outbox_in(d, kind, limit)))
                .await?;
        Ok(merge_streams(
            parts.into_iter().flatten().collect(),
            usize::try_from(limit).unwrap_or(usize::MAX),
        ))
    }

    /// One statement per database; per table three primary-key lookups.
    async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError> {
        let mut total = OutboxBacklog::default();
        for b in self.outbox_partition_backlogs().await? {
            total.add(b);
        }
        Ok(total)
    }

    async fn outbox_partition_backlogs(&self) -> Result<Vec<OutboxBacklog>, StoreError> {
        let tables = self.router().tables_per_database();
        let per_db = (0..self.router().databases()).map(|database| {
            // Table names come from the router, safe to interpolate.
            let sql = union((0..tables).map(|table| {
                let t = Shard { database, table }.outbox_table();
                format!(
                    "(SELECT {table} AS tbl, h.seq AS first_seq, h.created_at_ms AS first_ms, \
                     (SELECT MAX(seq) FROM {t}) AS last_seq \
                     FROM (SELECT 1) one LEFT JOIN (SELECT seq, created_at_ms FROM {t} \
                         WHERE published_at_ms IS NULL ORDER BY seq LIMIT 1) h ON TRUE)"
                )
            }));
            async move {
                sqlx::query_as::<_, (i64, Option<i64>, Option<i64>, Option<i64>)>(AssertSqlSafe(
                    sql,
                ))
                .fetch_all(self.pool(database))
                .await
                .map_err(db_err)
            }
        });
        // Partition `database * tables + table`, as `OutboxStore` numbers them.
        let mut backlogs = vec![OutboxBacklog::default(); self.router().databases() * tables];
        for (database, rows) in try_join_all(per_db).await?.into_iter().enumerate() {
            for (table, first, created, last) in rows {
                let slot = usize::try_from(table)
                    .ok()
                    .filter(|t| *t < tables)
                    .and_then(|t| backlogs.get_mut(database * tables + t))
                    .ok_or_else(|| StoreError::Corrupt(format!("bad outbox table {table}")))?;
                slot.add_table(first.zip(created), last);
            }
        }
        Ok(backlogs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_statement_stays_under_the_placeholder_limit() {
        let largest = multi_insert(
            "INSERT",
            "user_coupons_0",
            CouponRecord::COLUMNS,
            CHUNK_ROWS[0],
        );
        assert_eq!(largest.matches('?').count(), 256 * 13);
        assert!(largest.matches('?').count() < 65_535);
    }

    fn event(id: &str, at: i64) -> OutboxEvent {
        OutboxEvent {
            id: id.to_owned(),
            kind: CLAIMED.to_owned(),
            aggregate_id: 1,
            payload: String::new(),
            created_at_ms: at,
            traceparent: None,
        }
    }

    #[test]
    fn merging_keeps_each_tables_order_and_prefers_the_oldest_head() {
        let streams = vec![
            vec![event("a1", 5), event("a2", 1)],
            vec![event("b1", 3), event("b2", 4)],
            vec![],
            vec![event("c1", 3)],
        ];
        let ids = |es: Vec<OutboxEvent>| es.into_iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(
            ids(merge_streams(streams.clone(), 10)),
            ["b1", "c1", "b2", "a1", "a2"]
        );
        assert_eq!(ids(merge_streams(streams, 2)), ["b1", "c1"]);
    }
}
