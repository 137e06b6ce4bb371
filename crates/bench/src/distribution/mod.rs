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

mod file;
mod report;
mod task;

pub use file::FileFormat;
pub use report::DistributionReport;

use crate::auth::Tokens;
use crate::cli::{parse_duration, parse_shop};
use crate::client::Target;
use crate::insert_ceiling::{self, Ceiling};
use crate::multipart::Form;
use crate::proc;
use crate::round::{per_second, round3, secs_between};
use crate::server_run::ServerWatch;
use crate::setup::{create_template, open_window};
use anyhow::Context;
use hyper::header::HeaderValue;
use serde_json::json;
use stampede_domain::ids::ShopId;
use std::path::PathBuf;
use std::time::Duration;

/// The `distribution` flags (their docs are the `--help` text) and the server's pid.
#[derive(Debug, Clone, clap::Args)]
pub struct DistributionOptions {
    /// Rows of the generated file.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// Format of the generated file.
    #[arg(long, value_enum, default_value_t = FileFormat::Csv)]
    pub format: FileFormat,
    /// Upload this file instead of generating one (its format is read from its content).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// The `stampede` binary that generates the file (`stampede gen users`).
    #[arg(long, default_value = "./target/release/stampede")]
    pub stampede_bin: PathBuf,
    /// The template's stock (default: --rows).
    #[arg(long)]
    pub stock: Option<u64>,
    /// The merchant's shop.
    #[arg(long, default_value = "1", value_parser = parse_shop)]
    pub shop_id: ShopId,
    // `--server-pid`, read with the other server flags (`cli::ServerArgs`).
    #[arg(skip)]
    pub server_pid: u32,
    /// Also measure the database's bulk-insert ceiling: sqlite:DIR (a fresh file in DIR) or
    /// mysql:URL (a scratch database on that server, dropped afterwards).
    #[arg(long)]
    pub ceiling: Option<Ceiling>,
    /// How often the task is read.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// Give up when the task has not finished this long after the upload started.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
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
    let mut users = file::prepare(opts)?;

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
    let file_name = users
        .path
        .file_name()
        .map_or_else(|| "users".into(), |n| n.to_string_lossy().into_owned());
    let form = Form::default()
        .text("template_id", &template_id)
        .text("name", &format!("bench {file_name}"))
        .file(
            "file",
            &file_name,
            users.format.content_type(),
            &users.bytes,
        );
    let content_type = HeaderValue::from_str(&form.content_type()).context("content type")?;
    let body = form.finish();
    let file_bytes = users.bytes.len() as u64;
    let format = users.format;
    // The form has its own copy; a generated file stays until the run is over.
    drop(std::mem::take(&mut users.bytes));

    let watch = ServerWatch::start(pid)?;
    let started = watch.started();
    let (task, upload) = task::upload(
        target,
        &mut conn,
        &merchant,
        (content_type, body),
        opts.timeout,
        started,
    )
    .await?;
    eprintln!(
        "uploaded in {:.3} s: task {} ({} rows, {})",
        upload.as_secs_f64(),
        task.id,
        task.total_rows,
        task.status
    );
    let task = task::wait_finished(target, &mut conn, &merchant, task, opts, started).await?;
    let watched = watch.finish().await?;
    let wall_s = watched.wall.as_secs_f64();
    eprintln!(
        "task {} {} after {:.3} s: {} succeeded, {} failed",
        task.id, task.status, wall_s, task.succeeded, task.failed
    );

    let mut report = DistributionReport {
        scenario: "distribution".into(),
        task_id: task.id,
        status: task.status,
        format: task
            .file_format
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
        failure_reason: task.failure_reason,
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
