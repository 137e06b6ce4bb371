//! The distribution's report: the upload and the task's timings, the server's memory and
//! CPU, and the insert ceiling next to it, as a table and one line of JSON.

use crate::insert_ceiling::CeilingReport;
use crate::render::{cpu_secs, dash, json_line, secs3, two_columns};
use crate::server_run::ServerRun;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistributionReport {
    pub scenario: String,
    pub task_id: String,
    /// The task's final status.
    pub status: String,
    /// `csv` or `xlsx`, as the server decided from the content.
    pub format: String,
    /// The task's `total_rows`.
    pub rows: u64,
    pub file_bytes: u64,
    /// From the first byte of the upload to its 202.
    pub upload_s: f64,
    /// From the first byte of the upload to the poll that saw the task finished.
    pub wall_s: f64,
    /// `rows / wall_s`.
    pub rows_per_s: f64,
    /// The task's `created_at` → `started_at` (server clock): waiting for the runner's poll.
    pub queue_s: Option<f64>,
    /// The task's `started_at` → `finished_at` (server clock).
    pub processing_s: Option<f64>,
    pub processed_rows: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub failure_reason: Option<String>,
    pub server: ServerRun,
    /// CPU seconds this tool used from the upload to the end.
    pub bench_cpu_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<CeilingReport>,
    /// `rows_per_s` divided by the ceiling's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling_ratio: Option<f64>,
}

impl DistributionReport {
    /// The one-line JSON summary.
    pub fn to_json_line(&self) -> String {
        json_line(self)
    }

    /// The distribution and, when measured, its ceiling side by side.
    pub fn to_table(&self) -> String {
        let c = self.ceiling.as_ref();
        let mut rows: Vec<(&str, String, String)> = vec![
            (
                "scenario",
                "distribution".into(),
                c.map_or_else(dash, CeilingReport::title),
            ),
            ("status", self.status.clone(), dash()),
            ("format", self.format.clone(), dash()),
            (
                "rows",
                self.rows.to_string(),
                c.map_or_else(dash, |c| c.rows.to_string()),
            ),
            (
                "file",
                format!(
                    "{:.1} MiB ({} B)",
                    self.file_bytes as f64 / 1_048_576.0,
                    self.file_bytes
                ),
                dash(),
            ),
            ("upload", secs3(Some(self.upload_s)), dash()),
            (
                "wall (upload → done)",
                secs3(Some(self.wall_s)),
                c.map_or_else(dash, |c| secs3(Some(c.seconds))),
            ),
            ("  queued (server)", secs3(self.queue_s), dash()),
            ("  processing (server)", secs3(self.processing_s), dash()),
            (
                "rows/s",
                format!("{:.0}", self.rows_per_s),
                c.map_or_else(dash, |c| format!("{:.0}", c.rows_per_s)),
            ),
            ("succeeded", self.succeeded.to_string(), dash()),
            ("failed", self.failed.to_string(), dash()),
        ];
        rows.extend(self.server.memory_rows());
        rows.extend([
            ("server CPU", self.server.cpu_cell(), dash()),
            ("bench CPU", cpu_secs(self.bench_cpu_s), dash()),
        ]);
        if let Some(c) = c {
            rows.extend(c.own_rows());
        }
        if let Some(r) = &self.failure_reason {
            rows.push(("failure reason", r.clone(), dash()));
        }
        let mut out = two_columns(&rows, c.is_some());
        if let (Some(r), Some(c)) = (self.ceiling_ratio, c) {
            let _ = writeln!(
                out,
                "distribution reaches {:.1}% of the {} insert ceiling ({:.0} / {:.0} rows/s)",
                r * 100.0,
                c.backend,
                self.rows_per_s,
                c.rows_per_s
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DistributionReport {
        DistributionReport {
            scenario: "distribution".into(),
            task_id: "7".into(),
            status: "completed".into(),
            format: "csv".into(),
            rows: 1_000_000,
            file_bytes: 7_888_898,
            upload_s: 0.25,
            wall_s: 8.0,
            rows_per_s: 125_000.0,
            queue_s: Some(0.2),
            processing_s: Some(7.5),
            processed_rows: 1_000_000,
            succeeded: 1_000_000,
            failed: 0,
            failure_reason: None,
            server: ServerRun {
                pid: 1,
                rss_before_kb: 20_480,
                max_sampled_rss_kb: 102_400,
                peak_rss_kb: 110_592,
                rss_end_kb: 51_200,
                cpu_s: Some(12.0),
                cpu_cores: Some(1.5),
            },
            bench_cpu_s: Some(0.1),
            ceiling: Some(CeilingReport {
                backend: "sqlite".into(),
                target: "/tmp/c/ceiling.db".into(),
                shape: "1 connection".into(),
                rows: 1_000_000,
                seconds: 4.0,
                rows_per_s: 250_000.0,
            }),
            ceiling_ratio: Some(0.5),
        }
    }

    #[test]
    fn table_and_json_carry_the_numbers() -> anyhow::Result<()> {
        let r = sample();
        let table = r.to_table();
        for needle in [
            "sqlite insert ceiling",
            "125000",
            "250000",
            "8.000 s",
            "4.000 s",
            "100.0 MiB",
            "108.0 MiB",
            "12.00 s (1.50 cores)",
            "7.5 MiB (7888898 B)",
            "50.0% of the sqlite insert ceiling",
        ] {
            assert!(table.contains(needle), "{needle} missing from\n{table}");
        }
        let line = r.to_json_line();
        assert!(!line.contains('\n'));
        let back: DistributionReport = serde_json::from_str(&line)?;
        assert_eq!(back, r);
        let v: serde_json::Value = serde_json::from_str(&line)?;
        assert_eq!(v["rows_per_s"], 125_000.0);
        assert_eq!(v["server"]["peak_rss_kb"], 110_592);
        assert_eq!(v["ceiling"]["rows_per_s"], 250_000.0);
        Ok(())
    }

    #[test]
    fn table_without_ceiling_has_one_column() {
        let mut r = sample();
        r.ceiling = None;
        r.ceiling_ratio = None;
        let table = r.to_table();
        assert!(!table.contains("ceiling"), "{table}");
        assert!(table.lines().all(|l| !l.ends_with(' ')), "{table}");
    }
}
