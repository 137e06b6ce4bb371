//! Group commit: requests hand their claim to one writer task and wait; the writer takes
//! everything queued (up to `max_batch`) and commits it in one transaction, so the fsync
//! cost is shared by every claim of the batch. While a batch commits, the next one queues.

use stampede_core::claim_ports::{ClaimRecord, CouponStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

pub(crate) struct Pending {
    pub record: ClaimRecord,
    pub done: oneshot::Sender<Result<(), String>>,
}

/// Counters of the writer, for metrics and tests.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub batches: AtomicU64,
    pub claims: AtomicU64,
    pub failed_batches: AtomicU64,
}

impl WriterStats {
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.claims.load(Ordering::Relaxed),
            self.failed_batches.load(Ordering::Relaxed),
        )
    }
}

pub(crate) fn spawn(
    store: Arc<dyn CouponStore>,
    max_batch: usize,
    stats: Arc<WriterStats>,
) -> mpsc::Sender<Pending> {
    let (tx, mut rx) = mpsc::channel::<Pending>(max_batch.saturating_mul(4).max(1024));
    tokio::spawn(async move {
        let mut batch: Vec<Pending> = Vec::with_capacity(max_batch);
        // Ends when every sender is gone and the queue is empty: nothing queued is dropped.
        while rx.recv_many(&mut batch, max_batch).await > 0 {
            commit(&*store, &mut batch, &stats).await;
        }
    });
    tx
}

async fn commit(store: &dyn CouponStore, batch: &mut Vec<Pending>, stats: &WriterStats) {
    let records: Vec<ClaimRecord> = batch.iter().map(|p| p.record.clone()).collect();
    let started = std::time::Instant::now();
    let result = store.commit_claims(&records).await;
    stats.batches.fetch_add(1, Ordering::Relaxed);
    match result {
        Ok(()) => {
            stampede_core::telemetry::group_commit(
                stampede_core::telemetry::queue::CLAIMS,
                records.len(),
                started.elapsed(),
            );
            stats
                .claims
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            for p in batch.drain(..) {
                let _ = p.done.send(Ok(()));
            }
        }
        Err(e) if batch.len() > 1 => {
            // One bad claim must not fail its neighbours: retry each alone, so only the
            // culprit (if any) is refused.
            stats.failed_batches.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, size = batch.len(), "claim batch failed; retrying claims one by one");
            for p in batch.drain(..) {
                let one = std::slice::from_ref(&p.record);
                let r = store.commit_claims(one).await.map_err(|e| e.to_string());
                if r.is_ok() {
                    stats.claims.fetch_add(1, Ordering::Relaxed);
                }
                let _ = p.done.send(r);
            }
        }
        Err(e) => {
            stats.failed_batches.fetch_add(1, Ordering::Relaxed);
            let msg = e.to_string();
            for p in batch.drain(..) {
                let _ = p.done.send(Err(msg.clone()));
            }
        }
    }
}
