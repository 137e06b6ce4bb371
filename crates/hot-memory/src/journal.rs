//! The claim journal: how the embedded mode acknowledges a claim without waiting for SQLite.
//!
//! A claim that passed every check in memory is appended to an append-only file and answered
//! once the write is synced (`fdatasync`): group commit on a dedicated thread, one write and
//! one sync for everything queued. SQLite is updated behind it by an applier task, in large
//! transactions that also move the applied position (`ClaimJournalStore`), so a restart
//! replays exactly the records after that position before anything is served. Until a record
//! is applied its coupon is *pending*: "my coupons", quotes and locks see it through
//! `HotState::pending_coupons`, as they see distributed mode's claim log.
//!
//! Why: a claim's SQLite write dirties a page of each per-user index at a random place, so a
//! claim costs kilobytes of WAL and the single SQLite writer capped acknowledged claims at
//! about 10k/s. A journal record is ~100 bytes written sequentially; the applier's large
//! batches share index pages, so SQLite does less work per claim the further it falls behind.
//! The backlog is bounded (`max_backlog` records; claims wait beyond it).
//!
//! File format: segments `<first lsn, 20 digits>.log`, frames of `len: u32 LE | crc32: u32 LE |
//! body`, body = `lsn: u64` and the coupon's stored form. A torn frame can only be the tail of
//! a segment (batches are written in order and nothing is written after a failed one): replay
//! stops reading that segment there. Each start writes a new segment; segments whose records
//! are all applied are deleted.
//!
//! A failed write or sync poisons the journal: the claims of that batch have an unknown
//! outcome, every later claim is refused as unavailable, and the node must be restarted (the
//! replay then decides what was written). Retrying an `fsync` after an error is not safe:
//! the kernel may have dropped the dirty pages and report success the second time.

use crate::state::{lock, shard};
use stampede_core::claim_ports::{ClaimJournalStore, ClaimRecord};
use stampede_core::ports::StoreError;
use stampede_core::records::CouponRecord;
use stampede_core::telemetry::{self, queue};
use stampede_domain::coupon::UserCoupon;
use stampede_domain::ids::{CouponId, UserId};
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

const SHARDS: usize = 64;
/// A frame longer than this is not one the writer made: treat it as torn.
const MAX_FRAME: usize = 64 * 1024;

/// How the journal is sized and where it lives.
#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// Directory of the segment files (created if missing).
    pub dir: PathBuf,
    /// `true`: a claim is answered after `fdatasync` (survives power loss). `false`: after
    /// the write reached the OS (survives the process being killed).
    pub fsync: bool,
    /// Most claims one write + sync carries.
    pub max_batch: usize,
    /// Most claims one SQLite transaction of the applier carries.
    pub apply_batch: usize,
    /// Acknowledged claims not yet in SQLite; a claim waits for room beyond it.
    pub max_backlog: usize,
    /// A segment is closed and a new one started once it is this long.
    pub segment_bytes: u64,
}

impl JournalOptions {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            fsync: true,
            max_batch: 4_096,
            apply_batch: 16_384,
            max_backlog: 500_000,
            segment_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Counters and positions of the journal, for metrics and tests.
#[derive(Debug, Default)]
pub struct JournalStats {
    /// Write + sync rounds, and the claims they carried.
    pub writes: AtomicU64,
    pub appended: AtomicU64,
    /// Applier transactions, the claims they stored, and attempts that failed.
    pub apply_batches: AtomicU64,
    pub applied: AtomicU64,
    pub apply_failures: AtomicU64,
    /// Records set aside because SQLite refused them as duplicates (see `rejected.log`).
    pub rejected: AtomicU64,
    /// Highest LSN acknowledged / applied.
    pub acked_lsn: AtomicU64,
    pub applied_lsn: AtomicU64,
    /// Records replayed into SQLite when the journal was opened.
    pub replayed: AtomicU64,
}

impl JournalStats {
    /// Acknowledged claims not yet in SQLite.
    pub fn backlog(&self) -> u64 {
        self.acked_lsn
            .load(Ordering::Acquire)
            .saturating_sub(self.applied_lsn.load(Ordering::Acquire))
    }
}

/// Why an append did not succeed.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// Nothing was written (journal stopped or poisoned): the claim did not happen.
    NotWritten(String),
    /// The write or sync failed: the claim may be on disk. Only a restart's replay knows.
    Unknown(String),
}

