//! Ports of the claim engine: the coupon store (system of record for user coupons and the
//! outbox), the claim-log store (distributed persisters' exactly-once bookkeeping) and the hot
//! state (stock, per-user limits, claim idempotency keys on the request path).

use crate::ports::StoreError;
use async_trait::async_trait;
use jiff::Timestamp;
use stampede_domain::coupon::{ClaimRefusal, CouponStatus, UserCoupon};
use stampede_domain::ids::{CouponId, DistributionId, TemplateId, UserId};
use stampede_domain::template::Template;
use std::collections::BTreeMap;

/// A coupon to store, with the `Idempotency-Key` of the claim that made it (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRecord {
    pub coupon: UserCoupon,
    pub claim_key: Option<String>,
    /// W3C `traceparent` of the claim's request (or distribution step), for its event.
    pub traceparent: Option<String>,
}

/// A user's claim history of one template, to rebuild hot state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimState {
    /// Every coupon of the template (any origin, any status) as `(user, seq)`, one row per
    /// coupon, in no order. Seqs, not counts: after a failed claim a user may hold `{1, 3}`,
    /// and the next claim must take 2.
    pub user_seqs: Vec<(UserId, u32)>,
    /// Coupons made by claims that carried an idempotency key.
    pub keyed: Vec<(String, UserCoupon)>,
}

impl ClaimState {
    /// How many coupons each user holds, by user id.
    pub fn user_counts(&self) -> Vec<(UserId, u32)> {
        let mut counts: BTreeMap<UserId, u32> = BTreeMap::new();
        for (user, _) in &self.user_seqs {
            *counts.entry(*user).or_default() += 1;
        }
        counts.into_iter().collect()
    }
}

/// The lean form of [`ClaimState`] the embedded hot state rebuilds from: the same coupons,
/// each keyed claim as its key and coupon id only (a replay reads the coupon itself, so a
/// template with millions of keyed holders does not keep millions of coupons in memory).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimIndex {
    /// As [`ClaimState::user_seqs`].
    pub user_seqs: Vec<(UserId, u32)>,
    /// `(user, key, coupon)` of every coupon made by a claim that carried a key.
    pub keyed: Vec<(UserId, String, CouponId)>,
}

impl From<ClaimState> for ClaimIndex {
    fn from(s: ClaimState) -> Self {
        Self {
            user_seqs: s.user_seqs,
            keyed: s
                .keyed
                .into_iter()
                .map(|(key, c)| (c.user_id, key, c.id))
                .collect(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CouponQuery {
    pub user_id: UserId,
    /// `unused` means unused and still valid at `now`; `expired` includes unused coupons
    /// whose `valid_until` passed.
    pub status: Option<CouponStatus>,
    pub limit: u32,
    /// Resume after this `(valid_until ms, id)`, exclusive.
    pub after: Option<(i64, i64)>,
    pub now: Timestamp,
}

/// A domain event waiting in the outbox (written in the transaction of the change it records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// Unique, stable id: brokers deduplicate on it.
    pub id: String,
    /// `coupon.claimed`, …
    pub kind: String,
    pub aggregate_id: i64,
    pub payload: String,
    pub created_at_ms: i64,
    /// W3C `traceparent` of the request or job step that wrote it (`None` before traces were
    /// recorded), so a consumer can continue the trace.
    pub traceparent: Option<String>,
}

#[async_trait]
pub trait CouponStore: Send + Sync + 'static {
    /// Embedded group commit: ONE transaction that inserts every coupon (with its claim key
    /// and a `coupon.claimed` outbox event) and takes each template's `stock` down by the
    /// number of its coupons in the batch. All or nothing.
    async fn commit_claims(&self, claims: &[ClaimRecord]) -> Result<(), StoreError>;

    async fn claim_state(&self, template: TemplateId) -> Result<ClaimState, StoreError>;

    /// [`claim_state`](Self::claim_state) without the keyed coupons themselves; adapters
    /// that can read it cheaper (one narrow pass over the rows) override this.
    async fn claim_index(&self, template: TemplateId) -> Result<ClaimIndex, StoreError> {
        Ok(self.claim_state(template).await?.into())
    }

    async fn get_coupon(
        &self,
        user: UserId,
        id: CouponId,
    ) -> Result<Option<UserCoupon>, StoreError>;

    /// A user's coupons ordered by `(valid_until, id)`, at most `limit`.
    async fn list_coupons(&self, q: &CouponQuery) -> Result<Vec<UserCoupon>, StoreError>;

    /// Outbox events with `kind`, oldest first (the relay to a broker comes later; until then
    /// they are queryable here).
    async fn outbox_events(&self, kind: &str, limit: u32) -> Result<Vec<OutboxEvent>, StoreError>;

    /// The outbox's unpublished events, cheaply (for `/metrics`): per outbox table, the events
    /// from the first unpublished one (by insertion order) to the last, and that first one's
    /// write time. Exact while events are published in order, as a relay does.
    async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError>;

    /// [`outbox_backlog`](Self::outbox_backlog) per outbox partition, indexed as
    /// `OutboxStore` numbers them. A store with one outbox table has one partition.
    async fn outbox_partition_backlogs(&self) -> Result<Vec<OutboxBacklog>, StoreError> {
        Ok(vec![self.outbox_backlog().await?])
    }
}

/// What [`CouponStore::outbox_backlog`] reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxBacklog {
    /// Events not yet published.
    pub events: u64,
    /// When the oldest of them was written (epoch ms); `None` when there are none.
    pub oldest_created_ms: Option<i64>,
}

impl OutboxBacklog {
    /// One table's head (first unpublished seq and its time) and last seq, added to `self`.
    pub fn add_table(&mut self, head: Option<(i64, i64)>, last_seq: Option<i64>) {
        if let (Some((first, created)), Some(last)) = (head, last_seq) {
            self.add(OutboxBacklog {
                events: u64::try_from(last - first + 1).unwrap_or(0),
                oldest_created_ms: Some(created),
            });
        }
    }

