//! A timing loop, not a benchmark with asserts:
//! `cargo test -p stampede-domain --release -- --ignored --nocapture timing`.

use super::*;
use std::hint::black_box;
use std::time::Instant;

/// A deterministic stream of pseudo-random numbers (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: i64) -> i64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as i64
    }
}

/// 50 coupons over 3 shops and the platform (about one in five); `round`: amounts in whole
/// units as merchants set them, otherwise arbitrary cents (fewer ties, more search).
fn coupons(seed: u64, round: bool) -> Vec<(UserCoupon, Template)> {
    let mut rng = Rng(seed);
    let unit = if round { 100 } else { 1 };
    (1..=50)
        .map(|id| {
            let shop = if rng.below(5) == 0 {
                0
            } else {
                1 + rng.below(3)
            };
            let goods: Vec<i64> = if rng.below(3) == 0 {
                vec![1 + rng.below(5)]
            } else {
                vec![]
            };
            let amount = |rng: &mut Rng, max: i64| (1 + rng.below(max / unit)) * unit;
            let rule = match rng.below(3) {
                0 => R::Fixed(amount(&mut rng, 5_000)),
                1 => {
                    let a = amount(&mut rng, 10_000);
                    R::Threshold(a, a + amount(&mut rng, 60_000))
                }
                _ => R::Percent(
                    (5 + rng.below(30)) as u8,
                    if rng.below(2) == 0 {
                        0
                    } else {
                        amount(&mut rng, 60_000)
                    },
                    (rng.below(2) == 0).then(|| amount(&mut rng, 8_000)),
                ),
            };
            held(id, shop, &goods, rule)
        })
        .collect()
}

fn per_call(iterations: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iterations / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(iterations)
}

#[test]
#[ignore = "timing loop; run in release with --nocapture"]
fn timing_best_and_quote_50_coupons_3_shops() {
    let c = cart(&[
        (1, 1, 12_999, 1),
        (2, 1, 4_550, 2),
        (3, 2, 25_000, 1),
        (4, 2, 899, 3),
        (5, 3, 15_000, 1),
    ]);
    for round in [true, false] {
        let (mut best_us, mut quote_us, mut worst) = (0.0, 0.0, 0.0f64);
        let seeds = 20u64;
        for seed in 1..=seeds {
            let set = coupons(seed * 7919, round);
            let b = per_call(20_000, || {
                black_box(best(black_box(&set), &c, now()));
            });
            let q = per_call(20_000, || {
                black_box(quote(black_box(&set), &c, now()));
            });
            best_us += b;
            quote_us += q;
            worst = worst.max(b);
        }
        println!(
            "{}: best {:.2} µs (worst seed {:.2} µs), quote {:.2} µs, mean over {seeds} coupon sets",
            if round {
                "round amounts"
            } else {
                "arbitrary cents"
            },
            best_us / seeds as f64,
            worst,
            quote_us / seeds as f64,
        );
    }
}

/// The contrived worst case: many shops in one cart, close shop coupons in each, percent
/// platform coupons whose threshold binds. Shows where the node budget takes over.
#[test]
#[ignore = "timing loop; run in release with --nocapture"]
fn timing_contrived_many_shops() {
    for (shops, per_shop) in [(3i64, 15), (5, 8), (8, 5), (10, 4), (14, 4), (30, 3)] {
        let lines: Vec<(i64, i64, i64, i64)> =
            (1..=shops).map(|s| (s, s, 10_000 + s * 37, 1)).collect();
        let c = cart(&lines);
        let total = c.subtotal().cents();
        let mut rng = Rng(12_345);
        let mut set = Vec::new();
        let mut id = 1;
        for s in 1..=shops {
            for _ in 0..per_shop {
                set.push(held(id, s, &[], R::Fixed(100 + rng.below(3_000))));
                id += 1;
            }
        }
        for _ in 0..10 {
            let threshold = total - 2_000 - rng.below(20_000);
            set.push(held(id, 0, &[], R::Percent(90, threshold, None)));
            id += 1;
        }
        let exact = best(&set, &c, now()).exact;
        let t = per_call(20, || {
            black_box(best(black_box(&set), &c, now()));
        });
        println!(
            "{shops} shops, {} coupons: best {t:.1} µs, exact: {exact}",
            set.len()
        );
    }
}