struct Entry {
    record: ClaimRecord,
    permit: OwnedSemaphorePermit,
    done: oneshot::Sender<Result<(), AppendError>>,
}

struct Acked {
    lsn: u64,
    record: ClaimRecord,
    /// Held until the record is applied: the backlog's bound.
    permit: OwnedSemaphorePermit,
}

type PendingMap = HashMap<UserId, Vec<UserCoupon>, foldhash::fast::RandomState>;

struct Shared {
    /// Acknowledged coupons not yet applied, per user.
    pending: Vec<Mutex<PendingMap>>,
    poisoned: AtomicBool,
    /// Segment files in LSN order; the last one is being written.
    segments: Mutex<VecDeque<(u64, PathBuf)>>,
    applied: watch::Sender<u64>,
    stats: Arc<JournalStats>,
    dir: PathBuf,
}

impl Shared {
    fn add_pending(&self, c: &UserCoupon) {
        lock(&self.pending[shard(c.user_id)])
            .entry(c.user_id)
            // Most users have one pending coupon: the default first allocation (room for
            // four) would quadruple the backlog's memory.
            .or_insert_with(|| Vec::with_capacity(1))
            .push(c.clone());
    }

    fn remove_pending(&self, user: UserId, id: CouponId) {
        let mut map = lock(&self.pending[shard(user)]);
        if let Some(list) = map.get_mut(&user) {
            list.retain(|c| c.id != id);
            if list.is_empty() {
                map.remove(&user);
            }
        }
    }

    /// Deletes the segments whose every record is applied (never the one being written).
    fn trim(&self, applied: u64) {
        let mut segs = lock(&self.segments);
        while segs.len() >= 2 && segs[1].0 <= applied.saturating_add(1) {
            if let Some((_, path)) = segs.pop_front()
                && let Err(e) = std::fs::remove_file(&path)
            {
                tracing::warn!(path = %path.display(), error = %e, "could not delete an applied journal segment");
            }
        }
    }
}

/// The embedded claim journal: durable acknowledgement, SQLite applied behind.
pub struct ClaimJournal {
    tx: mpsc::Sender<Entry>,
    backlog: Arc<Semaphore>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ClaimJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimJournal")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

impl ClaimJournal {
    /// Replays every record after the store's applied position into the store, deletes the
    /// old segments, then starts a new segment, the writer thread and the applier task (on
    /// the current tokio runtime). Nothing may claim before this returns.
    pub async fn open(
        store: Arc<dyn ClaimJournalStore>,
        opts: JournalOptions,
    ) -> Result<ClaimJournal, StoreError> {
        let io = |e: std::io::Error| StoreError::Backend(Box::new(e));
        std::fs::create_dir_all(&opts.dir).map_err(io)?;
        let stats = Arc::new(JournalStats::default());
        let applied = store.journal_applied().await?;
        let (last, replayed) = replay(&*store, &opts, applied).await?;
        stats.replayed.store(replayed, Ordering::Relaxed);
        stats.acked_lsn.store(last, Ordering::Release);
        stats.applied_lsn.store(last, Ordering::Release);

        let next = last + 1;
        let (file, path) = new_segment(&opts.dir, next).map_err(io)?;
        let shared = Arc::new(Shared {
            pending: (0..SHARDS)
                .map(|_| Mutex::new(PendingMap::default()))
                .collect(),
            poisoned: AtomicBool::new(false),
            segments: Mutex::new(VecDeque::from([(next, path)])),
            applied: watch::Sender::new(last),
            stats,
            dir: opts.dir.clone(),
        });
        let (tx, rx) = mpsc::channel::<Entry>(opts.max_batch.max(1).saturating_mul(4));
        let (acked_tx, acked_rx) = mpsc::unbounded_channel::<Acked>();
        let writer = Writer {
            file,
            len: 0,
            next,
            opts: opts.clone(),
            shared: shared.clone(),
            acked: acked_tx,
        };
        std::thread::Builder::new()
            .name("claim-journal".into())
            .spawn(move || writer.run(rx))
            .map_err(io)?;
        tokio::spawn(apply_loop(
            store,
            acked_rx,
            shared.clone(),
            opts.apply_batch.max(1),
        ));
        Ok(ClaimJournal {
            tx,
            backlog: Arc::new(Semaphore::new(opts.max_backlog.max(1))),
            shared,
        })
    }

