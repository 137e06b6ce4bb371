//! Per-template hot state and the claim decision.
//!
//! Per user the state keeps the set of seqs held (a seq is a coupon's rank among the user's
//! coupons of the template, `1..=per_user_limit`), not a count: a failed claim gives back
//! exactly the seq it took, so a later claim never takes a seq a neighbour still holds (the
//! store's unique key on `(user, template, seq)` would refuse it). The set is a 128-bit mask
//! stored as two `u64` (8-byte alignment keeps the entry small): 8 bytes of key + 16 of mask
//! = 24 bytes per map slot, plus one control byte, at a load factor between 7/8 and 7/16
//! after a resize, so about 30 to 60 bytes per user who ever claimed the template.
//!
//! A claim that carried an `Idempotency-Key` keeps `(user, key) → coupon id` (a 32-byte key
//! with the key's text on the heap, a 16-byte slot), not the coupon: a retry reads the coupon
//! from the journal's pending set or the store. Rebuilt after a restart from the store's
//! `claim_index` (four narrow columns, streamed).

use crate::journal::{AppendError, ClaimJournal, JournalStats};
use crate::writer::{self, Pending, WriterStats};
use async_trait::async_trait;
use jiff::Timestamp;
use stampede_core::claim_ports::{
    ClaimOutcome, ClaimRecord, CouponStore, HotState, Reservation, RowReservation, Standing,
};
use stampede_core::ports::{Dependency, StoreError, TemplateStore};
use stampede_domain::coupon::{ClaimRefusal, UserCoupon, check_window};
use stampede_domain::ids::{CouponId, DistributionId, TemplateId, UserId};
use stampede_domain::template::{MAX_PER_USER_LIMIT, Template, TemplateStatus};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use tokio::sync::{Notify, mpsc, oneshot};

/// Shards of the per-user maps: enough that thousands of concurrent claimers rarely meet on
/// one mutex, few enough to stay cheap per template.
const SHARDS: usize = 64;

const ACTIVE: u8 = 0;
const ENDED: u8 = 1;
const TERMINATED: u8 = 2;

fn status_code(s: TemplateStatus) -> u8 {
    match s {
        TemplateStatus::Active => ACTIVE,
        TemplateStatus::Ended => ENDED,
        TemplateStatus::Terminated => TERMINATED,
    }
}

fn status_of(code: u8) -> TemplateStatus {
    match code {
        ENDED => TemplateStatus::Ended,
        TERMINATED => TemplateStatus::Terminated,
        _ => TemplateStatus::Active,
    }
}

/// The seqs a user holds of one template: bit `s - 1` set ⇔ seq `s` is taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Seqs([u64; 2]);

const SEQ_BITS: u32 = 128;

// Every seq a valid per-user limit allows must have its bit.
const _: () = assert!(MAX_PER_USER_LIMIT <= SEQ_BITS as i64);

impl Seqs {
    fn len(self) -> u32 {
        self.0[0].count_ones() + self.0[1].count_ones()
    }

    fn is_empty(self) -> bool {
        self.0 == [0, 0]
    }

    fn contains(self, seq: u32) -> bool {
        Self::bit(seq).is_some_and(|(w, m)| self.0[w] & m != 0)
    }

    /// Word and mask of `seq`'s bit; `None` outside `1..=128`.
    fn bit(seq: u32) -> Option<(usize, u64)> {
        let i = seq.checked_sub(1).filter(|&i| i < SEQ_BITS)?;
        Some(((i / 64) as usize, 1u64 << (i % 64)))
    }

    fn insert(&mut self, seq: u32) -> bool {
        match Self::bit(seq) {
            Some((w, m)) => {
                self.0[w] |= m;
                true
            }
            None => false,
        }
    }

    fn remove(&mut self, seq: u32) {
        if let Some((w, m)) = Self::bit(seq) {
            self.0[w] &= !m;
        }
    }

    /// Takes the lowest free seq if fewer than `limit` are held.
    fn take(&mut self, limit: u32) -> Option<u32> {
        let limit = limit.min(SEQ_BITS);
        if self.len() >= limit {
            return None;
        }
        // Fewer than `limit` held, so one of `1..=limit` is free.
        let lowest = match (!self.0[0]).trailing_zeros() {
            64 => 64 + (!self.0[1]).trailing_zeros(),
            n => n,
        };
        let seq = lowest + 1;
        if seq > limit || !self.insert(seq) {
            return None;
        }
        Some(seq)
    }
}

