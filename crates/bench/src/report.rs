//! The result of a run: numbers computed from merged `Stats`, rendered as a human-readable
//! table (several runs side by side) and as one line of JSON with the same numbers.

use crate::render::{Last, columns, cores, json_line, mib};
use crate::round::{ratio, round1, round3};
use crate::stats::{Stats, TransportError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Latency percentiles in milliseconds (microsecond resolution).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// Memory and CPU of the server process (`--server-pid`), read from /proc.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerUsage {
    pub pid: u32,
    /// `VmHWM`: peak resident set since the process started, in KiB.
    pub peak_rss_kb: u64,
    /// `VmRSS` at the end of the run, in KiB.
    pub rss_kb: u64,
    /// CPU time used during the measurement window divided by its length (2.0 = two cores).
    pub cpu_cores: Option<f64>,
}

/// CPU of another process over the window (`--watch-pid NAME=PID`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchedUsage {
    pub name: String,
    pub pid: u32,
    pub cpu_cores: Option<f64>,
}

/// How the load was applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunShape {
    /// `closed` (back-to-back per connection) or `open` (fixed schedule, `--rate`).
    pub mode: String,
    pub connections: usize,
    /// Requests/s asked for in open-loop mode.
    pub target_rate: Option<f64>,
    pub threads: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    #[serde(flatten)]
    pub shape: RunShape,
    /// Requests completed (answered or failed) inside the measurement window.
    pub requests: u64,
    /// 2xx answers.
    pub successes: u64,
    /// Everything else: non-2xx answers plus transport failures.
    pub errors: u64,
    /// Transport failures only (no HTTP answer).
    pub transport_errors: u64,
    pub requests_per_s: f64,
    pub successes_per_s: f64,
    pub latency_ms: Latency,
    /// Answers by HTTP status.
    pub status: BTreeMap<String, u64>,
    /// Non-2xx answers by problem `code`.
    pub codes: BTreeMap<String, u64>,
    /// Transport failures by kind (`connect`, `io`, `timeout`); only non-zero kinds.
    pub transport: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerUsage>,
    /// CPU used by this tool during the window (it competes with the server for the cores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bench_cpu_cores: Option<f64>,
    /// Other processes' CPU over the window (`--watch-pid`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watched: Vec<WatchedUsage>,
    /// The healthz ceiling run right after (`--compare-healthz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<Box<Report>>,
    /// `requests_per_s` of this run divided by the ceiling's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rps_ratio: Option<f64>,
    /// A bare axum hello-world on `/healthz` (a child process of this tool), measured the
    /// same way in the same run (`--compare-bare-axum`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bare_axum: Option<Box<Report>>,
    /// `requests_per_s` of this run divided by the bare axum ceiling's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bare_axum_ratio: Option<f64>,
    /// HTTP requests per counted request when one "request" is a chain (`lock-redeem`: 2).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub requests_per_op: u32,
    /// The workload ran out before the end of `--duration`; `duration_s` is the window that
    /// ran.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exhausted: bool,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

fn ms(us: u64) -> f64 {
    round3(us as f64 / 1000.0)
}

