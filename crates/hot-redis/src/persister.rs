//! [`Persister`]: drains the templates' claim logs into the system of record, exactly once.
//!
//! One pass ([`Persister::run_once`]) visits every template in `P:claimlogs`. For each one with
//! a non-empty log it takes the template's lease (`P:{tpl:T}:lease`, this node's id, 10 s by
//! default; another node's lease means "skip": a dead node's lease expires, which is how its
//! work is taken over), then repeats until the log is drained:
//!
//! 1. `from = ClaimLogStore::applied_position(T)`;
//! 2. removes log entries `≤ from` that are still in the stream (left by a crash after step 5),
//!    with their pending copies;
//! 3. `XRANGE log (from + COUNT batch`: the next entries, oldest first;
//! 4. `insert_claimed(records)`: the coupons on their users' shards, skipping coupons already
//!    there (unique `(user, template, seq)`);
//! 5. `apply_claims(T, from, last, n)`: takes `n` off the template's stock and moves the
//!    applied position from `from` to `last` in one transaction, only if it still is `from`;
//! 6. if step 5 applied: deletes the batch's pending copies (`HDEL P:{user:U}:pending`) and
//!    its log entries (`XDEL`);
//!
//! and finally releases the lease if it is still ours (compare-and-delete script).
//!
//! # Which logs a pass visits
//!
//! A full sweep checks every registered log's length (pipelined, [`SWEEP_CHUNK`] per round
//! trip). With hints ([`Persister::with_hints`]), the passes in between visit only the logs
//! this node claimed into since the last pass ([`ClaimLogHints`], marked by the hot state
//! before each claim script runs, so a claim whose outcome is unknown is visited too); the
//! full sweep, every `sweep` interval, takes over other nodes' logs (a node that died with
//! entries left). Without hints every pass is a full sweep: at 200,000 templates that was
//! 200,000 `XLEN` round trips per pass, half a Redis core on an idle node.
//!
//! # Why a crash anywhere replays safely
//!
//! The invariant: **entries leave the log only at or below the applied position**, so the
//! entries after the applied position are exactly the claims whose stock change is not yet
//! applied, and `(from, last]` read in step 3 holds exactly `n` claims, each of which took one
//! coupon of stock.
//!
//! - Crash before step 4, or during it: nothing or some coupons are inserted; the next pass
//!   reads the same `from` and the same entries (perhaps more) and inserts again; existing
//!   coupons are skipped.
//! - Crash between steps 4 and 5 (coupons in, stock not applied): as above; the stock change
//!   of `(from, last']` is applied once by the next pass (the test "crash after insert").
//! - Step 5 is one transaction: applied entirely or not at all.
//! - Crash between steps 5 and 6: the position already says `last`; the next pass never reads
//!   those entries again (step 3 starts after the position) and step 2 removes them.
//! - Crash inside step 6: the pending deletions and `XDEL` are idempotent; step 2 finishes them.
//! - Two persisters on one log (a paused node waking after its lease expired, or two nodes
//!   sharing a node id): step 4 is idempotent and step 5 is a compare-and-set on the position,
//!   so one of them applies `(from, last]` and the other gets `false` and removes nothing.
//!
//! The lease is therefore only an efficiency measure (one node per log at a time), not what
//! makes persisting exactly-once. Node ids must be unique per process.
//!
//! A pending copy deleted in step 6 before its claimer wrote it (a claimer slower than the
//! persister) stays until the pending hash expires; "my coupons" deduplicates it by id.

use crate::Connection;
use crate::keys::{self, TemplateKeys};
use crate::replica_wait::ReplicaWait;
use crate::{backend, scripts};
use stampede_core::claim_ports::{ClaimLogStore, ClaimRecord};
use stampede_core::ports::StoreError;
use stampede_domain::coupon::{CouponStatus, Origin, UserCoupon};
use stampede_domain::ids::{CouponId, ShopId, TemplateId, UserId};
use stampede_domain::time::from_ms;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Log lengths asked per round trip of a full sweep.
pub const SWEEP_CHUNK: usize = 1_000;