/// Kept small (16 bytes): a template can have millions of keyed holders.
enum KeySlot {
    /// A claim with this key is being decided; others with the same key wait for it.
    InFlight(Arc<Notify>),
    /// Claimed: a replay reads the coupon from the store (a retry is rare; holding every
    /// keyed coupon in memory is not).
    Done(CouponId),
    /// The claim's commit failed and reading it back failed too: it may be on disk. Its stock
    /// and the user's slot stay taken (never oversell) until a retry with the key reads the
    /// outcome back.
    Unknown(Box<UserCoupon>),
}

struct Hot {
    stock: AtomicI64,
    /// The `stock_total` the hot stock reflects; restocks apply the difference, so a restock
    /// seen both by a fresh load and by its change notification is counted once.
    stock_total: AtomicI64,
    status: AtomicU8,
    /// Per-user held seqs and claim keys, sharded; allocated on first use. A template that
    /// is only looked at (discovery loads it to count a user's coupons) and never claimed
    /// keeps none: 128 empty sharded maps are ~6 KB, a listing of 200,000 templates 1.2 GB.
    users: OnceLock<Box<[Mutex<UserMap>]>>,
    keys: OnceLock<Box<[Mutex<KeyMap>]>>,
}

/// A user's held seqs. User ids come from signed tokens, so a fast seeded hash is enough.
type UserMap = HashMap<UserId, Seqs, foldhash::fast::RandomState>;
/// Claim keys are the client's own text: a seeded hash of good quality, still far cheaper
/// than the standard library's SipHash on millions of entries.
type KeyMap = HashMap<(UserId, String), KeySlot, foldhash::quality::RandomState>;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these short sections leaves consistent data (each
    // section is a single map operation), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn shard(user: UserId) -> usize {
    // Users are often sequential: mix before taking the shard.
    let x = (user.get() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 58) as usize % SHARDS
}

/// A template's per-user maps, sharded, each behind its lock.
type Shards<K, V, S> = Box<[Mutex<HashMap<K, V, S>>]>;

/// `SHARDS` empty maps behind their locks.
fn empty_shards<K, V, S: Default>() -> Shards<K, V, S> {
    (0..SHARDS)
        .map(|_| Mutex::new(HashMap::with_hasher(S::default())))
        .collect()
}

/// The maps behind their locks, or nothing yet when they are all empty.
fn shards_if_any<K, V, S>(maps: Vec<HashMap<K, V, S>>) -> OnceLock<Shards<K, V, S>> {
    let cell = OnceLock::new();
    if maps.iter().any(|m| !m.is_empty()) {
        let _ = cell.set(maps.into_iter().map(Mutex::new).collect());
    }
    cell
}

/// One empty map per shard, each with room for the entries of `users` that fall in it.
fn sized_shards<K: Eq + Hash, V, S: BuildHasher + Default>(
    users: impl Iterator<Item = UserId>,
) -> Vec<HashMap<K, V, S>> {
    let mut per_shard = [0usize; SHARDS];
    for u in users {
        per_shard[shard(u)] += 1;
    }
    per_shard
        .iter()
        .map(|&n| HashMap::with_capacity_and_hasher(n, S::default()))
        .collect()
}

impl Hot {
    fn new(t: &Template, seqs: Vec<(UserId, u32)>, keyed: Vec<(UserId, String, CouponId)>) -> Self {
        // Built unlocked and sized up front: a rebuild inserts millions of entries.
        let mut user_maps: Vec<UserMap> = sized_shards(seqs.iter().map(|(u, _)| *u));
        for (u, seq) in seqs {
            if !user_maps[shard(u)].entry(u).or_default().insert(seq) {
                // No valid limit hands out such a seq; the store's unique key still guards
                // it, and the user's count here is one short.
                tracing::warn!(template = %t.id, user = %u, seq, "a stored coupon's seq is out of range");
            }
        }
        let mut key_maps: Vec<KeyMap> = sized_shards(keyed.iter().map(|(u, _, _)| *u));
        for (user, k, id) in keyed {
            key_maps[shard(user)].insert((user, k), KeySlot::Done(id));
        }
        let users = shards_if_any(user_maps);
        let keys = shards_if_any(key_maps);
        Hot {
            stock: AtomicI64::new(t.stock),
            stock_total: AtomicI64::new(t.stock_total),
            status: AtomicU8::new(status_code(t.status)),
            users,
            keys,
        }
    }

