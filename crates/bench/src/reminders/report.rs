//! The reminders' report: the seeding, the delivery as the sink counted it, the server's
//! memory and CPU, and the insert ceiling next to it, as a table and one line of JSON.

use crate::insert_ceiling::CeilingReport;
use crate::render::{cpu_secs, dash, json_line, secs3, two_columns};
use crate::server_run::ServerRun;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Percentiles of the lag from `remind_at` to receipt, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LagMs {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemindersReport {
    pub scenario: String,
    pub template_id: String,
    /// Reminders asked for (one user each).
    pub reminders: u64,
    /// PUTs answered 2xx.
    pub accepted: u64,
    /// PUTs refused because the due time had passed.
    pub rejected_too_late: u64,
    /// PUTs skipped after the first "too late".
    pub not_sent: u64,
    pub seeding_s: f64,
    /// `accepted / seeding_s`.
    pub seeding_per_s: f64,
    /// PUTs answered 429/503 and tried again.
    pub seeding_retries: u64,
    /// `claim_start − 60 min`.
    pub due_at: Timestamp,
    /// Due time − end of the seeding; negative when the seeding ran past the due time.
    pub seeding_slack_s: f64,
    /// Distinct reminders of this run received.
    pub delivered: u64,
    /// Reminders of this run received, duplicates included.
    pub received: u64,
    pub duplicates: u64,
    /// Reminders of other templates (left over from earlier runs).
    pub foreign: u64,
    pub posts: u64,
    pub bad_posts: u64,
    pub unsigned_posts: u64,
    /// Received before their `remind_at`.
    pub early: u64,
    pub bad_remind_at: u64,
    pub first_delivery_after_due_s: Option<f64>,
    /// Due time → receipt of the last new reminder: the headline number.
    pub due_to_last_delivery_s: Option<f64>,
    /// First → last new reminder.
    pub delivery_window_s: Option<f64>,
    /// `delivered / delivery_window_s`.
    pub deliveries_per_s: Option<f64>,
    pub lag_ms: Option<LagMs>,
    /// The wait ended at `--timeout` with reminders missing.
    pub timed_out: bool,
    /// From the start of the seeding to the end of the wait.
    pub server: ServerRun,
    pub server_cpu_seeding_s: Option<f64>,
    /// From the end of the seeding to the end of the wait.
    pub server_cpu_delivery_s: Option<f64>,
    pub bench_cpu_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<CeilingReport>,
    /// `deliveries_per_s` divided by the ceiling's rows/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling_ratio: Option<f64>,
}

impl RemindersReport {
    pub fn all_delivered(&self) -> bool {
        self.delivered >= self.reminders
    }

    /// The one-line JSON summary.
    pub fn to_json_line(&self) -> String {
        json_line(self)
    }

    /// The delivery and, when measured, the insert ceiling side by side.
    pub fn to_table(&self) -> String {
        let c = self.ceiling.as_ref();
        let mut rows: Vec<(&str, String, String)> = vec![
            (
                "scenario",
                "reminders (webhook)".into(),
                c.map_or_else(dash, CeilingReport::title),
            ),
            (
                "reminders",
                self.reminders.to_string(),
                c.map_or_else(dash, |c| c.rows.to_string()),
            ),
            ("accepted (PUT 2xx)", self.accepted.to_string(), dash()),
        ];
        if self.rejected_too_late + self.not_sent > 0 {
            rows.push((
                "refused too late / not sent",
                format!("{} / {}", self.rejected_too_late, self.not_sent),
                dash(),
            ));
        }
        rows.extend([
            ("seeding", secs3(Some(self.seeding_s)), dash()),
            (
                "seeding rate",
                format!("{:.0}/s", self.seeding_per_s),
                dash(),
            ),
            (
                "seeding retries (429/503)",
                self.seeding_retries.to_string(),
                dash(),
            ),
            ("due at", self.due_at.to_string(), dash()),
            (
                "seeding slack (due − end)",
                format!("{:+.3} s", self.seeding_slack_s),
                dash(),
            ),
            ("delivered (distinct)", self.delivered.to_string(), dash()),
            (
                "first delivery after due",
                secs3(self.first_delivery_after_due_s),
                dash(),
            ),
            (
                "due → last delivery (≤ 30 s for 1M)",
                secs3(self.due_to_last_delivery_s),
                c.map_or_else(dash, |c| secs3(Some(c.seconds))),
            ),
            (
                "delivery window (first → last)",
                secs3(self.delivery_window_s),
                dash(),
            ),
            (
                "deliveries/s",
                self.deliveries_per_s
                    .map_or_else(dash, |r| format!("{r:.0}")),
                c.map_or_else(dash, |c| format!("{:.0} rows/s", c.rows_per_s)),
            ),
            ("duplicates", self.duplicates.to_string(), dash()),
            (
                "received (with duplicates)",
                self.received.to_string(),
                dash(),
            ),
            (
                "webhook POSTs (bad / unsigned)",
                format!(
                    "{} ({} / {})",
                    self.posts, self.bad_posts, self.unsigned_posts
                ),
                dash(),
            ),
            (
                "lag p50 / p99 / max",
                self.lag_ms
                    .as_ref()
                    .map_or_else(dash, |l| format!("{} / {} / {} ms", l.p50, l.p99, l.max)),
                dash(),
            ),
        ]);
        if self.early > 0 {
            rows.push(("early (before remind_at)", self.early.to_string(), dash()));
        }
        if self.bad_remind_at > 0 {
            rows.push((
                "unreadable remind_at",
                self.bad_remind_at.to_string(),
                dash(),
            ));
        }
        if self.foreign > 0 {
            rows.push((
                "other templates' reminders",
                self.foreign.to_string(),
                dash(),
            ));
        }
        rows.extend(self.server.memory_rows());
        rows.extend([
            (
                "server CPU seeding",
                cpu_secs(self.server_cpu_seeding_s),
                dash(),
            ),
            (
                "server CPU delivery",
                cpu_secs(self.server_cpu_delivery_s),
                dash(),
            ),
            ("server CPU total", self.server.cpu_cell(), dash()),
            ("bench CPU", cpu_secs(self.bench_cpu_s), dash()),
        ]);
        if let Some(c) = c {
            rows.extend(c.own_rows());
        }
        let mut out = two_columns(&rows, c.is_some());
        if self.seeding_slack_s < 0.0 {
            let _ = writeln!(
                out,
                "note: the seeding ended {:.1} s after the due time (raise --lead); \
                 the delivery numbers still count from the due time",
                -self.seeding_slack_s
            );
        }
        if self.timed_out {
            let _ = writeln!(
                out,
                "timed out: {} of {} reminders delivered",
                self.delivered, self.reminders
            );
        }
        if let (Some(r), Some(c), Some(d)) = (self.ceiling_ratio, c, self.deliveries_per_s) {
            let _ = writeln!(
                out,
                "deliveries reach {:.1}% of the {} insert ceiling ({d:.0} / {:.0} per s)",
                r * 100.0,
                c.backend,
                c.rows_per_s
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn sample() -> anyhow::Result<RemindersReport> {
        Ok(RemindersReport {
            scenario: "reminders".into(),
            template_id: "9".into(),
            reminders: 1_000_000,
            accepted: 1_000_000,
            rejected_too_late: 0,
            not_sent: 0,
            seeding_s: 40.0,
            seeding_per_s: 25_000.0,
            seeding_retries: 0,
            due_at: "2030-01-01T00:00:00Z".parse()?,
            seeding_slack_s: 110.0,
            delivered: 1_000_000,
            received: 1_000_010,
            duplicates: 10,
            foreign: 0,
            posts: 2_001,
            bad_posts: 0,
            unsigned_posts: 0,
            early: 0,
            bad_remind_at: 0,
            first_delivery_after_due_s: Some(0.2),
            due_to_last_delivery_s: Some(20.2),
            delivery_window_s: Some(20.0),
            deliveries_per_s: Some(50_000.0),
            lag_ms: Some(LagMs {
                p50: 10_000,
                p99: 19_800,
                max: 20_100,
            }),
            timed_out: false,
            server: ServerRun {
                pid: 1,
                rss_before_kb: 20_480,
                max_sampled_rss_kb: 102_400,
                peak_rss_kb: 110_592,
                rss_end_kb: 51_200,
                cpu_s: Some(12.0),
                cpu_cores: Some(0.2),
            },
            server_cpu_seeding_s: Some(8.0),
            server_cpu_delivery_s: Some(4.0),
            bench_cpu_s: Some(3.0),
            ceiling: Some(CeilingReport {
                backend: "sqlite".into(),
                target: "/tmp/c/ceiling.db".into(),
                shape: "1 connection".into(),
                rows: 1_000_000,
                seconds: 4.0,
                rows_per_s: 250_000.0,
            }),
            ceiling_ratio: Some(0.2),
        })
    }

    #[test]
    fn table_and_json_carry_the_numbers() -> anyhow::Result<()> {
        let r = sample()?;
        assert!(r.all_delivered());
        let table = r.to_table();
        for needle in [
            "sqlite insert ceiling",
            "25000/s",
            "20.200 s",
            "50000",
            "250000 rows/s",
            "10000 / 19800 / 20100 ms",
            "+110.000 s",
            "108.0 MiB",
            "2001 (0 / 0)",
            "20.0% of the sqlite insert ceiling",
        ] {
            assert!(table.contains(needle), "{needle} missing from\n{table}");
        }
        assert!(!table.contains("note:"), "{table}");
        let line = r.to_json_line();
        assert!(!line.contains('\n'));
        let back: RemindersReport = serde_json::from_str(&line)?;
        assert_eq!(back, r);
        let v: Value = serde_json::from_str(&line)?;
        assert_eq!(v["due_to_last_delivery_s"], 20.2);
        assert_eq!(v["due_at"], "2030-01-01T00:00:00Z");
        assert_eq!(v["lag_ms"]["p99"], 19_800);
        Ok(())
    }

    #[test]
    fn a_late_seeding_and_a_timeout_are_said() -> anyhow::Result<()> {
        let mut r = sample()?;
        r.ceiling = None;
        r.ceiling_ratio = None;
        r.seeding_slack_s = -3.5;
        r.rejected_too_late = 3;
        r.not_sent = 400;
        r.accepted = 999_597;
        r.delivered = 999_597;
        r.timed_out = true;
        assert!(!r.all_delivered());
        let table = r.to_table();
        assert!(table.contains("3.5 s after the due time"), "{table}");
        assert!(table.contains("3 / 400"), "{table}");
        assert!(table.contains("999597 of 1000000"), "{table}");
        assert!(!table.contains("ceiling"), "{table}");
        assert!(table.lines().all(|l| !l.ends_with(' ')), "{table}");
        Ok(())
    }
}