    /// Adds another partition's backlog to `self`.
    pub fn add(&mut self, other: OutboxBacklog) {
        self.events += other.events;
        self.oldest_created_ms = match (self.oldest_created_ms, other.oldest_created_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Where the embedded claim journal applies the claims it acknowledged: the embedded system of
/// record (SQLite). Only the embedded store implements it; distributed mode's claim log is
/// Redis, applied through [`ClaimLogStore`].
#[async_trait]
pub trait ClaimJournalStore: Send + Sync + 'static {
    /// Position (LSN) of the last journal record applied; 0 when none ever was.
    async fn journal_applied(&self) -> Result<u64, StoreError>;

    /// Stores `claims` as [`CouponStore::commit_claims`] does and records `through` as
    /// applied, in one transaction. `claims` are the journal records with the consecutive
    /// LSNs `through - len + 1 ..= through`; those at or below the recorded position were
    /// applied before (a replay after a crash, possibly cut into other batches) and are
    /// skipped, so nothing is stored twice.
    async fn apply_journaled(&self, claims: &[ClaimRecord], through: u64)
    -> Result<(), StoreError>;
}

/// Exactly-once bookkeeping of the distributed claim log (one log per template).
#[async_trait]
pub trait ClaimLogStore: Send + Sync + 'static {
    /// Inserts the coupons (and their outbox events) on their users' shards; a coupon already
    /// present (same user, template, seq) is skipped, so replays are harmless.
    async fn insert_claimed(&self, claims: &[ClaimRecord]) -> Result<(), StoreError>;

    /// The last log position whose stock change is applied to the template ("0-0" if none).
    async fn applied_position(&self, template: TemplateId) -> Result<String, StoreError>;

    /// Takes `count` off the template's stock and moves its applied position from `from` to
    /// `to`, in one transaction, only if the position is still `from`. `false` when another
    /// persister got there first (nothing changed).
    async fn apply_claims(
        &self,
        template: TemplateId,
        from: &str,
        to: &str,
        count: i64,
    ) -> Result<bool, StoreError>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    Claimed(UserCoupon),
    /// The claim's idempotency key was used before: the coupon it made.
    Replayed(UserCoupon),
    Refused(ClaimRefusal),
}

/// One distribution batch to reserve coupons for.
#[derive(Debug, Clone, Copy)]
pub struct Reservation<'a> {
    pub task: DistributionId,
    /// The batch's first data row: with `task`, the batch's identity.
    pub first_row: u64,
    /// The valid user ids of the batch in file order (repeats allowed).
    pub users: &'a [UserId],
    /// Only give back an answer stored by an earlier attempt; never reserve anew (a canceled
    /// task finishing the batch it was in the middle of).
    pub replay_only: bool,
}

/// The hot state's answer for one user of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowReservation {
    /// One coupon reserved: the user's `seq`-th of the template.
    Reserved {
        seq: u32,
    },
    Refused(ClaimRefusal),
}