    fn users(&self) -> &[Mutex<UserMap>] {
        self.users.get_or_init(empty_shards)
    }

    fn keys(&self) -> &[Mutex<KeyMap>] {
        self.keys.get_or_init(empty_shards)
    }

    /// Coupons of this template `user` holds (without allocating the maps).
    fn held(&self, user: UserId) -> u32 {
        self.users.get().map_or(0, |shards| {
            lock(&shards[shard(user)]).get(&user).map_or(0, |s| s.len())
        })
    }

    /// Takes the user's lowest free seq, or `None` when the user holds `limit` already.
    fn take_seq(&self, user: UserId, limit: u32) -> Option<u32> {
        let mut users = lock(&self.users()[shard(user)]);
        let mut held = users.get(&user).copied().unwrap_or_default();
        let seq = held.take(limit)?;
        users.insert(user, held);
        Some(seq)
    }

    /// Gives back the seq one claim or reservation took (and nothing else).
    /// A reservation that never became a coupon: its stock and the user's seq go back.
    fn give_back(&self, user: UserId, seq: u32) {
        self.stock.fetch_add(1, Ordering::AcqRel);
        self.free_seq(user, seq);
    }

    fn free_seq(&self, user: UserId, seq: u32) {
        let mut users = lock(&self.users()[shard(user)]);
        if let Some(held) = users.get_mut(&user) {
            debug_assert!(
                held.contains(seq),
                "freeing seq {seq} the user does not hold"
            );
            held.remove(seq);
            if held.is_empty() {
                users.remove(&user);
            }
        }
    }

    /// Frees a key slot this claim owned and wakes whoever waits on it.
    fn release_key(&self, user: UserId, key: &str) {
        if let Some(KeySlot::InFlight(n)) =
            lock(&self.keys()[shard(user)]).remove(&(user, key.to_owned()))
        {
            n.notify_waiters();
        }
    }

    /// Parks a key whose claim has an unknown outcome, waking whoever waits on it.
    fn unknown_key(&self, user: UserId, key: &str, coupon: &UserCoupon) {
        let prev = lock(&self.keys()[shard(user)]).insert(
            (user, key.to_owned()),
            KeySlot::Unknown(Box::new(coupon.clone())),
        );
        if let Some(KeySlot::InFlight(n)) = prev {
            n.notify_waiters();
        }
    }

    fn finish_key(&self, user: UserId, key: &str, coupon: &UserCoupon) {
        let prev = lock(&self.keys()[shard(user)])
            .insert((user, key.to_owned()), KeySlot::Done(coupon.id));
        if let Some(KeySlot::InFlight(n)) = prev {
            n.notify_waiters();
        }
    }
}

/// What a keyed claim found in its key slot.
enum KeyCheck {
    Owned,
    /// Claimed earlier: this coupon.
    Replay(CouponId),
    /// An earlier claim with this key has an unknown outcome; the slot is now owned by the
    /// caller, who must find out.
    Unknown(UserCoupon),
}

/// How a claim that passed the checks becomes durable before it is answered.
enum Ack {
    /// Committed to SQLite by the group-commit writer.
    Commit(mpsc::Sender<Pending>),
    /// Appended to the claim journal; SQLite is applied behind it.
    Journal(Arc<ClaimJournal>),
}

pub struct MemoryHotState {
    /// Loaded templates. Ids are inserted only for templates that exist (generated by this
    /// system), so a fast seeded hash is safe; every claim and discovery read looks here.
    templates: RwLock<HashMap<TemplateId, Arc<Hot>, foldhash::fast::RandomState>>,
    /// Serialises loads and change notifications (both rare), so they never interleave.
    loading: tokio::sync::Mutex<()>,
    template_store: Arc<dyn TemplateStore>,
    coupons: Arc<dyn CouponStore>,
    ack: Ack,
    stats: Arc<WriterStats>,
    /// Batches `(task, first_row)` whose refused stock was given back, so it is given back
    /// once, also when the first return found the template not loaded. Only batches with a
    /// refused coupon (rare) get an entry.
    returned: Mutex<HashSet<(DistributionId, u64)>>,
}