impl Report {
    pub fn new(scenario: &str, shape: RunShape, stats: &Stats) -> Self {
        let h = &stats.latency;
        let latency_ms = if h.is_empty() {
            Latency::default()
        } else {
            Latency {
                mean: round3(h.mean() / 1000.0),
                p50: ms(h.value_at_quantile(0.5)),
                p90: ms(h.value_at_quantile(0.9)),
                p99: ms(h.value_at_quantile(0.99)),
                p999: ms(h.value_at_quantile(0.999)),
                max: ms(h.max()),
            }
        };
        let secs = shape.duration_s.max(1e-9);
        let status = stats
            .status
            .iter()
            .map(|(s, n)| (s.to_string(), *n))
            .collect();
        let codes = stats
            .codes
            .iter()
            .map(|(c, n)| (c.to_string(), *n))
            .collect();
        let transport = TransportError::ALL
            .iter()
            .zip(stats.transport)
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k.as_str().to_owned(), n))
            .collect();
        Self {
            scenario: scenario.to_owned(),
            requests: stats.requests,
            successes: stats.successes,
            errors: stats.errors,
            transport_errors: stats.transport_errors(),
            requests_per_s: round1(stats.requests as f64 / secs),
            successes_per_s: round1(stats.successes as f64 / secs),
            latency_ms,
            status,
            codes,
            transport,
            server: None,
            bench_cpu_cores: None,
            watched: Vec::new(),
            ceiling: None,
            rps_ratio: None,
            bare_axum: None,
            bare_axum_ratio: None,
            requests_per_op: 1,
            exhausted: false,
            shape,
        }
    }

    /// Attaches the healthz ceiling and the throughput ratio.
    pub fn with_ceiling(mut self, ceiling: Report) -> Self {
        self.rps_ratio = ratio(self.requests_per_s, ceiling.requests_per_s);
        self.ceiling = Some(Box::new(ceiling));
        self
    }

    /// Attaches the bare axum ceiling and the throughput ratio.
    pub fn with_bare_axum(mut self, bare: Report) -> Self {
        self.bare_axum_ratio = ratio(self.requests_per_s, bare.requests_per_s);
        self.bare_axum = Some(Box::new(bare));
        self
    }

    /// The one-line JSON summary.
    pub fn to_json_line(&self) -> String {
        json_line(self)
    }

    /// A table with this run and, when present, its ceiling side by side.
    pub fn to_table(&self) -> String {
        let mut runs = vec![self];
        if let Some(c) = &self.ceiling {
            runs.push(c);
        }
        if let Some(b) = &self.bare_axum {
            runs.push(b);
        }
        let mut out = render_table(&runs);
        for r in &runs {
            if r.requests_per_op > 1 {
                let _ = writeln!(
                    out,
                    "note: one {} request is a chain of {} HTTP requests timed together \
                     (its latency is the chain's)",
                    r.scenario, r.requests_per_op
                );
            }
            if r.exhausted {
                let _ = writeln!(
                    out,
                    "warning: {} ran out of work after {:.2} s of the window: its rates are \
                     over those {:.2} s (give the setup more work for a full window)",
                    r.scenario, r.shape.duration_s, r.shape.duration_s
                );
            }
            if let Some(rate) = r.shape.target_rate
                && r.requests_per_s < rate * 0.95
            {
                let _ = writeln!(
                    out,
                    "warning: {} reached {:.1} of the {rate} requests/s asked for: the server \
                     (or this tool) is saturated and latencies include the queueing",
                    r.scenario, r.requests_per_s
                );
            }
        }
        if let (Some(r), Some(c)) = (self.rps_ratio, &self.ceiling) {
            let _ = writeln!(
                out,
                "{} reaches {:.1}% of the {} ceiling ({:.1} / {:.1} requests/s)",
                self.scenario,
                r * 100.0,
                c.scenario,
                self.requests_per_s,
                c.requests_per_s
            );
        }
        if let (Some(r), Some(b)) = (self.bare_axum_ratio, &self.bare_axum) {
            let _ = writeln!(
                out,
                "{} reaches {:.1}% of a bare axum server ({:.1} / {:.1} requests/s)",
                self.scenario,
                r * 100.0,
                self.requests_per_s,
                b.requests_per_s
            );
        }
        out
    }
}

