//! The `distribution` scenario: one bulk upload of a file of user ids, timed from the first
//! byte of the upload to the task's `completed`, with the server's memory and CPU over the
//! run, then (optionally) the bulk-insert ceiling of the same database for comparison.
//!
//! 1. The file: `--file`, or `stampede gen users` run with `--stampede-bin` into the temp
//!    directory (removed afterwards).
//! 2. A merchant token signed with the server's secret, and a template with `--stock` coupons,
//!    one per user.
//! 3. The upload (`multipart/form-data`, held in memory), then `GET` on the task every
//!    `--poll-interval` until it is `completed`, `failed` or `canceled`. A sampler reads the
//!    server's RSS every 100 ms from the upload on (VmHWM alone is the process's lifetime
//!    peak, so the RSS before the upload and the largest sample are reported too).
//! 4. The ceiling (`insert_ceiling`), only after a completed task.

use crate::auth::Tokens;
use crate::client::Target;
use crate::insert_ceiling::{self, Ceiling, CeilingReport};
use crate::multipart::Form;
use crate::proc;
use crate::render::{cpu_secs, dash, json_line, mib, secs3, two_columns};
use crate::round::{per_second, round3, secs_between};
use crate::server_run::{ServerRun, ServerWatch};
use crate::setup::{create_template, open_window};
use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;
use stampede_domain::ids::ShopId;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The file format asked of `stampede gen users`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FileFormat {
    Csv,
    Xlsx,
}

impl FileFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Xlsx => "xlsx",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            FileFormat::Csv => "text/csv",
            FileFormat::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        }
    }
}

#[derive(Debug, Clone)]
pub struct DistributionOptions {
    /// Rows of the generated file (ignored with `file`).
    pub rows: u64,
    pub format: FileFormat,
    /// An existing file to upload instead of generating one.
    pub file: Option<PathBuf>,
    /// The `stampede` binary that generates the file.
    pub stampede_bin: PathBuf,
    /// The template's stock (default: `rows`).
    pub stock: Option<u64>,
    pub shop_id: ShopId,
    pub server_pid: u32,
    pub ceiling: Option<Ceiling>,
    pub poll_interval: Duration,
    /// Give up when the task is not finished this long after the upload started.
    pub timeout: Duration,
}

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

/// The task fields the scenario reads.
#[derive(Debug, Clone, Deserialize)]
struct TaskView {
    id: String,
    status: String,
    total_rows: u64,
    processed_rows: u64,
    succeeded: u64,
    failed: u64,
    created_at: Option<Timestamp>,
    started_at: Option<Timestamp>,
    finished_at: Option<Timestamp>,
    failure_reason: Option<String>,
    file_format: Option<String>,
}

impl TaskView {
    fn finished(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed" | "canceled")
    }
}

/// Removes a generated file when dropped.
struct Generated(Option<PathBuf>);