impl MemoryHotState {
    /// Starts the group-commit writer (on the current tokio runtime); it stops once this
    /// state is dropped and everything queued is committed.
    pub fn new(
        template_store: Arc<dyn TemplateStore>,
        coupons: Arc<dyn CouponStore>,
        max_batch: usize,
    ) -> Self {
        let stats = Arc::new(WriterStats::default());
        let writer = writer::spawn(coupons.clone(), max_batch.max(1), stats.clone());
        Self::with_ack(template_store, coupons, Ack::Commit(writer), stats)
    }

    /// Acknowledges claims once they are in `journal` (opened, so already replayed);
    /// SQLite is applied behind it.
    pub fn with_journal(
        template_store: Arc<dyn TemplateStore>,
        coupons: Arc<dyn CouponStore>,
        journal: Arc<ClaimJournal>,
    ) -> Self {
        let stats = Arc::new(WriterStats::default());
        Self::with_ack(template_store, coupons, Ack::Journal(journal), stats)
    }

    fn with_ack(
        template_store: Arc<dyn TemplateStore>,
        coupons: Arc<dyn CouponStore>,
        ack: Ack,
        stats: Arc<WriterStats>,
    ) -> Self {
        Self {
            templates: RwLock::new(HashMap::default()),
            loading: tokio::sync::Mutex::new(()),
            template_store,
            coupons,
            ack,
            stats,
            returned: Mutex::new(HashSet::new()),
        }
    }

    /// The group-commit writer's counters (all zero when claims go through the journal).
    pub fn writer_stats(&self) -> &WriterStats {
        &self.stats
    }

    /// The claim journal's counters, when claims go through it.
    pub fn journal_stats(&self) -> Option<&Arc<JournalStats>> {
        self.journal().map(ClaimJournal::stats)
    }

    fn journal(&self) -> Option<&ClaimJournal> {
        match &self.ack {
            Ack::Journal(j) => Some(j),
            Ack::Commit(_) => None,
        }
    }

    /// A coupon of `user`: acknowledged and still pending in the journal, or stored.
    async fn find_coupon(
        &self,
        user: UserId,
        id: CouponId,
    ) -> Result<Option<UserCoupon>, StoreError> {
        if let Some(j) = self.journal()
            && let Some(c) = j.pending(user).into_iter().find(|c| c.id == id)
        {
            return Ok(Some(c));
        }
        self.coupons.get_coupon(user, id).await
    }

    fn loaded(&self, id: TemplateId) -> Option<Arc<Hot>> {
        self.templates
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    async fn hot(&self, id: TemplateId) -> Result<Option<Arc<Hot>>, StoreError> {
        if let Some(h) = self.loaded(id) {
            return Ok(Some(h));
        }
        let _guard = self.loading.lock().await;
        if let Some(h) = self.loaded(id) {
            return Ok(Some(h));
        }
        // Fresh from the system of record: nothing claims this template until it is loaded,
        // so its stored stock is exact now (once the journal's backlog is in it).
        if let Some(j) = self.journal() {
            j.wait_applied().await;
        }
        let Some(t) = self.template_store.get_template(id).await? else {
            return Ok(None);
        };
        let state = self.coupons.claim_index(id).await?;
        let hot = Arc::new(Hot::new(&t, state.user_seqs, state.keyed));
        self.templates
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, hot.clone());
        Ok(Some(hot))
    }

    /// The coupon an earlier claim with the same key made.
    async fn replay(&self, user: UserId, id: CouponId) -> Result<ClaimOutcome, StoreError> {
        match self.find_coupon(user, id).await? {
            Some(c) => Ok(ClaimOutcome::Replayed(c)),
            // Only a committed claim's key is kept, and coupons are never deleted.
            None => Err(StoreError::Corrupt(format!(
                "coupon {id} of a replayed claim is not in the store"
            ))),
        }
    }