/// Templates this node's claims wrote to since the persister's last pass.
#[derive(Debug, Default)]
pub struct ClaimLogHints(std::sync::Mutex<std::collections::HashSet<TemplateId>>);

impl ClaimLogHints {
    pub fn mark(&self, t: TemplateId) {
        self.lock().insert(t);
    }

    fn take(&self) -> Vec<TemplateId> {
        let mut ts: Vec<TemplateId> = self.lock().drain().collect();
        ts.sort_unstable();
        ts
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<TemplateId>> {
        // A panic while holding it leaves a plain set behind: keep using it.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Hinted passes and when the last full sweep ran.
struct Hinted {
    hints: Arc<ClaimLogHints>,
    sweep: Duration,
    last_sweep: std::sync::Mutex<Option<std::time::Instant>>,
}

/// Default lease on one template's log.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// Gauge: claim-log entries not yet persisted (all nodes' logs), at the last full sweep.
pub const BACKLOG: &str = "stampede_persister_backlog_entries";
/// Gauge: age in seconds of the oldest claim-log entry at the last full sweep; 0 when every
/// log is drained. An entry leaves its log once persisted, so this is how far behind the
/// system of record is.
pub const LAG: &str = "stampede_persister_lag_seconds";

/// The millisecond time in a stream entry id (`<ms>-<seq>`, Redis' clock).
fn entry_ms(id: &str) -> Option<u64> {
    id.split_once('-').and_then(|(ms, _)| ms.parse().ok())
}

/// Raw `XRANGE` reply: `(entry id, fields)`.
type Entries = Vec<(String, HashMap<String, String>)>;

/// Claim-log entries after a position, as records to persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogBatch {
    pub template: TemplateId,
    /// Applied position the batch starts after (exclusive).
    pub from: String,
    /// Id of the batch's last entry (inclusive).
    pub to: String,
    /// Log entry ids, oldest first, one per record.
    pub ids: Vec<String>,
    pub records: Vec<ClaimRecord>,
}

/// Drains claim logs into a [`ClaimLogStore`] (see the module docs).
pub struct Persister {
    conn: Connection,
    prefix: String,
    log_store: Arc<dyn ClaimLogStore>,
    node_id: String,
    batch: usize,
    lease: Duration,
    hinted: Option<Hinted>,
    /// Replicas that must hold log entries before they go to MySQL (see `replica_wait`).
    replica_wait: Option<ReplicaWait>,
}

impl std::fmt::Debug for Persister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persister")
            .field("prefix", &self.prefix)
            .field("node_id", &self.node_id)
            .field("batch", &self.batch)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

fn corrupt(t: TemplateId, id: &str, what: &str) -> StoreError {
    StoreError::Corrupt(format!("claim log of template {t}, entry {id}: {what}"))
}

/// The record of one claim-log entry (fields written by `claim.lua`).
fn record_of(
    t: TemplateId,
    id: &str,
    f: &HashMap<String, String>,
) -> Result<ClaimRecord, StoreError> {
    let field = |name: &str| {
        f.get(name)
            .ok_or_else(|| corrupt(t, id, &format!("no field {name}")))
    };
    let int = |name: &str| -> Result<i64, StoreError> {
        field(name)?
            .parse::<i64>()
            .map_err(|_| corrupt(t, id, &format!("field {name} is not an integer")))
    };
    let claimed_at = from_ms(int("ca")?);
    let coupon = UserCoupon {
        id: CouponId::new(int("c")?).ok_or_else(|| corrupt(t, id, "bad coupon id"))?,
        user_id: UserId::new(int("u")?).ok_or_else(|| corrupt(t, id, "bad user id"))?,
        template_id: t,
        shop_id: ShopId::from_stored(int("sh")?).ok_or_else(|| corrupt(t, id, "bad shop id"))?,
        seq: u32::try_from(int("s")?).map_err(|_| corrupt(t, id, "bad seq"))?,
        origin: Origin::Claim,
        status: CouponStatus::Unused,
        valid_from: from_ms(int("vf")?),
        valid_until: from_ms(int("vu")?),
        claimed_at,
        locked_order_id: None,
        used_at: None,
    };
    Ok(ClaimRecord {
        coupon,
        claim_key: f.get("k").cloned(),
        traceparent: f.get("t").cloned(),
    })
}

impl Hinted {
    fn sweep_due(&self) -> bool {
        let last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
        last.is_none_or(|at| at.elapsed() >= self.sweep)
    }

    fn swept(&self) {
        *self.last_sweep.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(std::time::Instant::now());
    }
}

impl Persister {
    /// `batch`: log entries per transaction (at least 1).
    pub fn new(
        conn: impl Into<Connection>,
        prefix: &str,
        log_store: Arc<dyn ClaimLogStore>,
        node_id: impl Into<String>,
        batch: usize,
    ) -> Self {
        Self {
            conn: conn.into(),
            prefix: prefix.to_owned(),
            log_store,
            node_id: node_id.into(),
            batch: batch.max(1),
            lease: DEFAULT_LEASE,
            hinted: None,
            replica_wait: None,
        }
    }

    /// Copies log entries to MySQL only once `wait`'s replicas hold them: an entry a
    /// failover then loses cannot already be a coupon in MySQL whose stock the new master
    /// never took (which would let it sell that coupon twice).
    pub fn with_replica_wait(mut self, wait: Option<ReplicaWait>) -> Self {
        self.replica_wait = wait;
        self
    }

    /// Between full sweeps (one every `sweep`), visits only the logs in `hints`: give the
    /// same hints to this node's hot state ([`crate::RedisHotState::with_hints`]).
    pub fn with_hints(mut self, hints: Arc<ClaimLogHints>, sweep: Duration) -> Self {
        self.hinted = Some(Hinted {
            hints,
            sweep,
            last_sweep: std::sync::Mutex::new(None),
        });
        self
    }

    /// [`Persister::new`] on a new connection to `url`.
    pub async fn connect(
        url: &str,
        prefix: &str,
        log_store: Arc<dyn ClaimLogStore>,
        node_id: impl Into<String>,
        batch: usize,
    ) -> Result<Self, StoreError> {
        Ok(Self::new(
            crate::connect(url).await?,
            prefix,
            log_store,
            node_id,
            batch,
        ))
    }

    /// Sets the lease time (the longest a dead node's logs wait before another node takes
    /// them over). It must be well above the time of one batch.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Runs passes every `every` until `token` is cancelled; a failed pass is logged and
    /// retried on the next tick.
    pub async fn run(&self, every: Duration, token: CancellationToken) {
        loop {
            match self.run_once().await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::debug!(persisted = n, node = %self.node_id, "claim logs persisted")
                }
                Err(e) => {
                    tracing::warn!(error = %e, node = %self.node_id, "persisting claim logs failed; retrying")
                }
            }
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    /// One pass (see "Which logs a pass visits"); the number of entries this node
    /// persisted. A template that fails does not stop the others (and stays hinted); the
    /// first error is returned at the end.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let candidates = match &self.hinted {
            Some(h) if !h.sweep_due() => h.hints.take(),
            Some(h) => {
                // Hints taken before the sweep reads the set: a claim marked after this is
                // kept for the next pass.
                let hinted = h.hints.take();
                let logs = self.non_empty(self.templates().await?).await;
                let mut logs = match logs {
                    Ok(l) => l,
                    Err(e) => {
                        for t in hinted {
                            h.hints.mark(t);
                        }
                        return Err(e);
                    }
                };
                h.swept();
                logs.extend(hinted);
                logs.sort_unstable();
                logs.dedup();
                logs
            }
            None => self.non_empty(self.templates().await?).await?,
        };
        let mut total = 0;
        let mut first_err = None;
        for t in candidates {
            match self.drain(t).await {
                Ok(n) => total += n,
                Err(e) => {
                    tracing::warn!(error = %e, template = %t, "persisting a claim log failed");
                    if let Some(h) = &self.hinted {
                        h.hints.mark(t);
                    }
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }

    /// The next batch of `t`'s log after its applied position (`None` when there is none).
    /// Reads only: a building block of [`Persister::run_once`], public for tools and tests.
    pub async fn read_batch(&self, t: TemplateId) -> Result<Option<LogBatch>, StoreError> {
        let k = TemplateKeys::new(&self.prefix, t);
        let from = self.log_store.applied_position(t).await?;
        self.read_after(t, &k, &from).await
    }

    /// Template ids registered in `P:claimlogs`.
    async fn templates(&self) -> Result<Vec<TemplateId>, StoreError> {
        let key = keys::claim_logs(&self.prefix);
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, members): (u64, Vec<String>) = redis::cmd("SSCAN")
                .arg(&key)
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(backend)?;
            for m in members {
                match TemplateId::parse(&m) {
                    Some(t) => out.push(t),
                    None => {
                        tracing::warn!(member = %m, set = %key, "ignoring a member that is not a template id")
                    }
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// The templates of `ts` whose log has entries, [`SWEEP_CHUNK`] lengths per round trip.
    /// Being a look at every log, it also sets the backlog and lag gauges ([`BACKLOG`],
    /// [`LAG`]): the entry count, and the age of the oldest entry of the non-empty logs (one
    /// more pipelined `XRANGE … COUNT 1` per chunk that has any).
    async fn non_empty(&self, ts: Vec<TemplateId>) -> Result<Vec<TemplateId>, StoreError> {
        let mut out = Vec::new();
        let mut backlog = 0u64;
        let mut oldest_ms: Option<u64> = None;
        for chunk in ts.chunks(SWEEP_CHUNK) {
            let lens: Vec<u64> = self
                .conn
                .query_many(
                    chunk
                        .iter()
                        .map(|&t| {
                            let mut c = redis::cmd("XLEN");
                            c.arg(TemplateKeys::new(&self.prefix, t).log);
                            c
                        })
                        .collect(),
                )
                .await
                .map_err(backend)?;
            let first = out.len();
            for (&t, n) in chunk.iter().zip(lens) {
                if n > 0 {
                    backlog += n;
                    out.push(t);
                }
            }
            if out.len() > first {
                let heads: Vec<Entries> = self
                    .conn
                    .query_many(
                        out[first..]
                            .iter()
                            .map(|&t| {
                                let mut c = redis::cmd("XRANGE");
                                c.arg(TemplateKeys::new(&self.prefix, t).log)
                                    .arg("-")
                                    .arg("+")
                                    .arg("COUNT")
                                    .arg(1);
                                c
                            })
                            .collect(),
                    )
                    .await
                    .map_err(backend)?;
                let ms = heads
                    .iter()
                    .filter_map(|e| e.first().and_then(|(id, _)| entry_ms(id)))
                    .min();
                oldest_ms = oldest_ms.into_iter().chain(ms).min();
            }
        }
        metrics::gauge!(BACKLOG).set(backlog as f64);
        let lag = oldest_ms.map_or(0.0, |ms| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            now.saturating_sub(u128::from(ms)) as f64 / 1000.0
        });
        metrics::gauge!(LAG).set(lag);
        Ok(out)
    }

    async fn drain(&self, t: TemplateId) -> Result<usize, StoreError> {
        let k = TemplateKeys::new(&self.prefix, t);
        let mut conn = self.conn.clone();
        let len: u64 = redis::cmd("XLEN")
            .arg(&k.log)
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        if len == 0 || !self.acquire(&k).await? {
            return Ok(0);
        }
        let res = self.drain_leased(t, &k).await;
        if let Err(e) = self.release(&k).await {
            tracing::warn!(error = %e, template = %t, "could not release a claim-log lease; it expires");
        }
        res
    }

    async fn drain_leased(&self, t: TemplateId, k: &TemplateKeys) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let from = self.log_store.applied_position(t).await?;
            self.forget_applied(t, k, &from).await?;
            let Some(b) = self.read_after(t, k, &from).await? else {
                break;
            };
            if let Some(wait) = self.replica_wait {
                // Renewing the lease is a write on this connection after the read, so the
                // `WAIT` covers every entry read (replication keeps the master's order).
                let conn = self.conn.pinned().await.map_err(backend)?;
                if !self.acquire_on(&conn, k).await? {
                    break;
                }
                wait.confirm(&conn).await?;
            }
            let n = b.records.len();
            self.log_store.insert_claimed(&b.records).await?;
            let count = i64::try_from(n).map_err(|_| corrupt(t, &b.to, "batch too large"))?;
            let applied = self
                .log_store
                .apply_claims(t, &b.from, &b.to, count)
                .await?;
            if !applied {
                // Another persister applied this range first: it also removes it.
                tracing::debug!(template = %t, from = %b.from, "claim-log range applied by another persister");
                break;
            }
            total += n;
            self.forget(k, &b.ids, &b.records).await?;
            if n < self.batch || !self.acquire(k).await? {
                break;
            }
        }
        Ok(total)
    }

    async fn read_after(
        &self,
        t: TemplateId,
        k: &TemplateKeys,
        from: &str,
    ) -> Result<Option<LogBatch>, StoreError> {
        let mut conn = self.conn.clone();
        let entries: Entries = redis::cmd("XRANGE")
            .arg(&k.log)
            .arg(format!("({from}"))
            .arg("+")
            .arg("COUNT")
            .arg(self.batch)
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        let Some(to) = entries.last().map(|(id, _)| id.clone()) else {
            return Ok(None);
        };
        let mut ids = Vec::with_capacity(entries.len());
        let mut records = Vec::with_capacity(entries.len());
        for (id, fields) in &entries {
            records.push(record_of(t, id, fields)?);
            ids.push(id.clone());
        }
        Ok(Some(LogBatch {
            template: t,
            from: from.to_owned(),
            to,
            ids,
            records,
        }))
    }

    /// Removes entries `≤ applied` still in the log (a crash came between apply and removal).
    async fn forget_applied(
        &self,
        t: TemplateId,
        k: &TemplateKeys,
        applied: &str,
    ) -> Result<(), StoreError> {
        if applied == "0-0" {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        loop {
            let entries: Entries = redis::cmd("XRANGE")
                .arg(&k.log)
                .arg("-")
                .arg(applied)
                .arg("COUNT")
                .arg(self.batch)
                .query_async(&mut conn)
                .await
                .map_err(backend)?;
            if entries.is_empty() {
                return Ok(());
            }
            let ids: Vec<String> = entries.iter().map(|(id, _)| id.clone()).collect();
            let records = entries
                .iter()
                .map(|(id, f)| record_of(t, id, f))
                .collect::<Result<Vec<_>, _>>()?;
            tracing::info!(template = %t, entries = ids.len(), "removing claim-log entries applied before a crash");
            self.forget(k, &ids, &records).await?;
            if entries.len() < self.batch {
                return Ok(());
            }
        }
    }

    /// Deletes applied entries from the log and their coupons from the pending hashes.
    async fn forget(
        &self,
        k: &TemplateKeys,
        ids: &[String],
        records: &[ClaimRecord],
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        // The pending hashes are the users' (other slots than the log's on a cluster).
        let mut cmds: Vec<redis::Cmd> = records
            .iter()
            .map(|r| {
                let mut c = redis::cmd("HDEL");
                c.arg(keys::pending(&self.prefix, r.coupon.user_id))
                    .arg(r.coupon.id.get());
                c
            })
            .collect();
        let mut xdel = redis::cmd("XDEL");
        xdel.arg(&k.log).arg(ids);
        cmds.push(xdel);
        let _: Vec<redis::Value> = self.conn.query_many(cmds).await.map_err(backend)?;
        Ok(())
    }

    async fn acquire(&self, k: &TemplateKeys) -> Result<bool, StoreError> {
        self.acquire_on(&self.conn, k).await
    }

    async fn acquire_on(&self, conn: &Connection, k: &TemplateKeys) -> Result<bool, StoreError> {
        let mut conn = conn.clone();
        let ours: i64 = scripts::LEASE_ACQUIRE
            .key(&k.lease)
            .arg(&self.node_id)
            .arg(u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX))
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(ours == 1)
    }

    async fn release(&self, k: &TemplateKeys) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = scripts::LEASE_RELEASE
            .key(&k.lease)
            .arg(&self.node_id)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(())
    }
}