    pub fn stats(&self) -> &Arc<JournalStats> {
        &self.shared.stats
    }

    /// Appends `record` and returns once it is durable (or why not).
    pub(crate) async fn append(&self, record: ClaimRecord) -> Result<(), AppendError> {
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(AppendError::NotWritten(
                "the claim journal failed; restart the node".into(),
            ));
        }
        let permit = self
            .backlog
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AppendError::NotWritten("the claim journal stopped".into()))?;
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Entry {
                record,
                permit,
                done,
            })
            .await
            .map_err(|_| AppendError::NotWritten("the claim journal stopped".into()))?;
        answer
            .await
            .unwrap_or_else(|_| Err(AppendError::Unknown("the journal writer stopped".into())))
    }

    /// Whether the journal stopped accepting claims after a failed write.
    pub(crate) fn poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::Acquire)
    }

    /// Acknowledged coupons of `user` not yet in SQLite.
    pub(crate) fn pending(&self, user: UserId) -> Vec<UserCoupon> {
        lock(&self.shared.pending[shard(user)])
            .get(&user)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until everything acknowledged so far is in SQLite.
    pub async fn wait_applied(&self) {
        let target = self.shared.stats.acked_lsn.load(Ordering::Acquire);
        let mut rx = self.shared.applied.subscribe();
        // Err only if the sender is gone, which cannot happen while `self.shared` lives.
        let _ = rx.wait_for(|&applied| applied >= target).await;
    }
}

/// The writer thread's state: the open segment and the next LSN.
struct Writer {
    file: File,
    len: u64,
    next: u64,
    opts: JournalOptions,
    shared: Arc<Shared>,
    acked: mpsc::UnboundedSender<Acked>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Entry>) {
        let max = self.opts.max_batch.max(1);
        let mut batch: Vec<Entry> = Vec::with_capacity(max);
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        // Ends when every sender is gone and the queue is empty.
        while rx.blocking_recv_many(&mut batch, max) > 0 {
            if self.shared.poisoned.load(Ordering::Acquire) {
                for e in batch.drain(..) {
                    let _ = e.done.send(Err(AppendError::NotWritten(
                        "the claim journal failed; restart the node".into(),
                    )));
                }
                continue;
            }
            buf.clear();
            let first = self.next;
            for (i, e) in batch.iter().enumerate() {
                encode(&mut buf, first + i as u64, &e.record);
            }
            let started = std::time::Instant::now();
            if let Err(e) = self.write(&buf) {
                self.poison(&e);
                for entry in batch.drain(..) {
                    let _ = entry
                        .done
                        .send(Err(AppendError::Unknown(format!("claim journal: {e}"))));
                }
                continue;
            }
            self.next = first + batch.len() as u64;
            telemetry::group_commit(queue::CLAIM_JOURNAL, batch.len(), started.elapsed());
            let stats = &self.shared.stats;
            stats.writes.fetch_add(1, Ordering::Relaxed);
            stats
                .appended
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            stats.acked_lsn.store(self.next - 1, Ordering::Release);
            for (i, e) in batch.drain(..).enumerate() {
                // Pending before the answer, so "my coupons" right after the 201 shows it.
                self.shared.add_pending(&e.record.coupon);
                let _ = e.done.send(Ok(()));
                let _ = self.acked.send(Acked {
                    lsn: first + i as u64,
                    record: e.record,
                    permit: e.permit,
                });
            }
            if self.len >= self.opts.segment_bytes
                && let Err(e) = self.rotate()
            {
                self.poison(&e);
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.file.write_all(buf)?;
        if self.opts.fsync {
            self.file.sync_data()?;
        }
        self.len += buf.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let (file, path) = new_segment(&self.opts.dir, self.next)?;
        self.file = file;
        self.len = 0;
        lock(&self.shared.segments).push_back((self.next, path));
        Ok(())
    }

    fn poison(&self, e: &std::io::Error) {
        tracing::error!(error = %e, dir = %self.opts.dir.display(), "claim journal write failed: no more claims are accepted until the node restarts");
        self.shared.poisoned.store(true, Ordering::Release);
    }
}

/// Creates segment `<first>.log` and makes its directory entry durable.
fn new_segment(dir: &Path, first: u64) -> std::io::Result<(File, PathBuf)> {
    let path = dir.join(format!("{first:020}.log"));
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)?;
    File::open(dir)?.sync_all()?;
    Ok((file, path))
}