/// One template's standing on the claim path (see [`HotState::standing`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standing {
    pub stock: Option<i64>,
    /// `None` when no user was asked about.
    pub held: Option<u32>,
}

#[async_trait]
pub trait HotState: Send + Sync + 'static {
    /// Claims one coupon of `t` for `coupon.user_id`, deciding status, window, stock, the
    /// per-user limit and the idempotency key atomically, and returns only once the claim is
    /// durable (embedded: committed; distributed: in the claim log). `coupon` is the coupon to
    /// store on success, except `seq`, which the hot state assigns. `Unavailable` means
    /// nothing was done (not sent); `OutcomeUnknown` that the claim was sent and its answer
    /// lost, so it may have happened.
    async fn claim(
        &self,
        t: &Template,
        coupon: UserCoupon,
        key: Option<&str>,
        now: Timestamp,
    ) -> Result<ClaimOutcome, StoreError>;

    /// The coupon a claim of `user` with idempotency `key` made, if that claim happened: how a
    /// claim whose answer was lost (`StoreError::OutcomeUnknown`) learns its outcome. Must
    /// see every claim whose `claim` call already ran (or will never run).
    async fn find_claim(
        &self,
        t: &Template,
        user: UserId,
        key: &str,
    ) -> Result<Option<UserCoupon>, StoreError>;

    /// Remaining stock as the hot path sees it; `None` when the template is not loaded.
    async fn stock(&self, t: &Template) -> Result<Option<i64>, StoreError>;

    /// For each of `ts`, in order: its remaining stock and how many of its coupons `user`
    /// holds (what the per-user limit counts), as the claim path sees them. With a `user`, a
    /// template not yet in the hot state is loaded first so the count is exact; without one,
    /// such a template answers `stock: None` (the stored stock is then exact: nothing has
    /// claimed it through this hot state).
    async fn standing(
        &self,
        ts: &[&Template],
        user: Option<UserId>,
    ) -> Result<Vec<Standing>, StoreError>;

    /// The back-office changed `t` (restocked, terminated, ended); `t` is the template after
    /// the change. Stock is reconciled by `stock_total` (the hot stock moves by the difference
    /// to the total it last saw), so a repeated or late notification changes nothing twice.
    async fn template_changed(&self, t: &Template) -> Result<(), StoreError>;

    /// Coupons of `user` acknowledged but perhaps not yet in the system of record.
    async fn pending_coupons(&self, user: UserId) -> Result<Vec<UserCoupon>, StoreError>;

    /// Reserves one coupon of `t` for each user of a distribution batch, atomically with
    /// respect to claims: status (`terminated`; `ended` or `claim_end` passed — `claim_start`
    /// does not apply to distributions), the per-user limit, then stock, in file order; once
    /// stock runs out the rest are `SoldOut`. A hot state that outlives the process (Redis)
    /// stores the answer under `(task, first_row)` and gives the same answer again, so a
    /// resumed batch reserves nothing twice. `None` only with `replay_only` and no stored
    /// answer.
    async fn reserve_batch(
        &self,
        t: &Template,
        r: &Reservation<'_>,
        now: Timestamp,
    ) -> Result<Option<Vec<RowReservation>>, StoreError>;

    /// The batch's commit failed. A hot state rebuilt from the system of record (in-process)
    /// gives the reservation back now; one that stored it (Redis) keeps it for the retry.
    async fn abandon_batch(
        &self,
        t: &Template,
        r: &Reservation<'_>,
        answer: &[RowReservation],
    ) -> Result<(), StoreError>;

    /// `n` coupons reserved for batch `(task, first_row)` were refused by the system of
    /// record: their stock goes back (once per batch, however often this is called).
    async fn return_stock(
        &self,
        t: &Template,
        task: DistributionId,
        first_row: u64,
        n: u64,
    ) -> Result<(), StoreError>;
}
