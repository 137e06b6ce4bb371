//! What only the single SQLite file enforces about coupons: a coupon id is unique across all
//! users, so a batch reusing one fails whole. The rest is in the conformance suite.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use stampede_conformance::fixtures::{claim, claimed_events, stock_of, stocked};
use stampede_core::claim_ports::{ClaimRecord, CouponStore};
use stampede_core::ports::StoreError;
use stampede_store_sqlite::{SqliteOptions, SqliteStore};

#[tokio::test]
async fn a_batch_reusing_a_coupon_id_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("stampede.db"), SqliteOptions::default())
        .await
        .unwrap();
    let a = stocked(&store, 21, 1, 1_000).await;
    store.commit_claims(&[claim(&a, 1, 1, 1, 0)]).await.unwrap();
    let mut batch: Vec<ClaimRecord> = (0..600).map(|i| claim(&a, 100 + i, 10 + i, 1, 0)).collect();
    // Coupon 1 again, for another user.
    batch.push(claim(&a, 1, 5_000, 1, 0));
    let got = store.commit_claims(&batch).await;
    assert!(matches!(got, Err(StoreError::Duplicate(_))), "{got:?}");
    assert_eq!(stock_of(&store, &a).await, 999);
    assert_eq!(claimed_events(&store).await.len(), 1);
}
