//! `--find-rate P99_MS`: the highest open-loop rate at which the server keeps its p99 within
//! `P99_MS`, answers every request with 2xx, and the tool keeps the schedule (≥ 95 % of the
//! offered rate served). Starting from `--rate` (default 1,000/s) the rate doubles until a run
//! misses, then bisects between the last rate that held and the first that did not, until they
//! are within 5 % of each other (at most [`MAX_RUNS`] runs of `--duration` each, same
//! workload, same setup).

use serde::Serialize;
use std::future::Future;

/// Runs a search may take.
pub const MAX_RUNS: usize = 12;
/// The bisection stops once the gap is this share of the rate that held.
const PRECISION: f64 = 0.05;
/// A run whose served rate is below this share of the offered one did not keep the schedule.
const KEPT_UP: f64 = 0.95;

/// One run of the search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Try {
    pub offered_per_s: f64,
    pub served_per_s: f64,
    pub p99_ms: f64,
    pub errors: u64,
    pub held: bool,
}

impl Try {
    pub fn new(offered: f64, served: f64, p99_ms: f64, errors: u64, bound_ms: f64) -> Self {
        Try {
            offered_per_s: offered,
            served_per_s: served,
            p99_ms,
            errors,
            held: errors == 0 && p99_ms <= bound_ms && served >= KEPT_UP * offered,
        }
    }
}

/// The next rate to try, given the highest rate that held and the lowest that did not;
/// `None` when the search is done.
pub fn next_rate(held: Option<f64>, missed: Option<f64>, start: f64) -> Option<f64> {
    match (held, missed) {
        (None, None) => Some(start),
        (Some(h), None) => Some(h * 2.0),
        // Even the start missed: halve, down to 1/s.
        (None, Some(m)) => (m / 2.0 >= 1.0).then_some(m / 2.0),
        (Some(h), Some(m)) => (m - h > PRECISION * h).then_some((h + m) / 2.0),
    }
}

/// Searches with `run(rate)`; returns every try in order and the highest rate that held.
pub async fn search<F, Fut>(start: f64, mut run: F) -> anyhow::Result<(Vec<Try>, Option<f64>)>
where
    F: FnMut(f64) -> Fut,
    Fut: Future<Output = anyhow::Result<Try>>,
{
    let (mut held, mut missed) = (None::<f64>, None::<f64>);
    let mut tries = Vec::new();
    while tries.len() < MAX_RUNS {
        let Some(rate) = next_rate(held, missed, start) else {
            break;
        };
        let t = run(rate).await?;
        if t.held {
            held = Some(held.map_or(rate, |h: f64| h.max(rate)));
        } else {
            missed = Some(missed.map_or(rate, |m: f64| m.min(rate)));
        }
        tries.push(t);
    }
    Ok((tries, held))
}

/// The tries as a table, and the answer.
pub fn render(tries: &[Try], best: Option<f64>, bound_ms: f64) -> String {
    let mut out = format!(
        "{:>12} {:>12} {:>10} {:>8}  held (p99 <= {bound_ms} ms, no errors, schedule kept)\n",
        "offered/s", "served/s", "p99 ms", "errors"
    );
    for t in tries {
        out.push_str(&format!(
            "{:>12.0} {:>12.1} {:>10.3} {:>8}  {}\n",
            t.offered_per_s,
            t.served_per_s,
            t.p99_ms,
            t.errors,
            if t.held { "yes" } else { "no" }
        ));
    }
    out.push_str(&match best {
        Some(r) => format!("highest rate with p99 <= {bound_ms} ms: {r:.0}/s\n"),
        None => format!("no rate tried kept p99 <= {bound_ms} ms\n"),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that holds p99 ≤ 10 ms up to 7,300/s.
    fn fake(rate: f64) -> Try {
        let p99 = if rate <= 7_300.0 { 4.0 } else { 40.0 };
        Try::new(rate, rate, p99, 0, 10.0)
    }

    #[tokio::test]
    async fn doubles_then_bisects_to_within_five_percent() -> anyhow::Result<()> {
        let (tries, best) = search(1_000.0, |r| async move { Ok(fake(r)) }).await?;
        let best = best.ok_or_else(|| anyhow::anyhow!("no rate held"))?;
        assert!((7_300.0 * 0.95..=7_300.0).contains(&best), "{best}");
        let rates: Vec<f64> = tries.iter().map(|t| t.offered_per_s).collect();
        assert_eq!(rates[..4], [1_000.0, 2_000.0, 4_000.0, 8_000.0]);
        assert!(tries.len() <= MAX_RUNS);
        assert!(render(&tries, Some(best), 10.0).contains("highest rate with p99 <= 10 ms"));
        Ok(())
    }

    #[tokio::test]
    async fn a_start_that_misses_halves() -> anyhow::Result<()> {
        let (tries, best) = search(20_000.0, |r| async move { Ok(fake(r)) }).await?;
        assert_eq!(tries[0].offered_per_s, 20_000.0);
        assert_eq!(tries[1].offered_per_s, 10_000.0);
        assert!(best.is_some_and(|b| (7_300.0 * 0.95..=7_300.0).contains(&b)));
        Ok(())
    }

    #[test]
    fn errors_or_a_missed_schedule_do_not_hold() {
        assert!(!Try::new(1_000.0, 1_000.0, 1.0, 1, 10.0).held);
        assert!(!Try::new(1_000.0, 900.0, 1.0, 0, 10.0).held);
        assert!(Try::new(1_000.0, 960.0, 10.0, 0, 10.0).held);
    }
}
