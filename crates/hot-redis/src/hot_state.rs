//! [`RedisHotState`]: claims decided by one Lua script per claim, distribution batches by one
//! script per batch (see the crate docs).

use crate::Connection;
use crate::keys::{self, TemplateKeys};
use crate::persister::ClaimLogHints;
use crate::replica_wait::ReplicaWait;
use crate::{backend, backend_msg, codec, scripts};
use async_trait::async_trait;
use jiff::Timestamp;
use redis::Value;
use stampede_core::claim_ports::{
    ClaimOutcome, CouponStore, HotState, Reservation, RowReservation, Standing,
};
use stampede_core::ports::{Dependency, StoreError};
use stampede_domain::coupon::{ClaimRefusal, UserCoupon};
use stampede_domain::ids::{DistributionId, UserId};
use stampede_domain::template::Template;
use stampede_domain::time::to_ms;
use std::sync::Arc;
use std::time::Duration;

/// Pairs (user counts or keyed coupons) per `load.lua` call.
const LOAD_CHUNK: usize = 1_000;
/// How long a user's pending-coupons hash lives after its last write. `claim.lua` writes the
/// entry with the claim; persisters remove entries as they persist them. The expiry only
/// cleans up after a persister that removed an entry before `find_claim` wrote it back (or
/// after an outage longer than this, when "my coupons" shows the coupon only once persisted).
const PENDING_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long the "changed while not loaded" marker lives: longer than any cached template.
const CHANGED_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a distribution batch's stored answer (and its return-stock guard) lives. It only
/// has to outlive the retries of that batch: a runner that lost its lease is taken over
/// within minutes, far below this, and a resumed runner checks the task's checkpoint before
/// reserving anyway, so a batch already committed is not reserved again after the expiry.
const DIST_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The distributed [`HotState`] on Redis.
#[derive(Clone)]
pub struct RedisHotState {
    conn: Connection,
    prefix: String,
    coupons: Arc<dyn CouponStore>,
    /// Where claims tell this node's persister which logs they wrote to.
    hints: Option<Arc<ClaimLogHints>>,
    /// Replicas a claim must reach before it is acknowledged (see `replica_wait`).
    replica_wait: Option<ReplicaWait>,
}

impl std::fmt::Debug for RedisHotState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHotState")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// One `load.lua` call's share: `(user id, count)` pairs and `(key field, coupon)` pairs.
type LoadPart<'a> = (&'a [(i64, u32)], &'a [(String, String)]);

/// What `claim.lua` answered.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    NotLoaded,
    Claimed { seq: u32, log_id: String },
    Replay(String),
    Refused(i64),
}

/// The claim script failed. A refused connection means it never left this node (nothing
/// happened); any other I/O failure or timeout may have come after Redis ran it, so the
/// outcome is unknown and the caller looks the claim up by its key. (A connect timeout looks
/// like a response timeout here: it is answered as unknown too, which is safe.)
fn claim_error(e: redis::RedisError) -> StoreError {
    if e.is_io_error() && !e.is_connection_refusal() {
        StoreError::OutcomeUnknown {
            dependency: Dependency::Redis,
            source: Box::new(e),
        }
    } else {
        backend(e)
    }
}

fn bad_reply(v: &Value) -> StoreError {
    StoreError::Corrupt(format!("unexpected reply from claim.lua: {v:?}"))
}

fn int(v: &Value) -> Option<i64> {
    redis::from_redis_value_ref::<i64>(v).ok()
}

fn parse_claim_reply(v: &Value) -> Result<Reply, StoreError> {
    let Value::Array(items) = v else {
        return Err(bad_reply(v));
    };
    let kind = items.first().and_then(int).ok_or_else(|| bad_reply(v))?;
    let second = items.get(1);
    match kind {
        0 => Ok(Reply::NotLoaded),
        1 => {
            let seq = second
                .and_then(int)
                .and_then(|s| u32::try_from(s).ok())
                .ok_or_else(|| bad_reply(v))?;
            let log_id = items
                .get(2)
                .and_then(|s| redis::from_redis_value_ref::<String>(s).ok())
                .ok_or_else(|| bad_reply(v))?;
            Ok(Reply::Claimed { seq, log_id })
        }
        2 => {
            let raw = second
                .and_then(|s| redis::from_redis_value_ref::<String>(s).ok())
                .ok_or_else(|| bad_reply(v))?;
            Ok(Reply::Replay(raw))
        }
        3 => Ok(Reply::Refused(
            second.and_then(int).ok_or_else(|| bad_reply(v))?,
        )),
        _ => Err(bad_reply(v)),
    }
}

