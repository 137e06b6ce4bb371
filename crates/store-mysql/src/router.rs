//! The shard router: which database and which table of it hold a key.
//!
//! Rule: `s = mix(key) % (N × M)`, `database = s / M`, `table = s % M`, where `mix` is the
//! SplitMix64 finalizer (a bijective 64-bit bit mixer). Why mix first: the keys we route are
//! sequential shop ids and snowflake ids, whose low bits are a per-millisecond sequence and
//! whose high bits are time — plain `key % tables` piles them into a few buckets. After the
//! mixer every input bit affects every output bit, so any run of keys spreads evenly.
//!
//! The route of a key depends only on the key and on N × M, so it never changes while the
//! layout is fixed; `golden_routes` below pins it. Logical shards are numbered database-major,
//! so moving whole databases between servers is only a change of URLs in the config.
//! Changing N × M re-routes keys and needs a data migration.

use crate::error::ConfigError;

/// Upper bound on N × M, far above any sane layout; keeps the arithmetic in `u32`.
pub const MAX_SHARDS: u32 = 1 << 16;

/// One physical table set in `databases[database]`: the per-shop tables (`templates_{table}`,
/// `template_audit_{table}`, `idempotency_keys_{table}`, `distributions_{table}` with its
/// failures and file chunks) for shop ids routed here, and the per-user tables
/// (`user_coupons_{table}`, `outbox_{table}`, `orders_{table}`, `settlements_{table}`,
/// `reminders_{table}`) for user ids routed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    pub database: usize,
    pub table: usize,
}

impl Shard {
    pub fn templates_table(&self) -> String {
        format!("templates_{}", self.table)
    }

    /// Goods → templates of the shard's templates table.
    pub fn template_goods_table(&self) -> String {
        format!("template_goods_{}", self.table)
    }

    pub fn audit_table(&self) -> String {
        format!("template_audit_{}", self.table)
    }

    pub fn idempotency_table(&self) -> String {
        format!("idempotency_keys_{}", self.table)
    }

    pub fn coupons_table(&self) -> String {
        format!("user_coupons_{}", self.table)
    }

    /// The outbox of the events of this shard's users, written with their coupons (and of
    /// the events of its shops' distribution tasks, written as they finish).
    pub fn outbox_table(&self) -> String {
        format!("outbox_{}", self.table)
    }

    /// Orders of this shard's users, next to their coupons.
    pub fn orders_table(&self) -> String {
        format!("orders_{}", self.table)
    }

    /// The coupons each order of `orders_table` holds (its settlement lines).
    pub fn settlements_table(&self) -> String {
        format!("settlements_{}", self.table)
    }

    /// Reminders of this shard's users; also one delivery partition.
    pub(crate) fn reminders_table(&self) -> String {
        format!("reminders_{}", self.table)
    }

    pub fn distributions_table(&self) -> String {
        format!("distributions_{}", self.table)
    }

    pub fn distribution_failures_table(&self) -> String {
        format!("distribution_failures_{}", self.table)
    }

    pub fn distribution_files_table(&self) -> String {
        format!("distribution_files_{}", self.table)
    }
}

/// Maps a key (a shop id or a user id) to its shard for a fixed layout of N databases × M tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRouter {
    databases: u32,
    tables: u32,
}

