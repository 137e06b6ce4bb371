//! The distribution use cases of the back-office: accept an upload (after the edge has
//! streamed the file to disk and checked it), list, read, cancel, and page through failures.
//! Running a task is the `stampede-workers` distribution runner's job.

use crate::AppError;
use crate::backoffice::{IdempotencyKey, check_page, require_back_office};
use crate::claim_ports::OutboxEvent;
use crate::clock::Clock;
use crate::distribution_ports::{
    CreateDistribution, DistributionQuery, DistributionStore, FILE_CHUNK_BYTES, FinishGuard,
};
use crate::events::distribution_completed_event;
use crate::ids::IdGenerator;
use crate::ports::{Page, TemplateStore};
use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};
use stampede_domain::ValidationErrors;
use stampede_domain::auth::{Principal, Role};
use stampede_domain::distribution::{
    DistributionStatus, DistributionTask, FailedRow, FileFormat, NotifyState,
};
use stampede_domain::ids::{DistributionId, ShopId, TemplateId};
use stampede_domain::template::{Template, TemplateStatus, parse_time};
use std::path::Path;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_NOTIFY_URL_LEN: usize = 2048;
/// How far ahead a task may be scheduled.
pub const MAX_SEND_AHEAD: SignedDuration = SignedDuration::from_hours(30 * 24);
/// A `send_at` this far in the past is a mistake, not clock skew.
pub const SEND_AT_SKEW: SignedDuration = SignedDuration::from_mins(5);
/// How long the uploader holds a new task while its file is copied into the store: no
/// runner starts a task whose file is still arriving. If the uploader dies, the task is taken
/// after this and fails with "file incomplete".
pub const UPLOAD_LEASE: SignedDuration = SignedDuration::from_secs(120);

/// The form fields of an upload, as sent (the edge only checks they are text).
#[derive(Debug, Clone, Default)]
pub struct UploadFields {
    pub template_id: Option<String>,
    pub name: Option<String>,
    pub send_at: Option<String>,
    pub notify_url: Option<String>,
}

/// Upload fields that passed validation.
#[derive(Debug, Clone)]
pub struct CheckedUpload {
    pub template: Template,
    pub name: String,
    pub send_at: Option<Timestamp>,
    pub notify_url: Option<String>,
}

/// What the edge learned about the stored file.
#[derive(Debug, Clone)]
pub struct UploadedFile {
    pub format: FileFormat,
    pub data_rows: u64,
    pub size: u64,
    /// SHA-256 (hex) of the file's bytes.
    pub sha256: String,
}

/// Whether a create made a task or replayed an earlier one (same `Idempotency-Key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    Replayed,
}

pub struct Distributions {
    store: Arc<dyn DistributionStore>,
    templates: Arc<dyn TemplateStore>,
    ids: Arc<IdGenerator>,
    clock: Arc<dyn Clock>,
    batch_size: u32,
    /// This node's name in upload leases.
    node: String,
}

/// `http://` or `https://` with a host, no whitespace or control characters.
fn valid_url(u: &str) -> bool {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"));
    match rest {
        Some(r) => {
            let host = r.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty()
                && !host.starts_with(':')
                && u.len() <= MAX_NOTIFY_URL_LEN
                && u.chars().all(|c| c.is_ascii_graphic())
        }
        None => false,
    }
}

impl Distributions {
    pub fn new(
        store: Arc<dyn DistributionStore>,
        templates: Arc<dyn TemplateStore>,
        ids: Arc<IdGenerator>,
        clock: Arc<dyn Clock>,
        batch_size: u32,
        node: String,
    ) -> Self {
        Self {
            store,
            templates,
            ids,
            clock,
            batch_size: batch_size.max(1),
            node,
        }
    }

    pub fn store(&self) -> &Arc<dyn DistributionStore> {
        &self.store
    }