/// Renders runs as columns.
pub fn render_table(runs: &[&Report]) -> String {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, f: &dyn Fn(&Report) -> String| {
        rows.push((name.to_owned(), runs.iter().map(|r| f(r)).collect()));
    };
    row("scenario", &|r| r.scenario.clone());
    row("mode", &|r| match r.shape.target_rate {
        Some(rate) => format!(
            "open {rate}/s, {} conn, {} thr",
            r.shape.connections, r.shape.threads
        ),
        None => format!(
            "closed, {} conn, {} thr",
            r.shape.connections, r.shape.threads
        ),
    });
    row("window", &|r| {
        format!("{}s (+{}s warmup)", r.shape.duration_s, r.shape.warmup_s)
    });
    row("requests", &|r| r.requests.to_string());
    row("requests/s", &|r| format!("{:.1}", r.requests_per_s));
    row("successes/s", &|r| format!("{:.1}", r.successes_per_s));
    row("errors", &|r| {
        format!("{} ({} transport)", r.errors, r.transport_errors)
    });
    row("latency mean", &|r| format!("{:.3} ms", r.latency_ms.mean));
    row("latency p50", &|r| format!("{:.3} ms", r.latency_ms.p50));
    row("latency p90", &|r| format!("{:.3} ms", r.latency_ms.p90));
    row("latency p99", &|r| format!("{:.3} ms", r.latency_ms.p99));
    row("latency p99.9", &|r| format!("{:.3} ms", r.latency_ms.p999));
    row("latency max", &|r| format!("{:.3} ms", r.latency_ms.max));
    if runs.iter().any(|r| r.server.is_some()) {
        row("server peak RSS", &|r| {
            r.server
                .as_ref()
                .map_or_else(|| "-".into(), |s| mib(s.peak_rss_kb))
        });
        row("server RSS", &|r| {
            r.server
                .as_ref()
                .map_or_else(|| "-".into(), |s| mib(s.rss_kb))
        });
        row("server CPU", &|r| {
            cores(r.server.as_ref().and_then(|s| s.cpu_cores))
        });
    }
    if runs.iter().any(|r| r.bench_cpu_cores.is_some()) {
        row("bench CPU", &|r| cores(r.bench_cpu_cores));
    }
    let mut names: Vec<&str> = Vec::new();
    for r in runs {
        for w in &r.watched {
            if !names.contains(&w.name.as_str()) {
                names.push(&w.name);
            }
        }
    }
    for name in names {
        row(&format!("{name} CPU"), &|r| {
            cores(
                r.watched
                    .iter()
                    .find(|w| w.name == name)
                    .and_then(|w| w.cpu_cores),
            )
        });
    }
    // Counts by key: a row for every key any run has (0 in the runs without it).
    type Counts = fn(&Report) -> &BTreeMap<String, u64>;
    let counts: [(&str, Counts); 3] = [
        ("status", |r| &r.status),
        ("code", |r| &r.codes),
        ("transport", |r| &r.transport),
    ];
    for (label, of) in counts {
        let mut keys: Vec<&String> = runs.iter().flat_map(|r| of(r).keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            row(&format!("{label} {k}"), &|r| {
                of(r).get(k).copied().unwrap_or(0).to_string()
            });
        }
    }
    columns(&rows, Last::Aligned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn shape() -> RunShape {
        RunShape {
            mode: "closed".into(),
            connections: 4,
            target_rate: None,
            threads: 1,
            warmup_s: 0.0,
            duration_s: 2.0,
        }
    }

    fn sample() -> anyhow::Result<Stats> {
        let mut s = Stats::new()?;
        // 1..=1000 ms, one each: p50 = 500 ms, p99 = 990 ms, p99.9 = 999 ms, max = 1000 ms.
        for i in 1..=1000u64 {
            let status = if i % 4 == 0 { 409 } else { 201 };
            s.record_response(
                Duration::from_millis(i),
                status,
                br#"{"status":409,"code":"SOLD_OUT"}"#,
            );
        }
        s.record_transport_error(TransportError::Io);
        s.record_transport_error(TransportError::Io);
        Ok(s)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b * 0.002
    }

    #[test]
    fn percentiles_and_rates() -> anyhow::Result<()> {
        let r = Report::new("claim", shape(), &sample()?);
        assert_eq!(r.requests, 1002);
        assert_eq!(r.successes, 750);
        assert_eq!(r.errors, 252);
        assert_eq!(r.transport_errors, 2);
        assert_eq!(r.successes + r.errors, r.requests);
        assert!(close(r.latency_ms.p50, 500.0), "{:?}", r.latency_ms);
        assert!(close(r.latency_ms.p90, 900.0), "{:?}", r.latency_ms);
        assert!(close(r.latency_ms.p99, 990.0), "{:?}", r.latency_ms);
        assert!(close(r.latency_ms.p999, 999.0), "{:?}", r.latency_ms);
        assert!(close(r.latency_ms.max, 1000.0), "{:?}", r.latency_ms);
        assert!(close(r.latency_ms.mean, 500.5), "{:?}", r.latency_ms);
        assert_eq!(r.requests_per_s, 501.0);
        assert_eq!(r.successes_per_s, 375.0);
        assert_eq!(r.status.get("201"), Some(&750));
        assert_eq!(r.status.get("409"), Some(&250));
        assert_eq!(r.codes.get("SOLD_OUT"), Some(&250));
        assert_eq!(r.transport.get("io"), Some(&2));
        assert!(!r.transport.contains_key("timeout"));
        Ok(())
    }

    #[test]
    fn open_loop_below_target_warns() -> anyhow::Result<()> {
        let mut sh = shape();
        sh.mode = "open".into();
        sh.target_rate = Some(1000.0);
        let r = Report::new("claim", sh, &sample()?);
        let table = r.to_table();
        assert!(table.contains("open 1000/s"), "{table}");
        assert!(table.contains("warning: claim reached 501.0"), "{table}");
        Ok(())
    }

    #[test]
    fn empty_run_reports_zeros() -> anyhow::Result<()> {
        let r = Report::new("healthz", shape(), &Stats::new()?);
        assert_eq!(r.requests, 0);
        assert_eq!(r.latency_ms, Latency::default());
        assert!(r.to_table().contains("requests/s"));
        Ok(())
    }

    #[test]
    fn json_line_has_the_same_numbers() -> anyhow::Result<()> {
        let mut r = Report::new("claim", shape(), &sample()?);
        r.server = Some(ServerUsage {
            pid: 7,
            peak_rss_kb: 2048,
            rss_kb: 1024,
            cpu_cores: Some(1.5),
        });
        let mut hs = Stats::new()?;
        for _ in 0..2004 {
            hs.record_response(Duration::from_micros(50), 200, b"ok");
        }
        let r = r.with_ceiling(Report::new("healthz", shape(), &hs));
        assert_eq!(r.rps_ratio, Some(0.5));

        let line = r.to_json_line();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line)?;
        assert_eq!(v["scenario"], "claim");
        assert_eq!(v["mode"], "closed");
        assert_eq!(v["connections"], 4);
        assert_eq!(v["requests"], 1002);
        assert_eq!(v["successes"], 750);
        assert_eq!(v["errors"], 252);
        assert_eq!(v["requests_per_s"], 501.0);
        assert_eq!(v["status"]["409"], 250);
        assert_eq!(v["codes"]["SOLD_OUT"], 250);
        assert_eq!(v["server"]["peak_rss_kb"], 2048);
        assert_eq!(v["ceiling"]["scenario"], "healthz");
        assert_eq!(v["ceiling"]["requests_per_s"], 1002.0);
        assert_eq!(v["rps_ratio"], 0.5);
        assert_eq!(v["latency_ms"]["p50"].as_f64(), Some(r.latency_ms.p50));
        // It parses back into the same report.
        let back: Report = serde_json::from_str(&line)?;
        assert_eq!(back, r);

        let table = r.to_table();
        for needle in [
            "requests/s",
            "501.0",
            "1002.0",
            "code SOLD_OUT",
            "status 409",
            "server peak RSS",
            "2.0 MiB",
            "50.0% of the healthz ceiling",
        ] {
            assert!(table.contains(needle), "{needle} missing from\n{table}");
        }
        Ok(())
    }
}