    async fn check_key(hot: &Hot, user: UserId, key: &str) -> KeyCheck {
        loop {
            let notify = {
                let mut keys = lock(&hot.keys()[shard(user)]);
                match keys.get(&(user, key.to_owned())) {
                    Some(KeySlot::Done(id)) => return KeyCheck::Replay(*id),
                    Some(KeySlot::InFlight(n)) => n.clone(),
                    Some(KeySlot::Unknown(_)) => {
                        let prev = keys.insert(
                            (user, key.to_owned()),
                            KeySlot::InFlight(Arc::new(Notify::new())),
                        );
                        if let Some(KeySlot::Unknown(c)) = prev {
                            return KeyCheck::Unknown(*c);
                        }
                        continue;
                    }
                    None => {
                        keys.insert(
                            (user, key.to_owned()),
                            KeySlot::InFlight(Arc::new(Notify::new())),
                        );
                        return KeyCheck::Owned;
                    }
                }
            };
            // Register before re-checking so a wake-up between the check and the await is
            // not lost.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let still_in_flight = matches!(
                lock(&hot.keys()[shard(user)]).get(&(user, key.to_owned())),
                Some(KeySlot::InFlight(_))
            );
            if still_in_flight {
                notified.await;
            }
        }
    }
}

#[async_trait]
impl HotState for MemoryHotState {
    async fn claim(
        &self,
        t: &Template,
        mut coupon: UserCoupon,
        key: Option<&str>,
        now: Timestamp,
    ) -> Result<ClaimOutcome, StoreError> {
        let Some(hot) = self.hot(t.id).await? else {
            return Ok(ClaimOutcome::Refused(ClaimRefusal::Ended));
        };
        let user = coupon.user_id;
        if let Some(k) = key {
            match Self::check_key(&hot, user, k).await {
                KeyCheck::Owned => {}
                KeyCheck::Replay(id) => return self.replay(user, id).await,
                KeyCheck::Unknown(earlier) => match self.find_coupon(user, earlier.id).await {
                    Ok(Some(_)) => {
                        hot.finish_key(user, k, &earlier);
                        return Ok(ClaimOutcome::Replayed(earlier));
                    }
                    Ok(None) if self.journal().is_some_and(ClaimJournal::poisoned) => {
                        // A failed journal write may still be on disk: only the replay after a
                        // restart can tell.
                        hot.unknown_key(user, k, &earlier);
                        return Err(StoreError::OutcomeUnknown {
                            dependency: Dependency::Database,
                            source: "the claim journal failed; restart the node".into(),
                        });
                    }
                    Ok(None) => {
                        // The earlier attempt never landed: its reservation goes back and
                        // this claim is decided afresh.
                        hot.give_back(user, earlier.seq);
                    }
                    Err(e) => {
                        hot.unknown_key(user, k, &earlier);
                        return Err(StoreError::OutcomeUnknown {
                            dependency: Dependency::Database,
                            source: Box::new(e),
                        });
                    }
                },
            }
        }
        let refuse = |r: ClaimRefusal| {
            if let Some(k) = key {
                hot.release_key(user, k);
            }
            Ok(ClaimOutcome::Refused(r))
        };
        if let Err(r) = check_window(
            status_of(hot.status.load(Ordering::Acquire)),
            t.claim_start,
            t.claim_end,
            now,
        ) {
            return refuse(r);
        }
        let Some(seq) = hot.take_seq(user, t.per_user_limit) else {
            return refuse(ClaimRefusal::LimitReached);
        };
        if hot.stock.fetch_sub(1, Ordering::AcqRel) <= 0 {
            hot.give_back(user, seq);
            return refuse(ClaimRefusal::SoldOut);
        }
        coupon.seq = seq;
        let record = ClaimRecord {
            coupon: coupon.clone(),
            claim_key: key.map(str::to_owned),
            traceparent: stampede_core::events::current_traceparent(),
        };
        let writer = match &self.ack {
            Ack::Commit(writer) => writer,
            Ack::Journal(journal) => {
                return match journal.append(record).await {
                    Ok(()) => {
                        if let Some(k) = key {
                            hot.finish_key(user, k, &coupon);
                        }
                        Ok(ClaimOutcome::Claimed(coupon))
                    }
                    Err(AppendError::NotWritten(e)) => {
                        hot.give_back(user, seq);
                        if let Some(k) = key {
                            hot.release_key(user, k);
                        }
                        Err(StoreError::Unavailable {
                            dependency: Dependency::Database,
                            source: e.into(),
                        })
                    }
                    Err(AppendError::Unknown(e)) => {
                        tracing::warn!(coupon = %coupon.id, error = %e, "a claim's journal write failed: its outcome is unknown");
                        if let Some(k) = key {
                            hot.unknown_key(user, k, &coupon);
                        }
                        Err(StoreError::OutcomeUnknown {
                            dependency: Dependency::Database,
                            source: e.into(),
                        })
                    }
                };
            }
        };
        let (done, committed) = oneshot::channel();
        let sent = writer.send(Pending { record, done }).await.is_ok();
        let result = if sent {
            committed
                .await
                .unwrap_or_else(|_| Err("the writer stopped".into()))
        } else {
            Err("the writer stopped".into())
        };
        match result {
            Ok(()) => {
                if let Some(k) = key {
                    hot.finish_key(user, k, &coupon);
                }
                Ok(ClaimOutcome::Claimed(coupon))
            }
            // A failed commit (an fsync error, say) may still have reached the disk: read
            // the coupon back before answering.
            Err(e) => match self.coupons.get_coupon(user, coupon.id).await {
                Ok(Some(_)) => {
                    tracing::warn!(coupon = %coupon.id, error = %e, "a claim's commit reported failure but it is stored");
                    if let Some(k) = key {
                        hot.finish_key(user, k, &coupon);
                    }
                    Ok(ClaimOutcome::Claimed(coupon))
                }
                Ok(None) => {
                    // Nothing was written: give the stock and the user's slot back.
                    hot.give_back(user, seq);
                    if let Some(k) = key {
                        hot.release_key(user, k);
                    }
                    Err(StoreError::Backend(e.into()))
                }
                Err(read) => {
                    tracing::warn!(coupon = %coupon.id, error = %e, read = %read, "a claim's outcome is unknown");
                    if let Some(k) = key {
                        hot.unknown_key(user, k, &coupon);
                    }
                    Err(StoreError::OutcomeUnknown {
                        dependency: Dependency::Database,
                        source: e.into(),
                    })
                }
            },
        }
    }