async fn apply_loop(
    store: Arc<dyn ClaimJournalStore>,
    mut rx: mpsc::UnboundedReceiver<Acked>,
    shared: Arc<Shared>,
    max: usize,
) {
    let mut batch: Vec<Acked> = Vec::with_capacity(max);
    let mut records: Vec<ClaimRecord> = Vec::with_capacity(max);
    let mut permits: Vec<OwnedSemaphorePermit> = Vec::with_capacity(max);
    while rx.recv_many(&mut batch, max).await > 0 {
        // The writer sends records in LSN order, one after another: the batch ends at the last.
        let through = batch.last().map_or(0, |a| a.lsn);
        for a in batch.drain(..) {
            records.push(a.record);
            permits.push(a.permit);
        }
        apply(&*store, &records, through, &shared).await;
        for r in records.drain(..) {
            shared.remove_pending(r.coupon.user_id, r.coupon.id);
        }
        // Room for as many more acknowledged claims.
        permits.clear();
        shared.stats.applied_lsn.store(through, Ordering::Release);
        shared.applied.send_replace(through);
        shared.trim(through);
    }
}

/// Stores `records` (the consecutive LSNs ending at `through`) and returns only once they
/// are: a transient failure is retried with backoff (the backlog fills and claims wait
/// meanwhile), a batch the store refuses is retried claim by claim, and a claim refused as a
/// duplicate is set aside (the retry then only moves the position past it).
async fn apply(
    store: &dyn ClaimJournalStore,
    mut records: &[ClaimRecord],
    through: u64,
    shared: &Shared,
) {
    let stats = &shared.stats;
    let mut delay = Duration::from_millis(10);
    loop {
        let started = std::time::Instant::now();
        match store.apply_journaled(records, through).await {
            Ok(()) => {
                telemetry::group_commit(queue::CLAIM_APPLY, records.len(), started.elapsed());
                stats.apply_batches.fetch_add(1, Ordering::Relaxed);
                stats
                    .applied
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                return;
            }
            Err(e) if records.len() > 1 => {
                stats.apply_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, size = records.len(), "applying journaled claims failed; applying them one by one");
                let first = through + 1 - records.len() as u64;
                for (i, r) in records.iter().enumerate() {
                    let one = std::slice::from_ref(r);
                    Box::pin(apply(store, one, first + i as u64, shared)).await;
                }
                return;
            }
            Err(StoreError::Duplicate(what)) if records.len() == 1 => {
                stats.apply_failures.fetch_add(1, Ordering::Relaxed);
                set_aside(&records[0], through, &what, shared);
                records = &[];
            }
            Err(e) => {
                stats.apply_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, lsn = through, retry_in_ms = delay.as_millis() as u64, "applying a journaled claim failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// A claim SQLite refuses as a duplicate (its coupon's slot is taken: a bug, never expected)
/// is kept in `rejected.log` for an operator, logged and counted.
fn set_aside(record: &ClaimRecord, lsn: u64, why: &str, shared: &Shared) {
    let mut frame = Vec::new();
    encode(&mut frame, lsn, record);
    let path = shared.dir.join("rejected.log");
    let kept = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(&frame).and_then(|()| f.sync_data()));
    tracing::error!(coupon = %record.coupon.id, user = %record.coupon.user_id, template = %record.coupon.template_id, lsn, why, kept = kept.is_ok(), "an acknowledged claim was refused by SQLite; kept in rejected.log");
    shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
}

/// Applies every segment's records after `applied`, in LSN order; returns the last LSN seen
/// (or `applied`) and how many records were applied. Deletes the segments afterwards.
async fn replay(
    store: &dyn ClaimJournalStore,
    opts: &JournalOptions,
    applied: u64,
) -> Result<(u64, u64), StoreError> {
    let io = |e: std::io::Error| StoreError::Backend(Box::new(e));
    let mut segments: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(&opts.dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            segments.push((first, path));
        }
    }
    segments.sort();
    let mut last = applied;
    let mut replayed = 0u64;
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    for (_, path) in &segments {
        // Deleted since it was listed: an applier of the same process (a test's in-process
        // restart) finished with it, so every record in it is applied.
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(io(e)),
        };
        let (records, torn) = decode_all(&bytes)?;
        if torn > 0 {
            tracing::warn!(path = %path.display(), bytes = torn, "claim journal segment ends in a torn frame (a write cut by a crash, never acknowledged); ignored");
        }
        let fresh: Vec<(u64, ClaimRecord)> =
            records.into_iter().filter(|(lsn, _)| *lsn > last).collect();
        for chunk in fresh.chunks(opts.apply_batch.max(1)) {
            let through = chunk.last().map_or(last, |(lsn, _)| *lsn);
            let claims: Vec<ClaimRecord> = chunk.iter().map(|(_, r)| r.clone()).collect();
            store.apply_journaled(&claims, through).await?;
            replayed += claims.len() as u64;
            last = through;
        }
    }
    if replayed > 0 {
        tracing::info!(
            replayed,
            applied_lsn = last,
            "claim journal replayed into the store"
        );
    }
    for (_, path) in &segments {
        match std::fs::remove_file(path) {
            Err(e) if !gone(&e) => return Err(io(e)),
            _ => {}
        }
    }
    Ok((last, replayed))
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    // Strings here are short (a status, an order id, a bounded Idempotency-Key).
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

fn put_opt_str(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            buf.push(1);
            put_str(buf, s);
        }
        None => buf.push(0),
    }
}