impl Drop for Generated {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Runs `stampede gen users` into the temp directory.
fn generate(opts: &DistributionOptions) -> anyhow::Result<Generated> {
    let out = std::env::temp_dir().join(format!(
        "stampede-bench-users-{}-{}.{}",
        opts.rows,
        std::process::id(),
        opts.format.as_str()
    ));
    eprintln!(
        "generating {} rows of {} with {} ...",
        opts.rows,
        opts.format.as_str(),
        opts.stampede_bin.display()
    );
    let started = Instant::now();
    let status = Command::new(&opts.stampede_bin)
        .args(["gen", "users", "--rows", &opts.rows.to_string()])
        .args(["--format", opts.format.as_str(), "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .with_context(|| {
            format!(
                "running {} (--stampede-bin, or --file to upload an existing file)",
                opts.stampede_bin.display()
            )
        })?;
    let generated = Generated(Some(out));
    if !status.success() {
        bail!("`stampede gen users` failed: {status}");
    }
    eprintln!("generated in {:.2} s", started.elapsed().as_secs_f64());
    Ok(generated)
}

/// Runs the scenario against `target` (the server's JWT secret in `secret`).
pub async fn run(
    target: &Target,
    secret: &[u8],
    opts: &DistributionOptions,
) -> anyhow::Result<DistributionReport> {
    let pid = opts.server_pid;
    proc::check_server_pid(pid)?;

    // 1. The file.
    let (_generated, path): (Generated, PathBuf) = match &opts.file {
        Some(p) => (Generated(None), p.clone()),
        None => {
            let g = generate(opts)?;
            let p = g.0.clone().unwrap_or_default();
            (g, p)
        }
    };
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let format = guess_format(&bytes, opts.format);
    eprintln!(
        "file: {} ({:.1} MiB, {} bytes)",
        path.display(),
        bytes.len() as f64 / 1_048_576.0,
        bytes.len()
    );

    // 2. The merchant and the template.
    let merchant = Tokens::new(secret).merchant("bench", opts.shop_id)?;
    let mut conn = target.connect().await?;
    let (start, end) = open_window(24);
    let stock = opts.stock.unwrap_or(opts.rows);
    let template_id = create_template(
        target,
        &mut conn,
        &merchant,
        &json!({
            "name": "bench distribution",
            "kind": "fixed",
            "amount_off": 100,
            "stock_total": stock,
            "claim_start": start,
            "claim_end": end,
            "validity_hours": 24,
            "per_user_limit": 1,
        }),
    )
    .await
    .context("creating the template")?;
    eprintln!("template {template_id}: stock {stock}, per-user limit 1");

    // 3. Upload and poll.
    let file_name = path
        .file_name()
        .map_or_else(|| "users".into(), |n| n.to_string_lossy().into_owned());
    let form = Form::default()
        .text("template_id", &template_id)
        .text("name", &format!("bench {file_name}"))
        .file("file", &file_name, format.content_type(), &bytes);
    let content_type = HeaderValue::from_str(&form.content_type()).context("content type")?;
    let body = form.finish();
    let file_bytes = bytes.len() as u64;
    drop(bytes);

    let watch = ServerWatch::start(pid)?;
    let started = watch.started();

    let uri = target.uri("/api/v1/merchant/distributions")?;
    let mut req = target.request(Method::POST, uri, Some(&merchant), Full::new(body));
    req.headers_mut().insert(CONTENT_TYPE, content_type);
    conn.ready().await.context("connection closed")?;
    let sent = async {
        let resp = conn.send_request(req).await.context("the upload failed")?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .context("reading the upload's answer")?
            .to_bytes();
        anyhow::Ok((status, body))
    };
    let (status, answer) = tokio::time::timeout(opts.timeout, sent)
        .await
        .context("the upload timed out")??;
    let upload = started.elapsed();
    if status.as_u16() != 202 {
        bail!(
            "the upload was answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let mut task: TaskView =
        serde_json::from_slice(&answer).context("the upload's answer is not a task")?;
    eprintln!(
        "uploaded in {:.3} s: task {} ({} rows, {})",
        upload.as_secs_f64(),
        task.id,
        task.total_rows,
        task.status
    );

    let task_path = format!("/api/v1/merchant/distributions/{}", task.id);
    let mut tick = tokio::time::interval(opts.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_note = Instant::now();
    while !task.finished() {
        if started.elapsed() > opts.timeout {
            bail!(
                "task {} not finished after {:?}: {} ({} of {} rows)",
                task.id,
                opts.timeout,
                task.status,
                task.processed_rows,
                task.total_rows
            );
        }
        tick.tick().await;
        let (status, bytes) = target
            .send_json(&mut conn, Method::GET, &task_path, Some(&merchant), None)
            .await?;
        if !status.is_success() {
            bail!("{task_path}: {status} {}", String::from_utf8_lossy(&bytes));
        }
        task = serde_json::from_slice(&bytes).context("the task is not JSON")?;
        if last_note.elapsed() >= Duration::from_secs(1) {
            last_note = Instant::now();
            eprintln!(
                "  {:>6.1} s  {:<9} {:>9}/{} rows  server RSS {}",
                started.elapsed().as_secs_f64(),
                task.status,
                task.processed_rows,
                task.total_rows,
                mib(proc::rss_kb(pid))
            );
        }
    }
    let watched = watch.finish().await?;
    let wall_s = watched.wall.as_secs_f64();
    eprintln!(
        "task {} {} after {:.3} s: {} succeeded, {} failed",
        task.id, task.status, wall_s, task.succeeded, task.failed
    );

    let mut report = DistributionReport {
        scenario: "distribution".into(),
        task_id: task.id.clone(),
        status: task.status.clone(),
        format: task
            .file_format
            .clone()
            .unwrap_or_else(|| format.as_str().to_owned()),
        rows: task.total_rows,
        file_bytes,
        upload_s: round3(upload.as_secs_f64()),
        wall_s: round3(wall_s),
        rows_per_s: per_second(task.total_rows, wall_s),
        queue_s: secs_between(task.created_at, task.started_at),
        processing_s: secs_between(task.started_at, task.finished_at),
        processed_rows: task.processed_rows,
        succeeded: task.succeeded,
        failed: task.failed,
        failure_reason: task.failure_reason.clone(),
        server: watched.server,
        bench_cpu_s: watched.bench_cpu_s,
        ceiling: None,
        ceiling_ratio: None,
    };

    // 4. The ceiling.
    if let Some(c) = &opts.ceiling
        && report.status == "completed"
    {
        let (ceiling, ratio) =
            insert_ceiling::compare(c, report.rows, Some(report.rows_per_s)).await?;
        report.ceiling = Some(ceiling);
        report.ceiling_ratio = ratio;
    }
    Ok(report)
}

/// The file's format: an XLSX is a zip (`PK`), anything else is sent as CSV. The server
/// decides by content anyway; this only labels the part.
fn guess_format(bytes: &[u8], asked: FileFormat) -> FileFormat {
    match bytes {
        [] => asked,
        [b'P', b'K', ..] => FileFormat::Xlsx,
        _ => FileFormat::Csv,
    }
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

    #[test]
    fn task_views_parse_and_finish() -> anyhow::Result<()> {
        let t: TaskView = serde_json::from_value(json!({
            "id": "12", "template_id": "3", "shop_id": "1", "name": "n", "status": "running",
            "send_at": "2025-01-01T00:00:00Z", "total_rows": 10, "processed_rows": 5,
            "succeeded": 4, "failed": 1, "created_at": "2025-01-01T00:00:00Z",
            "started_at": "2025-01-01T00:00:00.250Z", "finished_at": null, "notify_url": null,
            "failure_reason": null, "cancel_requested": false, "file_format": "csv"
        }))?;
        assert!(!t.finished());
        assert_eq!(secs_between(t.created_at, t.started_at), Some(0.25));
        assert_eq!(secs_between(t.started_at, t.finished_at), None);
        for s in ["completed", "failed", "canceled"] {
            let done = TaskView {
                status: s.into(),
                ..t.clone()
            };
            assert!(done.finished());
        }
        Ok(())
    }

    #[test]
    fn format_is_guessed_from_content() {
        assert_eq!(
            guess_format(b"PK\x03\x04", FileFormat::Csv),
            FileFormat::Xlsx
        );
        assert_eq!(
            guess_format(b"user_id\n1\n", FileFormat::Xlsx),
            FileFormat::Csv
        );
        assert_eq!(guess_format(b"", FileFormat::Xlsx), FileFormat::Xlsx);
    }
}