    async fn find_claim(
        &self,
        t: &Template,
        user: UserId,
        key: &str,
    ) -> Result<Option<UserCoupon>, StoreError> {
        // Loaded from the system of record if need be: its keyed coupons are the truth.
        let Some(hot) = self.hot(t.id).await? else {
            return Ok(None);
        };
        // A claimed key reads its coupon; an unknown outcome is the parked coupon, if stored.
        let (id, unknown) = match lock(&hot.keys()[shard(user)]).get(&(user, key.to_owned())) {
            Some(KeySlot::Done(id)) => (*id, None),
            Some(KeySlot::Unknown(c)) => (c.id, Some((**c).clone())),
            _ => return Ok(None),
        };
        let stored = self.find_coupon(user, id).await?;
        Ok(match unknown {
            None => stored,
            Some(parked) => stored.map(|_| parked),
        })
    }

    async fn stock(&self, t: &Template) -> Result<Option<i64>, StoreError> {
        Ok(self
            .loaded(t.id)
            .map(|h| h.stock.load(Ordering::Acquire).max(0)))
    }

    async fn standing(
        &self,
        ts: &[&Template],
        user: Option<UserId>,
    ) -> Result<Vec<Standing>, StoreError> {
        let of = |h: &Hot| Standing {
            stock: Some(h.stock.load(Ordering::Acquire).max(0)),
            held: user.map(|u| h.held(u)),
        };
        // One read lock for the whole listing; templates not loaded are filled in after.
        let mut out: Vec<Option<Standing>> = {
            let loaded = self.templates.read().unwrap_or_else(|p| p.into_inner());
            ts.iter()
                .map(|t| loaded.get(&t.id).map(|h| of(h)))
                .collect()
        };
        if user.is_some() {
            for (t, st) in ts.iter().zip(out.iter_mut()) {
                if st.is_none() {
                    *st = self.hot(t.id).await?.map(|h| of(&h));
                }
            }
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }

    async fn template_changed(&self, t: &Template) -> Result<(), StoreError> {
        let _guard = self.loading.lock().await;
        if let Some(h) = self.loaded(t.id) {
            // Totals only grow; a stale notification must not take stock back.
            let before = h.stock_total.fetch_max(t.stock_total, Ordering::AcqRel);
            if t.stock_total > before {
                h.stock.fetch_add(t.stock_total - before, Ordering::AcqRel);
            }
            // A template never becomes active again: a late notification carrying an older
            // active copy must not reopen one that was terminated or ended meanwhile.
            if t.status != TemplateStatus::Active {
                let _ = h.status.compare_exchange(
                    status_code(TemplateStatus::Active),
                    status_code(t.status),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
        }
        Ok(())
    }

    async fn pending_coupons(&self, user: UserId) -> Result<Vec<UserCoupon>, StoreError> {
        // With the group commit every acknowledged claim is committed: nothing is pending.
        Ok(self.journal().map(|j| j.pending(user)).unwrap_or_default())
    }

    async fn reserve_batch(
        &self,
        t: &Template,
        r: &Reservation<'_>,
        now: Timestamp,
    ) -> Result<Option<Vec<RowReservation>>, StoreError> {
        // Nothing outlives the process here: a batch whose commit did not land was never
        // reserved as far as the rebuilt state knows, so there is nothing to replay.
        if r.replay_only {
            return Ok(None);
        }
        let Some(hot) = self.hot(t.id).await? else {
            return Ok(Some(vec![
                RowReservation::Refused(ClaimRefusal::Ended);
                r.users.len()
            ]));
        };
        let refusal = match status_of(hot.status.load(Ordering::Acquire)) {
            TemplateStatus::Terminated => Some(ClaimRefusal::Terminated),
            TemplateStatus::Ended => Some(ClaimRefusal::Ended),
            TemplateStatus::Active if now >= t.claim_end => Some(ClaimRefusal::Ended),
            TemplateStatus::Active => None,
        };
        if let Some(refusal) = refusal {
            return Ok(Some(vec![RowReservation::Refused(refusal); r.users.len()]));
        }
        let answer = r
            .users
            .iter()
            .map(|&user| {
                let Some(seq) = hot.take_seq(user, t.per_user_limit) else {
                    return RowReservation::Refused(ClaimRefusal::LimitReached);
                };
                if hot.stock.fetch_sub(1, Ordering::AcqRel) <= 0 {
                    hot.give_back(user, seq);
                    return RowReservation::Refused(ClaimRefusal::SoldOut);
                }
                RowReservation::Reserved { seq }
            })
            .collect();
        Ok(Some(answer))
    }

    async fn abandon_batch(
        &self,
        t: &Template,
        r: &Reservation<'_>,
        answer: &[RowReservation],
    ) -> Result<(), StoreError> {
        // The commit wrote nothing, and SQLite is what a restart rebuilds from: give every
        // reservation back now so the retry (or a claim) can have it.
        let Some(hot) = self.loaded(t.id) else {
            return Ok(());
        };
        for (user, a) in r.users.iter().zip(answer) {
            if let RowReservation::Reserved { seq } = *a {
                hot.give_back(*user, seq);
            }
        }
        Ok(())
    }

    async fn return_stock(
        &self,
        t: &Template,
        task: DistributionId,
        first_row: u64,
        n: u64,
    ) -> Result<(), StoreError> {
        // The record's stock never took these. Not loaded: the load reads that stock, so
        // there is nothing to give back.
        if n == 0 {
            return Ok(());
        }
        if lock(&self.returned).insert((task, first_row))
            && let Some(hot) = self.loaded(t.id)
        {
            hot.stock
                .fetch_add(i64::try_from(n).unwrap_or(i64::MAX), Ordering::AcqRel);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Seqs;

    #[test]
    fn takes_the_lowest_free_seq_up_to_the_limit() {
        let mut s = Seqs::default();
        assert_eq!((s.take(2), s.take(2), s.take(2)), (Some(1), Some(2), None));
        s.remove(1);
        assert_eq!(s.take(2), Some(1));
        let mut gap = Seqs::default();
        assert!(gap.insert(1) && gap.insert(3));
        assert_eq!((gap.take(3), gap.take(3)), (Some(2), None));
    }

    #[test]
    fn covers_every_seq_up_to_128() {
        let mut s = Seqs::default();
        for want in 1..=128 {
            assert_eq!(s.take(200), Some(want));
        }
        assert_eq!((s.len(), s.take(200)), (128, None));
        s.remove(65);
        assert!(!s.contains(65) && s.contains(64) && s.contains(66));
        assert_eq!(s.take(128), Some(65));
        assert!(!Seqs::default().insert(0) && !Seqs::default().insert(129));
    }
}