/// What `reserve.lua` answered.
#[derive(Debug, PartialEq, Eq)]
enum ReserveReply {
    NotLoaded,
    /// `replay_only` and no stored answer.
    NothingStored,
    /// The encoded answer; `replayed` when an earlier attempt stored it.
    Answer {
        raw: String,
        replayed: bool,
    },
}

fn bad_reserve_reply(v: &Value) -> StoreError {
    StoreError::Corrupt(format!("unexpected reply from reserve.lua: {v:?}"))
}

fn parse_reserve_reply(v: &Value) -> Result<ReserveReply, StoreError> {
    let Value::Array(items) = v else {
        return Err(bad_reserve_reply(v));
    };
    let kind = items
        .first()
        .and_then(int)
        .ok_or_else(|| bad_reserve_reply(v))?;
    let answer = || {
        items
            .get(1)
            .and_then(|s| redis::from_redis_value_ref::<String>(s).ok())
            .ok_or_else(|| bad_reserve_reply(v))
    };
    match kind {
        0 => Ok(ReserveReply::NotLoaded),
        1 => Ok(ReserveReply::NothingStored),
        2 => Ok(ReserveReply::Answer {
            raw: answer()?,
            replayed: true,
        }),
        3 => Ok(ReserveReply::Answer {
            raw: answer()?,
            replayed: false,
        }),
        _ => Err(bad_reserve_reply(v)),
    }
}