    /// Validates the form fields and the template before the file is read: every field error
    /// at once (422), then a template the caller cannot see (404), a terminated (409
    /// `TEMPLATE_TERMINATED`) or ended (409 `CLAIM_ENDED`) one.
    pub async fn check(
        &self,
        who: &Principal,
        f: &UploadFields,
    ) -> Result<CheckedUpload, AppError> {
        require_back_office(who)?;
        let now = self.clock.now();
        let mut errs = ValidationErrors::new();
        let template_id = match f.template_id.as_deref() {
            None => {
                errs.add("template_id", "is required");
                None
            }
            Some(s) => {
                let id = TemplateId::parse(s.trim());
                if id.is_none() {
                    errs.add(
                        "template_id",
                        "must be a template id (a positive integer string)",
                    );
                }
                id
            }
        };
        let name = f.name.as_deref().map(str::trim).unwrap_or("");
        if name.is_empty() {
            errs.add("name", "is required");
        } else if name.chars().count() > MAX_NAME_CHARS {
            errs.add(
                "name",
                format!("must be at most {MAX_NAME_CHARS} characters"),
            );
        } else if name.chars().any(char::is_control) {
            errs.add("name", "must not contain control characters");
        }
        let send_at = match f
            .send_at
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => None,
            Some(s) => match parse_time(s) {
                None => {
                    errs.add(
                        "send_at",
                        "must be an RFC 3339 time, e.g. 2026-11-21T10:00:00Z",
                    );
                    None
                }
                Some(t) if t < now - SEND_AT_SKEW => {
                    errs.add("send_at", "must not be in the past");
                    None
                }
                Some(t) if t > now + MAX_SEND_AHEAD => {
                    errs.add("send_at", "must be at most 30 days ahead");
                    None
                }
                Some(t) => Some(t),
            },
        };
        let notify_url = match f
            .notify_url
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => None,
            Some(u) if valid_url(u) => Some(u.to_owned()),
            Some(_) => {
                errs.add(
                    "notify_url",
                    format!("must be an http:// or https:// URL of at most {MAX_NOTIFY_URL_LEN} characters"),
                );
                None
            }
        };
        errs.finish(())?;
        let Some(template_id) = template_id else {
            return Err(AppError::validation("template_id", "is required"));
        };
        let template = match self.templates.get_template(template_id).await? {
            Some(t) if who.can_manage_shop(t.shop_id) => t.as_of(now),
            _ => return Err(AppError::not_found("template")),
        };
        match template.status {
            TemplateStatus::Terminated => {
                return Err(AppError::Conflict {
                    code: stampede_domain::ErrorCode::TemplateTerminated,
                    detail: "the template was terminated; its coupons can no longer be issued"
                        .into(),
                });
            }
            TemplateStatus::Ended => {
                return Err(AppError::Conflict {
                    code: stampede_domain::ErrorCode::ClaimEnded,
                    detail: "the template's claim window has closed; its coupons can no longer be issued".into(),
                });
            }
            TemplateStatus::Active => {}
        }
        Ok(CheckedUpload {
            template,
            name: name.to_owned(),
            send_at,
            notify_url,
        })
    }

    /// The SHA-256 an `Idempotency-Key` binds: the fields as checked and the file's hash.
    pub fn request_hash(c: &CheckedUpload, file: &UploadedFile) -> String {
        let canonical = serde_json::json!({
            "template_id": c.template.id.to_string(),
            "name": c.name,
            "send_at": c.send_at.map(|t| t.to_string()),
            "notify_url": c.notify_url,
            "file_sha256": file.sha256,
        });
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    }

    /// Creates the task (`pending`) and copies the file at `path` into the store. With a key
    /// already used for the same request: the earlier task (`Replayed`); for another
    /// request: `IDEMPOTENCY_KEY_REUSED`.
    pub async fn create(
        &self,
        who: &Principal,
        c: CheckedUpload,
        file: UploadedFile,
        path: &Path,
        key: Option<&str>,
    ) -> Result<(DistributionTask, Created), AppError> {
        require_back_office(who)?;
        let request_hash = Self::request_hash(&c, &file);
        let key = key
            .map(|k| IdempotencyKey::parse(k, request_hash.clone()))
            .transpose()?;
        let now = self.clock.now();
        let id = DistributionId::new(self.ids.next()?)
            .ok_or_else(|| AppError::Internal("the id generator made a non-positive id".into()))?;
        let task = DistributionTask {
            id,
            template_id: c.template.id,
            shop_id: c.template.shop_id,
            name: c.name,
            status: DistributionStatus::Pending,
            send_at: c.send_at.unwrap_or(now),
            total_rows: file.data_rows,
            processed_rows: 0,
            succeeded: 0,
            failed: 0,
            created_at: now,
            started_at: None,
            finished_at: None,
            notify_url: c.notify_url,
            failure_reason: None,
            cancel_requested: false,
            format: file.format,
            file_size: file.size,
            batch_size: self.batch_size,
            created_by: who.actor(),
            idempotency_key: key.as_ref().map(|k| k.key.clone()),
            request_hash: key.as_ref().map(|k| k.request_hash.clone()),
            lease_owner: Some(format!("upload:{}", self.node)),
            lease_until_ms: (now + UPLOAD_LEASE).as_millisecond(),
            notify_state: NotifyState::None,
            notify_attempts: 0,
            notify_next_at_ms: 0,
        };
        match self.store.create_distribution(&task).await? {
            CreateDistribution::KeyExists(existing) => {
                return if existing.request_hash.as_deref() == Some(request_hash.as_str()) {
                    Ok((*existing, Created::Replayed))
                } else {
                    Err(AppError::IdempotencyKeyReused)
                };
            }
            CreateDistribution::Created => {}
        }
        self.store_file(&task, path).await?;
        // Read back while the upload lease still keeps runners off it: the answer is the
        // task as accepted (pending, stored precision), not whatever a runner made of it
        // in the meantime.
        let mut stored = self
            .store
            .get_distribution(task.id)
            .await?
            .unwrap_or_else(|| task.clone());
        let owner = format!("upload:{}", self.node);
        self.store
            .release_distribution(task.id, task.shop_id, &owner)
            .await?;
        stored.lease_until_ms = 0;
        tracing::info!(distribution = %task.id, template = %task.template_id, rows = task.total_rows, "distribution created");
        Ok((stored, Created::New))
    }

    async fn store_file(&self, task: &DistributionTask, path: &Path) -> Result<(), AppError> {
        let io = |e: std::io::Error| AppError::Internal(Box::new(e));
        let mut f = tokio::fs::File::open(path).await.map_err(io)?;
        let mut buf = vec![0u8; FILE_CHUNK_BYTES];
        let mut n: u32 = 0;
        loop {
            // Fill the chunk completely (reads may return less) so chunk k always starts at
            // byte k × FILE_CHUNK_BYTES.
            let mut filled = 0;
            while filled < buf.len() {
                let got = f.read(&mut buf[filled..]).await.map_err(io)?;
                if got == 0 {
                    break;
                }
                filled += got;
            }
            if filled == 0 {
                break;
            }
            self.store
                .put_file_chunk(task.id, task.shop_id, n, &buf[..filled])
                .await?;
            n += 1;
            if filled < buf.len() {
                break;
            }
        }
        Ok(())
    }

    /// The task if `who` may see it; 404 otherwise (existence does not leak).
    pub async fn get(
        &self,
        who: &Principal,
        id: DistributionId,
    ) -> Result<DistributionTask, AppError> {
        require_back_office(who)?;
        match self.store.get_distribution(id).await? {
            Some(t) if who.can_manage_shop(t.shop_id) => Ok(t),
            _ => Err(AppError::not_found("distribution")),
        }
    }

    pub async fn list(
        &self,
        who: &Principal,
        page: Option<u32>,
        page_size: Option<u32>,
    ) -> Result<(Page<DistributionTask>, u32, u32), AppError> {
        require_back_office(who)?;
        let shop_id = match who.role {
            Role::Merchant => Some(
                who.shop_id
                    .ok_or_else(|| AppError::Forbidden("merchant token without shop_id".into()))?,
            ),
            _ => None,
        };
        let mut errs = ValidationErrors::new();
        let (page, page_size) = check_page(page, page_size, &mut errs);
        errs.finish(())?;
        let result = self
            .store
            .list_distributions(&DistributionQuery {
                shop_id,
                page,
                page_size,
            })
            .await?;
        Ok((result, page, page_size))
    }

    /// Cancels: a `pending` task at once; a `running` one at its next batch boundary (the
    /// answer still says `running`, with what is issued so far; it stays issued). Canceling
    /// a finished task is a 409; canceling a canceled one answers it again.
    pub async fn cancel(
        &self,
        who: &Principal,
        id: DistributionId,
    ) -> Result<DistributionTask, AppError> {
        let t = self.get(who, id).await?;
        match t.status {
            DistributionStatus::Canceled => return Ok(t),
            DistributionStatus::Completed | DistributionStatus::Failed => {
                return Err(AppError::Conflict {
                    code: stampede_domain::ErrorCode::Conflict,
                    detail: format!("the distribution is already {}", t.status.as_str()),
                });
            }
            DistributionStatus::Pending | DistributionStatus::Running => {}
        }
        self.store.request_cancel(id, t.shop_id).await?;
        if t.status == DistributionStatus::Pending {
            let now = self.clock.now();
            let mut done = t.clone();
            done.status = DistributionStatus::Canceled;
            done.finished_at = Some(now);
            let event: OutboxEvent = distribution_completed_event(&done);
            if let Some(after) = self
                .store
                .finish_distribution(
                    id,
                    t.shop_id,
                    FinishGuard::Pending,
                    DistributionStatus::Canceled,
                    None,
                    now,
                    &event,
                )
                .await?
            {
                tracing::info!(distribution = %id, "pending distribution canceled");
                return Ok(after);
            }
        }
        // Running (or picked up meanwhile): the runner stops at its next batch.
        self.get(who, id).await
    }

    /// One page of a task's failed rows after `after_row` (authorisation is the caller's:
    /// `get` first).
    pub async fn failures_page(
        &self,
        t: &DistributionTask,
        after_row: u64,
        limit: u32,
    ) -> Result<Vec<FailedRow>, AppError> {
        Ok(self
            .store
            .failures(t.id, t.shop_id, after_row, limit)
            .await?)
    }

    pub fn shop_of(t: &DistributionTask) -> ShopId {
        t.shop_id
    }
}
