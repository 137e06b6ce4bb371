//! The server process over a one-shot run (`distribution`, `reminders`): its RSS before the
//! run, sampled every 100 ms during it and at the end (VmHWM alone is the process's lifetime
//! peak), and the CPU it and this tool used. [`ServerWatch`] takes the readings in the same
//! order for every scenario, so their numbers compare.

use crate::proc;
use crate::render::{dash, mib};
use crate::round::round2;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the sampler reads the server's RSS.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The server's memory and CPU over the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerRun {
    pub pid: u32,
    /// VmRSS just before the run, in KiB.
    pub rss_before_kb: u64,
    /// The largest VmRSS sampled (every 100 ms) from the start to the end, in KiB.
    pub max_sampled_rss_kb: u64,
    /// VmHWM at the end: the process's peak RSS since it started, in KiB.
    pub peak_rss_kb: u64,
    /// VmRSS at the end, in KiB.
    pub rss_end_kb: u64,
    /// User + system CPU seconds from the start to the end.
    pub cpu_s: Option<f64>,
    /// `cpu_s` divided by the wall time (2.0 = two cores busy).
    pub cpu_cores: Option<f64>,
}

impl ServerRun {
    /// The memory rows of a one-shot report's table (no ceiling column).
    pub fn memory_rows(&self) -> [(&'static str, String, String); 4] {
        [
            ("server RSS before", mib(self.rss_before_kb), dash()),
            (
                "server RSS max sampled",
                mib(self.max_sampled_rss_kb),
                dash(),
            ),
            ("server peak RSS (VmHWM)", mib(self.peak_rss_kb), dash()),
            ("server RSS at end", mib(self.rss_end_kb), dash()),
        ]
    }

    /// `12.00 s (1.50 cores)`, or a dash when /proc had no CPU times.
    pub fn cpu_cell(&self) -> String {
        match (self.cpu_s, self.cpu_cores) {
            (Some(t), Some(c)) => format!("{t:.2} s ({c:.2} cores)"),
            _ => dash(),
        }
    }
}

/// CPU seconds used between two readings, to the hundredth.
pub fn cpu_delta(from: Option<f64>, to: Option<f64>) -> Option<f64> {
    from.zip(to).map(|(a, b)| round2(b - a))
}

/// Samples the server's RSS until stopped; keeps the largest.
struct Sampler {
    max_rss_kb: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let max_rss_kb = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (max, halt) = (Arc::clone(&max_rss_kb), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !halt.load(Ordering::Relaxed) {
                tick.tick().await;
                if let Ok((_, rss)) = proc::memory_kb(pid) {
                    max.fetch_max(rss, Ordering::Relaxed);
                }
            }
        });
        Self {
            max_rss_kb,
            stop,
            task,
        }
    }

    /// Stops sampling (after one last sample): the largest RSS seen.
    async fn finish(self, pid: u32) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        if let Ok((_, rss)) = proc::memory_kb(pid) {
            self.max_rss_kb.fetch_max(rss, Ordering::Relaxed);
        }
        self.max_rss_kb.load(Ordering::Relaxed)
    }
}

/// The server and this tool watched from [`ServerWatch::start`] to [`ServerWatch::finish`].
pub struct ServerWatch {
    pid: u32,
    rss_before_kb: u64,
    cpu_start: Option<f64>,
    bench_cpu_start: Option<f64>,
    sampler: Sampler,
    started: Instant,
}

/// What [`ServerWatch::finish`] read.
#[derive(Debug, Clone)]
pub struct Watched {
    pub server: ServerRun,
    /// From the start to the end of the watch (before the last readings).
    pub wall: Duration,
    /// The server's CPU seconds at the start and at the end (to split the run into phases).
    pub cpu_start: Option<f64>,
    pub cpu_end: Option<f64>,
    /// CPU seconds this tool used over the watch.
    pub bench_cpu_s: Option<f64>,
}

impl ServerWatch {
    /// Reads the server's RSS and both CPU times, starts sampling; the run's clock starts here.
    pub fn start(pid: u32) -> anyhow::Result<Self> {
        let (_, rss_before_kb) = proc::memory_kb(pid)?;
        let cpu_start = proc::cpu_seconds(Some(pid));
        let bench_cpu_start = proc::cpu_seconds(None);
        let sampler = Sampler::start(pid);
        Ok(Self {
            pid,
            rss_before_kb,
            cpu_start,
            bench_cpu_start,
            sampler,
            started: Instant::now(),
        })
    }

    /// When the watch started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The server's CPU seconds so far (to mark the end of a phase).
    pub fn server_cpu(&self) -> Option<f64> {
        proc::cpu_seconds(Some(self.pid))
    }

    /// Stops sampling and takes the last readings.
    pub async fn finish(self) -> anyhow::Result<Watched> {
        let wall = self.started.elapsed();
        let pid = self.pid;
        let max_sampled_rss_kb = self.sampler.finish(pid).await;
        let (peak_rss_kb, rss_end_kb) = proc::memory_kb(pid)?;
        let cpu_end = proc::cpu_seconds(Some(pid));
        let bench_cpu_end = proc::cpu_seconds(None);
        let cpu_s = cpu_delta(self.cpu_start, cpu_end);
        let wall_s = wall.as_secs_f64();
        Ok(Watched {
            server: ServerRun {
                pid,
                rss_before_kb: self.rss_before_kb,
                max_sampled_rss_kb,
                peak_rss_kb,
                rss_end_kb,
                cpu_s,
                cpu_cores: cpu_s.map(|c| round2(c / wall_s.max(1e-9))),
            },
            wall,
            cpu_start: self.cpu_start,
            cpu_end,
            bench_cpu_s: cpu_delta(self.bench_cpu_start, bench_cpu_end),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_deltas_need_both_readings() {
        assert_eq!(cpu_delta(Some(1.0), Some(3.456)), Some(2.46));
        assert_eq!(cpu_delta(None, Some(3.0)), None);
        assert_eq!(cpu_delta(Some(1.0), None), None);
    }

    #[test]
    fn cells() {
        let mut s = ServerRun {
            rss_before_kb: 20_480,
            cpu_s: Some(12.0),
            cpu_cores: Some(1.5),
            ..ServerRun::default()
        };
        assert_eq!(s.cpu_cell(), "12.00 s (1.50 cores)");
        assert_eq!(s.memory_rows()[0].1, "20.0 MiB");
        s.cpu_cores = None;
        assert_eq!(s.cpu_cell(), "-");
    }

    #[tokio::test]
    async fn watches_this_process() -> anyhow::Result<()> {
        let watch = ServerWatch::start(std::process::id())?;
        tokio::time::sleep(Duration::from_millis(120)).await;
        let w = watch.finish().await?;
        assert!(w.wall >= Duration::from_millis(120));
        assert!(w.server.rss_before_kb > 0 && w.server.max_sampled_rss_kb > 0);
        assert!(w.server.peak_rss_kb >= w.server.rss_end_kb);
        assert!(w.server.cpu_s.is_some() && w.bench_cpu_s.is_some());
        Ok(())
    }
}