/// Decodes a `reserve.lua` answer (one entry per user: seq, or the refusal code negated),
/// which must have `users` entries.
fn parse_answer(raw: &str, users: usize) -> Result<Vec<RowReservation>, StoreError> {
    let corrupt = |what: &str| {
        StoreError::Corrupt(format!(
            "distribution answer {what} ({users} users): {raw:?}"
        ))
    };
    let rows = if raw.is_empty() {
        Vec::new()
    } else {
        raw.split(',')
            .map(|e| {
                let n: i64 = e.parse().map_err(|_| corrupt("has a bad entry"))?;
                if n > 0 {
                    u32::try_from(n)
                        .map(|seq| RowReservation::Reserved { seq })
                        .map_err(|_| corrupt("has a bad seq"))
                } else {
                    n.checked_neg()
                        .and_then(ClaimRefusal::from_code)
                        .map(RowReservation::Refused)
                        .ok_or_else(|| corrupt("has an unknown refusal code"))
                }
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    if rows.len() != users {
        return Err(corrupt("has the wrong number of entries"));
    }
    Ok(rows)
}

impl RedisHotState {
    /// Connects to the Redis at `url`; every key starts with `prefix`. `coupons` is the system
    /// of record read when a template is loaded.
    pub async fn connect(
        url: &str,
        prefix: &str,
        coupons: Arc<dyn CouponStore>,
    ) -> Result<Self, StoreError> {
        Ok(Self::from_manager(
            crate::connect(url).await?,
            prefix,
            coupons,
        ))
    }

    /// Builds on an existing connection (shared with a [`crate::Persister`], say).
    pub fn from_manager(
        conn: impl Into<Connection>,
        prefix: &str,
        coupons: Arc<dyn CouponStore>,
    ) -> Self {
        Self {
            conn: conn.into(),
            prefix: prefix.to_owned(),
            coupons,
            hints: None,
            replica_wait: None,
        }
    }

    /// Acknowledges a claim (or a replay, or a claim found by its key) only once `wait`'s
    /// replicas hold it.
    pub fn with_replica_wait(mut self, wait: Option<ReplicaWait>) -> Self {
        self.replica_wait = wait;
        self
    }

    /// The connection a claim uses: pinned to one socket when writes must be confirmed by
    /// replicas (`WAIT` counts its own connection's writes).
    async fn claim_conn(&self) -> Result<Connection, StoreError> {
        if self.replica_wait.is_some() {
            self.conn.pinned().await.map_err(backend)
        } else {
            Ok(self.conn.clone())
        }
    }

    /// With a replica wait: records `c` as pending on `conn` (a write, so the `WAIT` after
    /// it also covers a coupon another connection wrote) and waits for the replicas.
    async fn confirm(
        &self,
        conn: &Connection,
        c: &UserCoupon,
        written: bool,
    ) -> Result<(), StoreError> {
        let Some(wait) = self.replica_wait else {
            return Ok(());
        };
        if !written {
            self.remember_pending(conn, c).await;
        }
        wait.confirm(conn).await
    }

    /// Marks in `hints` every template a claim is tried on (see
    /// [`crate::Persister::with_hints`]).
    pub fn with_hints(mut self, hints: Arc<ClaimLogHints>) -> Self {
        self.hints = Some(hints);
        self
    }

    pub fn connection(&self) -> Connection {
        self.conn.clone()
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    async fn run_claim(
        &self,
        conn: &Connection,
        k: &TemplateKeys,
        t: &Template,
        c: &UserCoupon,
        key: Option<&str>,
        now: Timestamp,
    ) -> Result<Reply, StoreError> {
        let field = key
            .map(|key| keys::claim_key_field(key, c.user_id))
            .unwrap_or_default();
        let mut inv = scripts::CLAIM.prepare_invoke();
        inv.key(&k.meta).key(&k.users).key(&k.keys).key(&k.log);
        if !self.conn.is_cluster() {
            inv.key(keys::pending(&self.prefix, c.user_id));
        }
        inv.arg(to_ms(now))
            .arg(c.user_id.get())
            .arg(&field)
            .arg(key.unwrap_or(""))
            .arg(c.id.get())
            .arg(t.id.get())
            .arg(c.shop_id.get())
            .arg(to_ms(c.valid_from))
            .arg(to_ms(c.valid_until))
            .arg(to_ms(c.claimed_at));
        for r in [
            ClaimRefusal::NotStarted,
            ClaimRefusal::Ended,
            ClaimRefusal::Terminated,
            ClaimRefusal::SoldOut,
            ClaimRefusal::LimitReached,
        ] {
            inv.arg(r.as_code());
        }
        inv.arg(PENDING_TTL.as_millis() as u64);
        inv.arg(stampede_core::events::current_traceparent().unwrap_or_default());
        let mut conn = conn.clone();
        let v: Value = inv.invoke_async(&mut conn).await.map_err(claim_error)?;
        parse_claim_reply(&v)
    }

    async fn run_reserve(
        &self,
        k: &TemplateKeys,
        r: &Reservation<'_>,
        now: Timestamp,
    ) -> Result<ReserveReply, StoreError> {
        let mut inv = scripts::RESERVE.prepare_invoke();
        inv.key(&k.meta)
            .key(&k.users)
            .key(k.dist_answer(r.task, r.first_row))
            .arg(to_ms(now))
            .arg(if r.replay_only { "1" } else { "0" })
            .arg(DIST_TTL.as_millis() as u64);
        for refusal in [
            ClaimRefusal::Ended,
            ClaimRefusal::Terminated,
            ClaimRefusal::SoldOut,
            ClaimRefusal::LimitReached,
        ] {
            inv.arg(refusal.as_code());
        }
        for u in r.users {
            inv.arg(u.get());
        }
        let mut conn = self.conn.clone();
        let v: Value = inv.invoke_async(&mut conn).await.map_err(backend)?;
        parse_reserve_reply(&v)
    }

    /// Loads `t` (see the crate docs, "Loading"). Ends without writing anything when another
    /// node loaded it meanwhile.
    async fn load(&self, k: &TemplateKeys, t: &Template) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        // Registered before the log can exist: a crash between the two leaves an empty log
        // in the set (harmless), never a log no persister scans.
        let _: i64 = redis::cmd("SADD")
            .arg(keys::claim_logs(&self.prefix))
            .arg(t.id.get())
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        let state = self.coupons.claim_state(t.id).await?;
        let users: Vec<(i64, u32)> = state
            .user_counts()
            .iter()
            .map(|(u, n)| (u.get(), *n))
            .collect();
        let keyed: Vec<(String, String)> = state
            .keyed
            .iter()
            .map(|(key, c)| (keys::claim_key_field(key, c.user_id), codec::encode(c)))
            .collect();
        let mut parts: Vec<LoadPart<'_>> = Vec::new();
        if users.len() + keyed.len() <= LOAD_CHUNK {
            parts.push((&users, &keyed));
        } else {
            parts.extend(users.chunks(LOAD_CHUNK).map(|u| (u, &[][..])));
            parts.extend(keyed.chunks(LOAD_CHUNK).map(|kd| (&[][..], kd)));
            parts.push((&[], &[]));
        }
        let last = parts.len() - 1;
        for (i, (u, kd)) in parts.into_iter().enumerate() {
            let mut inv = scripts::LOAD.prepare_invoke();
            inv.key(&k.meta)
                .key(&k.users)
                .key(&k.keys)
                .key(&k.changed)
                .arg(if i == last { "1" } else { "0" })
                .arg(to_ms(t.updated_at))
                .arg(t.status.as_str())
                .arg(to_ms(t.claim_start))
                .arg(to_ms(t.claim_end))
                .arg(t.per_user_limit)
                .arg(t.stock)
                .arg(t.shop_id.get())
                .arg(u.len())
                .arg(t.stock_total);
            for (user, n) in u {
                inv.arg(user).arg(n);
            }
            for (field, coupon) in kd {
                inv.arg(field).arg(coupon);
            }
            let written: i64 = inv.invoke_async(&mut conn).await.map_err(backend)?;
            match written {
                1 => {}
                0 => return Ok(()),
                -1 => {
                    return Err(backend_msg(format!(
                        "template {} changed after the copy being loaded; load it again from the system of record",
                        t.id
                    )));
                }
                other => {
                    return Err(StoreError::Corrupt(format!(
                        "unexpected reply from load.lua: {other}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Stock and the user's count of each template in one round trip.
    async fn read_standing(
        &self,
        ts: &[&Template],
        user: Option<UserId>,
    ) -> Result<Vec<Standing>, StoreError> {
        if ts.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmds = Vec::with_capacity(ts.len() * 2);
        for t in ts {
            let k = TemplateKeys::new(&self.prefix, t.id);
            let mut stock = redis::cmd("HGET");
            stock.arg(&k.meta).arg("stock");
            cmds.push(stock);
            if let Some(u) = user {
                let mut held = redis::cmd("HGET");
                held.arg(&k.users).arg(u.get());
                cmds.push(held);
            }
        }
        let values: Vec<Option<i64>> = self.conn.query_many(cmds).await.map_err(backend)?;
        let per = if user.is_some() { 2 } else { 1 };
        Ok(values
            .chunks(per)
            .map(|v| {
                let stock = v.first().copied().flatten();
                Standing {
                    stock: stock.map(|s| s.max(0)),
                    held: user
                        .map(|_| v.get(1).copied().flatten().unwrap_or(0))
                        .map(|n| u32::try_from(n.max(0)).unwrap_or(u32::MAX)),
                }
            })
            .collect())
    }

    /// Read-your-writes copy of an acknowledged coupon. Its failure does not fail the claim,
    /// which is already durable in the claim log.
    async fn remember_pending(&self, conn: &Connection, c: &UserCoupon) {
        let key = keys::pending(&self.prefix, c.user_id);
        let mut conn = conn.clone();
        let res: Result<(), redis::RedisError> = redis::pipe()
            .cmd("HSET")
            .arg(&key)
            .arg(c.id.get())
            .arg(codec::encode(c))
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(PENDING_TTL.as_millis() as u64)
            .ignore()
            .query_async(&mut conn)
            .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, coupon = %c.id, "could not record a pending coupon; it shows once persisted");
        }
    }
}

#[async_trait]
impl HotState for RedisHotState {
    async fn claim(
        &self,
        t: &Template,
        coupon: UserCoupon,
        key: Option<&str>,
        now: Timestamp,
    ) -> Result<ClaimOutcome, StoreError> {
        let k = TemplateKeys::new(&self.prefix, t.id);
        let mut coupon = codec::normalize(coupon);
        coupon.template_id = t.id;
        // Marked before the script (a claim whose answer is lost may still have been
        // logged) and again after it (a pass that took the first mark may have read the log
        // before this entry was in it).
        let mark = || {
            if let Some(h) = &self.hints {
                h.mark(t.id);
            }
        };
        mark();
        let conn = self.claim_conn().await?;
        let reply = async {
            let mut reply = self.run_claim(&conn, &k, t, &coupon, key, now).await?;
            if reply == Reply::NotLoaded {
                self.load(&k, t).await?;
                reply = self.run_claim(&conn, &k, t, &coupon, key, now).await?;
            }
            Ok::<_, StoreError>(reply)
        }
        .await;
        mark();
        let reply = reply?;
        match reply {
            Reply::NotLoaded => Err(backend_msg(format!(
                "template {} is not loaded in Redis after loading it",
                t.id
            ))),
            Reply::Claimed { seq, log_id } => {
                coupon.seq = seq;
                // On one Redis, claim.lua recorded it as pending too (one round trip per
                // claim); a cluster keeps the user's hash out of the template's script.
                if self.conn.is_cluster() {
                    self.remember_pending(&conn, &coupon).await;
                }
                self.confirm(&conn, &coupon, true).await?;
                tracing::trace!(template = %t.id, coupon = %coupon.id, %log_id, "claimed");
                Ok(ClaimOutcome::Claimed(coupon))
            }
            Reply::Replay(raw) => {
                let c = codec::decode(&raw)?;
                // The original claim may have been answered OUTCOME_UNKNOWN for want of
                // replicas: a replay is acknowledged only once they hold it too.
                self.confirm(&conn, &c, false).await?;
                Ok(ClaimOutcome::Replayed(c))
            }
            Reply::Refused(code) => ClaimRefusal::from_code(code)
                .map(ClaimOutcome::Refused)
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("claim.lua refused with unknown code {code}"))
                }),
        }
    }

    /// `claim.lua` records a keyed claim's coupon under its key in the same script that takes
    /// the stock, so the key's entry exists exactly when the claim happened. Sent on the same
    /// multiplexed connection, this read runs after any claim still queued on it.
    async fn find_claim(
        &self,
        t: &Template,
        user: UserId,
        key: &str,
    ) -> Result<Option<UserCoupon>, StoreError> {
        let k = TemplateKeys::new(&self.prefix, t.id);
        let conn = self.claim_conn().await?;
        let raw: Option<String> = redis::cmd("HGET")
            .arg(&k.keys)
            .arg(keys::claim_key_field(key, user))
            .query_async(&mut conn.clone())
            .await
            .map_err(backend)?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        let c = codec::decode(&raw)?;
        self.remember_pending(&conn, &c).await;
        // Found on the master: it counts once the replicas hold it.
        self.confirm(&conn, &c, true).await?;
        Ok(Some(c))
    }

    async fn stock(&self, t: &Template) -> Result<Option<i64>, StoreError> {
        let k = TemplateKeys::new(&self.prefix, t.id);
        let mut conn = self.conn.clone();
        redis::cmd("HGET")
            .arg(&k.meta)
            .arg("stock")
            .query_async(&mut conn)
            .await
            .map_err(backend)
    }

    async fn standing(
        &self,
        ts: &[&Template],
        user: Option<UserId>,
    ) -> Result<Vec<Standing>, StoreError> {
        let mut out = self.read_standing(ts, user).await?;
        let Some(u) = user else {
            return Ok(out);
        };
        // Not loaded yet: load (what a claim would do) so the user's count is exact.
        for (t, st) in ts.iter().zip(out.iter_mut()) {
            if st.stock.is_none() {
                self.load(&TemplateKeys::new(&self.prefix, t.id), t).await?;
                if let Some(fresh) = self.read_standing(&[t], Some(u)).await?.pop() {
                    *st = fresh;
                }
            }
        }
        Ok(out)
    }

    async fn template_changed(&self, t: &Template) -> Result<(), StoreError> {
        let k = TemplateKeys::new(&self.prefix, t.id);
        let mut conn = self.conn.clone();
        let _: i64 = scripts::CHANGED
            .key(&k.meta)
            .key(&k.changed)
            .arg(t.stock_total)
            .arg(t.status.as_str())
            .arg(to_ms(t.updated_at))
            .arg(CHANGED_TTL.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn pending_coupons(&self, user: UserId) -> Result<Vec<UserCoupon>, StoreError> {
        let mut conn = self.conn.clone();
        let raw: Vec<String> = redis::cmd("HVALS")
            .arg(keys::pending(&self.prefix, user))
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        let mut out = Vec::with_capacity(raw.len());
        for r in raw {
            match codec::decode(&r) {
                Ok(c) => out.push(c),
                Err(e) => {
                    tracing::warn!(error = %e, user = %user, "skipping an unreadable pending coupon")
                }
            }
        }
        out.sort_by_key(|c| c.id);
        Ok(out)
    }

    async fn reserve_batch(
        &self,
        t: &Template,
        r: &Reservation<'_>,
        now: Timestamp,
    ) -> Result<Option<Vec<RowReservation>>, StoreError> {
        let k = TemplateKeys::new(&self.prefix, t.id);
        let mut reply = self.run_reserve(&k, r, now).await?;
        if reply == ReserveReply::NotLoaded {
            self.load(&k, t).await?;
            reply = self.run_reserve(&k, r, now).await?;
        }
        match reply {
            ReserveReply::NotLoaded => Err(backend_msg(format!(
                "template {} is not loaded in Redis after loading it",
                t.id
            ))),
            ReserveReply::NothingStored => Ok(None),
            ReserveReply::Answer { raw, replayed } => {
                let rows = parse_answer(&raw, r.users.len())?;
                let reserved = rows
                    .iter()
                    .filter(|x| matches!(x, RowReservation::Reserved { .. }))
                    .count();
                tracing::trace!(
                    template = %t.id,
                    task = %r.task,
                    first_row = r.first_row,
                    users = rows.len(),
                    reserved,
                    replayed,
                    "distribution batch reserved"
                );
                Ok(Some(rows))
            }
        }
    }

    /// Nothing to give back: `reserve.lua` stored the answer, and the retry of this batch
    /// (same task and first row) replays it, reserving nothing twice. Giving the stock back
    /// here would let claims take it while the stored answer still hands it to the retry.
    async fn abandon_batch(
        &self,
        _t: &Template,
        _r: &Reservation<'_>,
        _answer: &[RowReservation],
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn return_stock(
        &self,
        t: &Template,
        task: DistributionId,
        first_row: u64,
        n: u64,
    ) -> Result<(), StoreError> {
        if n == 0 {
            return Ok(());
        }
        let k = TemplateKeys::new(&self.prefix, t.id);
        let mut conn = self.conn.clone();
        let done: i64 = scripts::RETURN_STOCK
            .key(&k.meta)
            .key(k.dist_return(task, first_row))
            .arg(n)
            .arg(DIST_TTL.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        match done {
            1 => {
                tracing::trace!(template = %t.id, %task, first_row, n, "distribution stock returned");
                Ok(())
            }
            0 => {
                tracing::trace!(template = %t.id, %task, first_row, "distribution stock already returned");
                Ok(())
            }
            // Not loaded: the next load reads the stock from the system of record, which
            // never took these coupons off.
            -1 => Ok(()),
            other => Err(StoreError::Corrupt(format!(
                "unexpected reply from return.lua: {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert!(matches!(
            parse_claim_reply(&Value::Array(vec![Value::Int(0)])),
            Ok(Reply::NotLoaded)
        ));
        assert!(matches!(
            parse_claim_reply(&Value::Array(vec![Value::Int(1), Value::Int(2), b("1-0")])),
            Ok(Reply::Claimed { seq: 2, log_id }) if log_id == "1-0"
        ));
        assert!(
            matches!(parse_claim_reply(&Value::Array(vec![Value::Int(2), b("x")])), Ok(Reply::Replay(s)) if s == "x")
        );
        assert!(matches!(
            parse_claim_reply(&Value::Array(vec![Value::Int(3), Value::Int(4)])),
            Ok(Reply::Refused(4))
        ));
        assert!(parse_claim_reply(&Value::Nil).is_err());
        assert!(parse_claim_reply(&Value::Array(vec![Value::Int(9)])).is_err());
    }

    #[test]
    fn a_claim_that_may_have_left_is_an_unknown_outcome() {
        use std::io::{Error, ErrorKind};
        let io = |k: ErrorKind| claim_error(redis::RedisError::from(Error::new(k, "x")));
        for k in [
            ErrorKind::ConnectionReset,
            ErrorKind::BrokenPipe,
            ErrorKind::UnexpectedEof,
            ErrorKind::TimedOut,
        ] {
            assert!(
                matches!(
                    io(k),
                    StoreError::OutcomeUnknown {
                        dependency: Dependency::Redis,
                        ..
                    }
                ),
                "{k:?}"
            );
        }
        // Refused (also by the open breaker): never sent, surely nothing happened.
        assert!(matches!(
            io(ErrorKind::ConnectionRefused),
            StoreError::Unavailable {
                dependency: Dependency::Redis,
                ..
            }
        ));
        let server = redis::RedisError::from((redis::ErrorKind::Client, "NOSCRIPT"));
        assert!(matches!(claim_error(server), StoreError::Backend(_)));
    }

    #[test]
    fn parses_reserve_replies() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert!(matches!(
            parse_reserve_reply(&Value::Array(vec![Value::Int(0)])),
            Ok(ReserveReply::NotLoaded)
        ));
        assert!(matches!(
            parse_reserve_reply(&Value::Array(vec![Value::Int(1)])),
            Ok(ReserveReply::NothingStored)
        ));
        assert!(matches!(
            parse_reserve_reply(&Value::Array(vec![Value::Int(2), b("1,-4")])),
            Ok(ReserveReply::Answer { raw, replayed: true }) if raw == "1,-4"
        ));
        assert!(matches!(
            parse_reserve_reply(&Value::Array(vec![Value::Int(3), b("")])),
            Ok(ReserveReply::Answer { raw, replayed: false }) if raw.is_empty()
        ));
        assert!(parse_reserve_reply(&Value::Array(vec![Value::Int(2)])).is_err());
        assert!(parse_reserve_reply(&Value::Array(vec![Value::Int(4)])).is_err());
        assert!(parse_reserve_reply(&Value::Nil).is_err());
    }

    #[test]
    fn parses_answers() {
        let code = |r: ClaimRefusal| -r.as_code();
        let raw = format!(
            "1,{},2,{},{},{}",
            code(ClaimRefusal::LimitReached),
            code(ClaimRefusal::SoldOut),
            code(ClaimRefusal::Ended),
            code(ClaimRefusal::Terminated)
        );
        assert!(matches!(
            parse_answer(&raw, 6).as_deref(),
            Ok([
                RowReservation::Reserved { seq: 1 },
                RowReservation::Refused(ClaimRefusal::LimitReached),
                RowReservation::Reserved { seq: 2 },
                RowReservation::Refused(ClaimRefusal::SoldOut),
                RowReservation::Refused(ClaimRefusal::Ended),
                RowReservation::Refused(ClaimRefusal::Terminated),
            ])
        ));
        assert!(matches!(parse_answer("", 0).as_deref(), Ok([])));
        for (bad, users) in [
            ("1,2", 3),
            ("", 1),
            ("1,2", 1),
            ("0", 1),
            ("-99", 1),
            ("x", 1),
            ("1,,2", 3),
            ("4294967296", 1),
        ] {
            assert!(
                matches!(parse_answer(bad, users), Err(StoreError::Corrupt(_))),
                "{bad:?}"
            );
        }
    }
}