/// Appends one frame for `record` with `lsn`.
fn encode(buf: &mut Vec<u8>, lsn: u64, record: &ClaimRecord) {
    let r = CouponRecord::from_coupon(&record.coupon, record.claim_key.as_deref());
    let start = buf.len();
    buf.extend_from_slice(&[0; 8]);
    buf.extend_from_slice(&lsn.to_le_bytes());
    for v in [
        r.id,
        r.user_id,
        r.template_id,
        r.shop_id,
        r.seq,
        r.valid_from_ms,
        r.valid_until_ms,
        r.claimed_at_ms,
    ] {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    put_str(buf, &r.origin);
    put_str(buf, &r.status);
    put_opt_str(buf, r.locked_order_id.as_deref());
    match r.used_at_ms {
        Some(at) => {
            buf.push(1);
            buf.extend_from_slice(&at.to_le_bytes());
        }
        None => buf.push(0),
    }
    put_opt_str(buf, r.claim_key.as_deref());
    // Appended only when present: a frame without it is byte for byte the older format, which
    // older releases still replay.
    if let Some(t) = &record.traceparent {
        put_opt_str(buf, Some(t));
    }
    let body_len = (buf.len() - start - 8) as u32;
    let crc = crc32fast::hash(&buf[start + 8..]);
    buf[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A cursor over a frame's body.
struct Body<'a>(&'a [u8]);

impl Body<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take::<8>().map(u64::from_le_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take::<8>().map(i64::from_le_bytes)
    }
    fn flag(&mut self) -> Option<bool> {
        match self.take::<1>()? {
            [0] => Some(false),
            [1] => Some(true),
            _ => None,
        }
    }
    fn str(&mut self) -> Option<String> {
        let len = usize::from(u16::from_le_bytes(self.take::<2>()?));
        let (s, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        String::from_utf8(s.to_vec()).ok()
    }
    fn opt_str(&mut self) -> Option<Option<String>> {
        if self.flag()? {
            self.str().map(Some)
        } else {
            Some(None)
        }
    }
}

fn decode_body(body: &[u8]) -> Option<(u64, CouponRecord, Option<String>)> {
    let mut b = Body(body);
    let lsn = b.u64()?;
    let mut ints = [0i64; 8];
    for v in &mut ints {
        *v = b.i64()?;
    }
    let [
        id,
        user_id,
        template_id,
        shop_id,
        seq,
        valid_from_ms,
        valid_until_ms,
        claimed_at_ms,
    ] = ints;
    let origin = b.str()?;
    let status = b.str()?;
    let locked_order_id = b.opt_str()?;
    let used_at_ms = if b.flag()? { Some(b.i64()?) } else { None };
    let claim_key = b.opt_str()?;
    let traceparent = if b.0.is_empty() { None } else { b.opt_str()? };
    if !b.0.is_empty() {
        return None;
    }
    Some((
        lsn,
        CouponRecord {
            id,
            user_id,
            template_id,
            shop_id,
            seq,
            origin,
            status,
            valid_from_ms,
            valid_until_ms,
            claimed_at_ms,
            locked_order_id,
            used_at_ms,
            claim_key,
        },
        traceparent,
    ))
}

/// Every whole frame of a segment in order, and the length of a torn tail (0 if none). A
/// frame whose checksum matches but whose body does not decode is corruption, not a torn
/// write: that is an error.
fn decode_all(bytes: &[u8]) -> Result<(Vec<(u64, ClaimRecord)>, usize), StoreError> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some((head, tail)) = rest.split_first_chunk::<8>() else {
            break;
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_FRAME {
            break;
        }
        let Some((body, after)) = tail.split_at_checked(len) else {
            break;
        };
        if crc32fast::hash(body) != crc {
            break;
        }
        let (lsn, record, traceparent) = decode_body(body)
            .ok_or_else(|| StoreError::Corrupt("claim journal frame does not decode".into()))?;
        let claim_key = record.claim_key.clone();
        out.push((
            lsn,
            ClaimRecord {
                coupon: record.into_coupon()?,
                claim_key,
                traceparent,
            },
        ));
        rest = after;
    }
    Ok((out, rest.len()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use jiff::Timestamp;
    use stampede_domain::coupon::{CouponStatus, Origin};
    use stampede_domain::ids::{ShopId, TemplateId};

    fn record(id: i64, key: Option<&str>) -> ClaimRecord {
        let at = Timestamp::from_millisecond(1_700_000_000_000).unwrap();
        ClaimRecord {
            coupon: UserCoupon {
                id: CouponId::new(id).unwrap(),
                user_id: UserId::new(42).unwrap(),
                template_id: TemplateId::new(7).unwrap(),
                shop_id: ShopId::from_stored(3).unwrap(),
                seq: 2,
                origin: Origin::Claim,
                status: CouponStatus::Unused,
                valid_from: at,
                valid_until: at,
                claimed_at: at,
                locked_order_id: None,
                used_at: None,
            },
            claim_key: key.map(str::to_owned),
            traceparent: None,
        }
    }

    /// A write that fails (`/dev/full`: ENOSPC) poisons the journal: its claims have an
    /// unknown outcome, later ones are refused as never written.
    #[tokio::test]
    async fn a_failed_write_poisons_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let shared = Arc::new(Shared {
            pending: (0..SHARDS)
                .map(|_| Mutex::new(PendingMap::default()))
                .collect(),
            poisoned: AtomicBool::new(false),
            segments: Mutex::new(VecDeque::new()),
            applied: watch::Sender::new(0),
            stats: Arc::new(JournalStats::default()),
            dir: dir.path().to_owned(),
        });
        let (acked, mut acked_rx) = mpsc::unbounded_channel();
        let writer = Writer {
            file: OpenOptions::new().write(true).open("/dev/full").unwrap(),
            len: 0,
            next: 1,
            opts: JournalOptions::new(dir.path().to_owned()),
            shared: shared.clone(),
            acked,
        };
        let (tx, rx) = mpsc::channel(8);
        let thread = std::thread::spawn(move || writer.run(rx));
        let permits = Arc::new(Semaphore::new(8));
        let answer = |id| {
            let (done, answer) = oneshot::channel();
            let permit = permits.clone().try_acquire_owned().unwrap();
            let entry = Entry {
                record: record(id, None),
                permit,
                done,
            };
            (entry, answer)
        };
        let (first, first_answer) = answer(20);
        tx.send(first).await.unwrap();
        assert!(matches!(
            first_answer.await.unwrap(),
            Err(AppendError::Unknown(_))
        ));
        assert!(shared.poisoned.load(Ordering::SeqCst));
        let (second, second_answer) = answer(21);
        tx.send(second).await.unwrap();
        assert!(matches!(
            second_answer.await.unwrap(),
            Err(AppendError::NotWritten(_))
        ));
        drop(tx);
        thread.join().unwrap();
        assert!(acked_rx.try_recv().is_err(), "nothing reaches the applier");
        assert!(shared.pending.iter().all(|m| lock(m).is_empty()));
    }

    #[test]
    fn frames_round_trip_and_a_torn_tail_is_cut_off() {
        let mut buf = Vec::new();
        encode(&mut buf, 1, &record(10, Some("k-1")));
        encode(&mut buf, 2, &record(11, None));
        let whole = buf.len();
        encode(&mut buf, 3, &record(12, Some("k-3")));
        let (out, torn) = decode_all(&buf).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(torn, 0);
        assert_eq!(out[0], (1, record(10, Some("k-1"))));
        assert_eq!(out[1], (2, record(11, None)));
        // Every cut inside the last frame leaves the first two and reports the rest torn.
        for cut in whole + 1..buf.len() {
            let (out, torn) = decode_all(&buf[..cut]).unwrap();
            assert_eq!(out.len(), 2, "cut at {cut}");
            assert_eq!(torn, cut - whole);
        }
        // A flipped bit in the last frame fails its checksum: torn, not decoded.
        let mut bad = buf.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let (out, torn) = decode_all(&bad).unwrap();
        assert_eq!((out.len(), torn), (2, buf.len() - whole));
    }

    /// A record with a traceparent round-trips; one without encodes exactly as before the
    /// field existed (older releases replay it), which a frozen frame pins down.
    #[test]
    fn the_traceparent_is_optional_and_absent_frames_keep_the_old_format() {
        let mut traced = record(20, Some("k"));
        traced.traceparent =
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned());
        let mut buf = Vec::new();
        encode(&mut buf, 5, &traced);
        encode(&mut buf, 6, &record(21, None));
        let (out, torn) = decode_all(&buf).unwrap();
        assert_eq!(torn, 0);
        assert_eq!(out, vec![(5, traced), (6, record(21, None))]);

        let mut plain = Vec::new();
        encode(&mut plain, 6, &record(21, None));
        // The body of an untraced frame ends with the claim key's absent flag, as it always did.
        let body_len = u32::from_le_bytes([plain[0], plain[1], plain[2], plain[3]]) as usize;
        assert_eq!(plain.len(), 8 + body_len);
        assert_eq!(plain.last(), Some(&0), "no field after the claim key");
    }
}
