//! Hot state at scale: a template with millions of holders, and the embedded hot state
//! (`stampede-hot-memory`, the same code the server runs) rebuilt from SQLite as after a
//! restart. Times the rebuild (the first claim of the template loads it) and measures
//! this process's memory before and after, so bytes per holder can be read off.
//!
//! The holders are written straight into a fresh store (the server's schema, through its
//! own migrations; the server's coupon row layout) because claiming millions of coupons
//! through HTTP would measure the claim path, not the rebuild.

use crate::insert_ceiling::{bind_row, multi_insert, now_ms, row};
use crate::proc;
use anyhow::{Context, bail};
use clap::Args;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};
use stampede_core::claim_ports::{ClaimOutcome, CouponStore, HotState};
use stampede_core::ports::{CreateOutcome, TemplateStore};
use stampede_core::records::CouponRecord;
use stampede_domain::audit::AuditEntry;
use stampede_domain::coupon::{ClaimRefusal, Origin, new_claimed_coupon};
use stampede_domain::ids::{CouponId, ShopId, TemplateId, UserId};
use stampede_domain::template::{Kind, TemplateDraft};
use stampede_hot_memory::MemoryHotState;
use stampede_store_sqlite::{SqliteOptions, SqliteStore};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// The options of `hot-rebuild`.
#[derive(Debug, Clone, Args)]
pub struct HotRebuildOptions {
    /// Users holding a coupon of the template.
    #[arg(long, default_value_t = 5_000_000)]
    pub holders: u64,
    /// Share of the holders whose coupon came from a claim with an Idempotency-Key (the
    /// default: claims require one), whose key the hot state keeps for replays.
    #[arg(long, default_value_t = 1.0)]
    pub keyed: f64,
    /// Where the store is made (removed first).
    #[arg(long, default_value = "/tmp/stampede-hot-rebuild")]
    pub dir: PathBuf,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct HotRebuildReport {
    pub holders: u64,
    pub keyed_holders: u64,
    pub fill_seconds: f64,
    pub rebuild_seconds: f64,
    /// The store's part of a rebuild: `claim_index` alone, read again after the rebuild.
    pub store_read_seconds: f64,
    /// VmRSS of this process just before the rebuild, and after it, in KiB.
    pub rss_before_kb: u64,
    pub rss_after_kb: u64,
    /// VmHWM (the peak) after the rebuild, in KiB.
    pub peak_rss_kb: u64,
    /// (rss_after − rss_before) / holders.
    pub bytes_per_holder: f64,
}

const TX_ROWS: u64 = 20_000;
const CHUNK: usize = 256;
const TEMPLATE: i64 = 1;
const SHOP: i64 = 7;

pub async fn run(o: &HotRebuildOptions) -> anyhow::Result<HotRebuildReport> {
    if o.holders == 0 || !(0.0..=1.0).contains(&o.keyed) {
        bail!("--holders must be at least 1 and --keyed within 0..=1");
    }
    let _ = std::fs::remove_dir_all(&o.dir);
    let path = o.dir.join("stampede.db");
    let start = Timestamp::now() - SignedDuration::from_hours(1);
    let mut t = TemplateDraft {
        name: Some("hot rebuild".into()),
        kind: Some(Kind::Fixed),
        amount_off: Some(500),
        stock_total: Some(i64::try_from(o.holders)?.saturating_add(1_000)),
        claim_start: Some(start),
        claim_end: Some(start + SignedDuration::from_hours(48)),
        validity_hours: Some(24),
        per_user_limit: Some(1),
        ..TemplateDraft::default()
    }
    .validate(
        TemplateId::new(TEMPLATE).context("template id")?,
        ShopId::new(SHOP).context("shop id")?,
        start,
    )
    .map_err(|e| anyhow::anyhow!("the template does not validate: {e:?}"))?;
    t.stock = 1_000;
    {
        let store = SqliteStore::open(&path, SqliteOptions::default()).await?;
        let out = store
            .create_template(&t, &AuditEntry::created(&t, "bench"), None)
            .await?;
        if !matches!(out, CreateOutcome::Created) {
            bail!("the template was not created");
        }
    }

    eprintln!("fill: {} holders into {}", o.holders, path.display());
    let fill_started = Instant::now();
    let keyed_holders = fill(&path, o).await?;
    let fill_seconds = fill_started.elapsed().as_secs_f64();

    // As after a restart: a fresh store and hot state; the first question loads it.
    let store = Arc::new(SqliteStore::open(&path, SqliteOptions::default()).await?);
    let hot = MemoryHotState::new(store.clone(), store.clone(), 1_024);
    let pid = std::process::id();
    let (_, rss_before_kb) = proc::memory_kb(pid)?;
    // The rebuilt state answers: a holder is at its limit (this first claim loads the
    // template, so it is what is timed; a refusal writes nothing), a newcomer claims.
    let now = Timestamp::now();
    let claim = |user: i64, id: i64| -> anyhow::Result<_> {
        Ok(new_claimed_coupon(
            &t,
            CouponId::new(id).context("coupon id")?,
            UserId::new(user).context("user id")?,
            0,
            Origin::Claim,
            now,
        ))
    };
    let started = Instant::now();
    let holder = hot.claim(&t, claim(1, 1)?, None, now).await?;
    let rebuild_seconds = started.elapsed().as_secs_f64();
    let (peak_rss_kb, rss_after_kb) = proc::memory_kb(pid)?;
    if !matches!(holder, ClaimOutcome::Refused(ClaimRefusal::LimitReached)) {
        bail!("a holder was not refused by the rebuilt state: {holder:?}");
    }
    let stock = hot.stock(&t).await?;
    if stock != Some(1_000) {
        bail!("the rebuilt stock is {stock:?}, not 1000");
    }
    let newcomer = i64::try_from(o.holders)? + 1;
    let fresh = hot.claim(&t, claim(newcomer, 2)?, None, now).await?;
    if !matches!(fresh, ClaimOutcome::Claimed(_)) {
        bail!("a newcomer could not claim from the rebuilt state: {fresh:?}");
    }
    let started = Instant::now();
    let index = store.claim_index(t.id).await?;
    let store_read_seconds = started.elapsed().as_secs_f64();
    drop(index);
    let grown = rss_after_kb.saturating_sub(rss_before_kb) as f64 * 1024.0;
    Ok(HotRebuildReport {
        holders: o.holders,
        keyed_holders,
        fill_seconds: crate::round::round2(fill_seconds),
        rebuild_seconds: crate::round::round2(rebuild_seconds),
        store_read_seconds: crate::round::round2(store_read_seconds),
        rss_before_kb,
        rss_after_kb,
        peak_rss_kb,
        bytes_per_holder: (grown / o.holders as f64).round(),
    })
}

/// Writes one claimed coupon per holder (users 1..=holders), keyed for the first `keyed`
/// share; returns how many are keyed.
async fn fill(path: &std::path::Path, o: &HotRebuildOptions) -> anyhow::Result<u64> {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .pragma("synchronous", "OFF")
        .connect()
        .await
        .context("opening the store for the fill")?;
    let keyed_up_to = (o.holders as f64 * o.keyed).round() as u64;
    let now = now_ms();
    let sql = multi_insert("INSERT", "user_coupons", CHUNK);
    let mut next = 0u64;
    while next < o.holders {
        let end = (next + TX_ROWS).min(o.holders);
        let mut tx = conn.begin().await?;
        let rows: Vec<CouponRecord> = (next..end)
            .map(|i| {
                // The ceiling's row of user i + 1, made a keyed claim of this template.
                let mut r = row(i, now);
                r.template_id = TEMPLATE;
                r.shop_id = SHOP;
                r.origin = "claim".to_owned();
                // A client's key: the bench's are short, real ones are often UUIDs.
                r.claim_key = (i < keyed_up_to).then(|| format!("k-{i:016x}"));
                r
            })
            .collect();
        for chunk in rows.chunks(CHUNK) {
            let one;
            let q = if chunk.len() == CHUNK {
                sql.as_str()
            } else {
                one = multi_insert("INSERT", "user_coupons", chunk.len());
                one.as_str()
            };
            let mut query = sqlx::query(AssertSqlSafe(q));
            for r in chunk {
                query = bind_row(query, r);
            }
            query.execute(&mut *tx).await.context("inserting holders")?;
        }
        tx.commit().await?;
        next = end;
    }
    conn.close().await.ok();
    Ok(keyed_up_to)
}

impl HotRebuildReport {
    pub fn to_table(&self) -> String {
        let mib = |kb: u64| format!("{:.1} MiB", kb as f64 / 1024.0);
        [
            (
                "holders (keyed)",
                format!("{} ({})", self.holders, self.keyed_holders),
            ),
            ("fill", format!("{:.2} s", self.fill_seconds)),
            (
                "rebuild (first claim after restart)",
                format!("{:.2} s", self.rebuild_seconds),
            ),
            (
                "of which reading the store (claim_index)",
                format!("{:.2} s", self.store_read_seconds),
            ),
            (
                "RSS before / after rebuild",
                format!("{} / {}", mib(self.rss_before_kb), mib(self.rss_after_kb)),
            ),
            ("peak RSS", mib(self.peak_rss_kb)),
            (
                "bytes per holder (RSS growth / holders)",
                format!("{}", self.bytes_per_holder),
            ),
        ]
        .iter()
        .map(|(k, v)| format!("{k:<42} {v}\n"))
        .collect()
    }
}
