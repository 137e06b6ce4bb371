//! The distribution task on the server: the upload that creates it (`multipart/form-data`,
//! held in memory) and the polling that waits until it is `completed`, `failed` or
//! `canceled`.

use super::DistributionOptions;
use crate::client::{Body, Target};
use crate::proc;
use crate::render::mib;
use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use jiff::Timestamp;
use serde::Deserialize;
use std::time::{Duration, Instant};

/// The task fields the scenario reads.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct TaskView {
    pub(super) id: String,
    pub(super) status: String,
    pub(super) total_rows: u64,
    pub(super) processed_rows: u64,
    pub(super) succeeded: u64,
    pub(super) failed: u64,
    pub(super) created_at: Option<Timestamp>,
    pub(super) started_at: Option<Timestamp>,
    pub(super) finished_at: Option<Timestamp>,
    pub(super) failure_reason: Option<String>,
    pub(super) file_format: Option<String>,
}

impl TaskView {
    pub(super) fn finished(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed" | "canceled")
    }
}

/// `POST /api/v1/merchant/distributions` of a form on `conn`, within `timeout`: the new task
/// and the upload's time since `started` (its first byte).
pub(super) async fn upload(
    target: &Target,
    conn: &mut SendRequest<Body>,
    merchant: &HeaderValue,
    (content_type, body): (HeaderValue, Bytes),
    timeout: Duration,
    started: Instant,
) -> anyhow::Result<(TaskView, Duration)> {
    let uri = target.uri("/api/v1/merchant/distributions")?;
    let mut req = target.request(Method::POST, uri, Some(merchant), Full::new(body));
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
    let (status, answer) = tokio::time::timeout(timeout, sent)
        .await
        .context("the upload timed out")??;
    let took = started.elapsed();
    if status.as_u16() != 202 {
        bail!(
            "the upload was answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let task: TaskView =
        serde_json::from_slice(&answer).context("the upload's answer is not a task")?;
    Ok((task, took))
}

/// Reads `task` every `--poll-interval` until it is finished, noting its progress and the
/// server's RSS every second; fails `--timeout` after `started`.
pub(super) async fn wait_finished(
    target: &Target,
    conn: &mut SendRequest<Body>,
    merchant: &HeaderValue,
    mut task: TaskView,
    opts: &DistributionOptions,
    started: Instant,
) -> anyhow::Result<TaskView> {
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
            .send_json(conn, Method::GET, &task_path, Some(merchant), None)
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
                mib(proc::rss_kb(opts.server_pid))
            );
        }
    }
    Ok(task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round::secs_between;
    use serde_json::json;

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
}