/// The SplitMix64 finalizer: a bijection on 64-bit values with full avalanche.
fn mix(key: i64) -> u64 {
    // Reinterpreting the sign bit is intended: only the bit pattern matters here.
    let mut z = key as u64;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl ShardRouter {
    pub fn new(databases: u32, tables: u32) -> Result<Self, ConfigError> {
        if databases == 0 || tables == 0 {
            return Err(ConfigError(
                "a layout needs at least 1 database and 1 table".into(),
            ));
        }
        match databases.checked_mul(tables) {
            Some(total) if total <= MAX_SHARDS => Ok(Self { databases, tables }),
            _ => Err(ConfigError(format!(
                "{databases} × {tables} exceeds {MAX_SHARDS} shards"
            ))),
        }
    }

    pub fn databases(&self) -> usize {
        self.databases as usize
    }

    pub fn tables_per_database(&self) -> usize {
        self.tables as usize
    }

    pub fn route(&self, key: i64) -> Shard {
        let total = u64::from(self.databases * self.tables);
        let tables = u64::from(self.tables);
        let s = mix(key) % total;
        // s < N × M ≤ MAX_SHARDS, so both casts are lossless.
        Shard {
            database: (s / tables) as usize,
            table: (s % tables) as usize,
        }
    }

    /// Every shard, database by database.
    pub fn all(&self) -> impl Iterator<Item = Shard> + use<> {
        let tables = self.tables as usize;
        (0..self.databases as usize)
            .flat_map(move |database| (0..tables).map(move |table| Shard { database, table }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn router(n: u32, m: u32) -> ShardRouter {
        match ShardRouter::new(n, m) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    fn assert_even(r: &ShardRouter, keys: impl Iterator<Item = i64>, what: &str) {
        let mut counts: HashMap<Shard, u64> = HashMap::new();
        let mut n = 0u64;
        for k in keys {
            *counts.entry(r.route(k)).or_default() += 1;
            n += 1;
        }
        let buckets = r.all().count() as u64;
        assert_eq!(
            counts.len() as u64,
            buckets,
            "{what}: every shard gets keys"
        );
        let mean = n as f64 / buckets as f64;
        for (shard, c) in counts {
            let dev = (c as f64 - mean).abs() / mean;
            assert!(
                dev <= 0.05,
                "{what}: {shard:?} has {c} keys, mean {mean:.0} ({:.1}% off)",
                dev * 100.0
            );
        }
    }

    /// Snowflake-like ids: 41 bits of ms since an epoch, 10 bits of worker, 12 of sequence,
    /// issued in bursts of a few ids per millisecond by a handful of workers.
    fn snowflakes(count: i64) -> impl Iterator<Item = i64> {
        (0..count).map(|i| {
            let ms = 1_700_000_000_000 - 1_288_834_974_657 + i / 12;
            let worker = (i / 4) % 3;
            let seq = i % 4;
            (ms << 22) | (worker << 12) | seq
        })
    }

    #[test]
    fn spreads_sequential_keys_evenly() {
        for (n, m) in [(2, 4), (4, 8)] {
            assert_even(
                &router(n, m),
                1..=200_000,
                &format!("sequential over {n}×{m}"),
            );
        }
    }

    #[test]
    fn spreads_snowflake_keys_evenly() {
        for (n, m) in [(2, 4), (4, 8)] {
            assert_even(
                &router(n, m),
                snowflakes(200_000),
                &format!("snowflakes over {n}×{m}"),
            );
        }
    }

    #[test]
    fn plain_modulo_would_skew_snowflakes() {
        // Why the mixer exists: with ≤ 4 ids per ms, `id % 8` only ever hits a few buckets.
        let mut seen = std::collections::HashSet::new();
        for k in snowflakes(10_000) {
            seen.insert(k % 8);
        }
        assert!(seen.len() < 8);
    }

    #[test]
    fn golden_routes() {
        // Pinned: a change here re-routes stored data. Never edit without a data migration.
        let r = router(2, 4);
        let expected = [
            (
                0,
                Shard {
                    database: 0,
                    table: 0,
                },
            ),
            (
                1,
                Shard {
                    database: 1,
                    table: 1,
                },
            ),
            (
                2,
                Shard {
                    database: 0,
                    table: 2,
                },
            ),
            (
                3,
                Shard {
                    database: 0,
                    table: 0,
                },
            ),
            (
                42,
                Shard {
                    database: 0,
                    table: 2,
                },
            ),
            (
                1_000_000_007,
                Shard {
                    database: 0,
                    table: 0,
                },
            ),
            (
                7_243_001_234_567_890,
                Shard {
                    database: 1,
                    table: 0,
                },
            ),
            (
                i64::MAX,
                Shard {
                    database: 1,
                    table: 1,
                },
            ),
        ];
        for (key, shard) in expected {
            assert_eq!(r.route(key), shard, "key {key}");
        }
        let big = router(4, 8);
        let expected = [
            (
                1,
                Shard {
                    database: 0,
                    table: 5,
                },
            ),
            (
                2,
                Shard {
                    database: 1,
                    table: 2,
                },
            ),
            (
                7_243_001_234_567_890,
                Shard {
                    database: 2,
                    table: 4,
                },
            ),
        ];
        for (key, shard) in expected {
            assert_eq!(big.route(key), shard, "key {key}");
        }
    }

    #[test]
    fn single_shard_layout_routes_everything_to_it() {
        let r = router(1, 1);
        for k in [0, 1, -5, i64::MAX, i64::MIN] {
            assert_eq!(
                r.route(k),
                Shard {
                    database: 0,
                    table: 0
                }
            );
        }
    }

    #[test]
    fn all_lists_every_shard_once_database_major() {
        let shards: Vec<Shard> = router(2, 3).all().collect();
        assert_eq!(shards.len(), 6);
        assert_eq!(
            shards[0],
            Shard {
                database: 0,
                table: 0
            }
        );
        assert_eq!(
            shards[3],
            Shard {
                database: 1,
                table: 0
            }
        );
        assert_eq!(
            shards[5],
            Shard {
                database: 1,
                table: 2
            }
        );
    }

    #[test]
    fn rejects_empty_and_oversized_layouts() {
        assert!(ShardRouter::new(0, 4).is_err());
        assert!(ShardRouter::new(2, 0).is_err());
        assert!(ShardRouter::new(1 << 10, 1 << 10).is_err());
        assert!(ShardRouter::new(u32::MAX, u32::MAX).is_err());
    }

    #[test]
    fn table_names_follow_the_shard() {
        let s = Shard {
            database: 1,
            table: 3,
        };
        assert_eq!(s.templates_table(), "templates_3");
        assert_eq!(s.audit_table(), "template_audit_3");
        assert_eq!(s.idempotency_table(), "idempotency_keys_3");
        assert_eq!(s.coupons_table(), "user_coupons_3");
        assert_eq!(s.outbox_table(), "outbox_3");
        assert_eq!(s.reminders_table(), "reminders_3");
        assert_eq!(s.distributions_table(), "distributions_3");
        assert_eq!(s.distribution_failures_table(), "distribution_failures_3");
        assert_eq!(s.distribution_files_table(), "distribution_files_3");
    }
}
