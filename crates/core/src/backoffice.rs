//! Back-office use cases: merchants (own shop) and admins (any shop) create, list, read,
//! restock and terminate templates and read their audit log; the system ends templates whose
//! claim window passed. Ownership failures are 404, so a merchant cannot even learn that
//! another shop's template exists.

use crate::clock::Clock;
use crate::error::AppError;
use crate::ids::IdGenerator;
use crate::ports::{
    ChangeOutcome, CreateOutcome, IdempotencyRecord, Page, TemplateQuery, TemplateStore,
};
use stampede_domain::audit::AuditEntry;
use stampede_domain::auth::{Principal, Role};
use stampede_domain::ids::{GoodsId, ShopId, TemplateId};
use stampede_domain::template::{
    ChangeError, Kind, MAX_STOCK, Source, Template, TemplateChange, TemplateDraft, TemplateStatus,
};
use stampede_domain::{ErrorCode, ValidationErrors};
use std::sync::Arc;
use tracing::instrument;

pub const MAX_PAGE_SIZE: u32 = 100;
pub const DEFAULT_PAGE_SIZE: u32 = 20;
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// A client's `Idempotency-Key` with the hash of the request it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    pub request_hash: String,
}

impl IdempotencyKey {
    /// Accepts 1–255 visible ASCII characters (a UUID fits; so do most client schemes).
    pub fn parse(key: &str, request_hash: String) -> Result<Self, AppError> {
        if key.is_empty()
            || key.len() > MAX_IDEMPOTENCY_KEY_LEN
            || !key.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(AppError::validation(
                "Idempotency-Key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
            ));
        }
        Ok(Self {
            key: key.to_owned(),
            request_hash,
        })
    }
}

pub struct CreateTemplate {
    pub draft: TemplateDraft,
    /// The shop to create for; admins must name one for shop templates, merchants may only
    /// repeat their own.
    pub shop_id: Option<ShopId>,
    pub idempotency: Option<IdempotencyKey>,
    /// Field errors the edge already found (type errors); merged with the domain's.
    pub edge_errors: ValidationErrors,
}

#[derive(Debug)]
pub struct Created {
    pub template: Template,
    /// True when an earlier request with the same key made it.
    pub replayed: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub shop_id: Option<ShopId>,
    pub status: Option<TemplateStatus>,
    pub kind: Option<Kind>,
    pub name: Option<String>,
    pub goods_id: Option<GoodsId>,
    pub claim_from: Option<jiff::Timestamp>,
    pub claim_to: Option<jiff::Timestamp>,
    pub page: Option<u32>,
    pub page_size: Option<u32>,
}

/// Told about every template creation and change after it committed, so caches and hot
/// state follow (on this node directly, on others through the invalidation channel).
#[async_trait::async_trait]
pub trait TemplateObserver: Send + Sync + 'static {
    async fn created(&self, t: &Template);
    async fn changed(&self, t: &Template);
}

pub struct BackOffice {
    store: Arc<dyn TemplateStore>,
    ids: Arc<IdGenerator>,
    clock: Arc<dyn Clock>,
    observer: std::sync::OnceLock<Arc<dyn TemplateObserver>>,
}

/// Page and page size of a back-office list (defaults 1 and `DEFAULT_PAGE_SIZE`), with their
/// errors added to `errs`.
pub(crate) fn check_page(
    page: Option<u32>,
    page_size: Option<u32>,
    errs: &mut ValidationErrors,
) -> (u32, u32) {
    let page = page.unwrap_or(1);
    if page == 0 {
        errs.add("page", "must be at least 1");
    }
    let page_size = page_size.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
        errs.add(
            "page_size",
            format!("must be between 1 and {MAX_PAGE_SIZE}"),
        );
    }
    if page.saturating_mul(page_size) > 1_000_000 {
        errs.add("page", "is too deep: narrow the filters instead");
    }
    (page, page_size)
}

pub(crate) fn require_back_office(who: &Principal) -> Result<(), AppError> {
    match who.role {
        Role::Merchant | Role::Admin => Ok(()),
        _ => Err(AppError::Forbidden(
            "only merchants and admins use the back-office".into(),
        )),
    }
}

impl BackOffice {
    pub fn new(
        store: Arc<dyn TemplateStore>,
        ids: Arc<IdGenerator>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            ids,
            clock,
            observer: std::sync::OnceLock::new(),
        }
    }

    /// Sets the observer once (the engine is built after the back-office); later calls are
    /// ignored.
    pub fn set_observer(&self, observer: Arc<dyn TemplateObserver>) {
        let _first_wins = self.observer.set(observer);
    }

    async fn notify_changed(&self, t: &Template) {
        if let Some(o) = self.observer.get() {
            o.changed(t).await;
        }
    }

    /// Which shop a new template belongs to, or why the caller may not create it.
    fn target_shop(
        who: &Principal,
        source: Source,
        requested: Option<ShopId>,
    ) -> Result<ShopId, AppError> {
        match (who.role, source) {
            (Role::Merchant, Source::Platform) => Err(AppError::Forbidden(
                "only admins create platform templates".into(),
            )),
            (Role::Merchant, Source::Shop) => {
                let own = who
                    .shop_id
                    .ok_or_else(|| AppError::Forbidden("merchant token without shop_id".into()))?;
                match requested {
                    Some(s) if s != own => Err(AppError::Forbidden(
                        "merchants create templates for their own shop only".into(),
                    )),
                    _ => Ok(own),
                }
            }
            (Role::Admin, Source::Platform) => match requested {
                Some(_) => Err(AppError::validation(
                    "shop_id",
                    "platform templates belong to no shop; omit shop_id",
                )),
                None => Ok(ShopId::PLATFORM),
            },
            (Role::Admin, Source::Shop) => requested.ok_or_else(|| {
                AppError::validation(
                    "shop_id",
                    "is required when an admin creates a shop template",
                )
            }),
            _ => Err(AppError::Forbidden(
                "only merchants and admins create templates".into(),
            )),
        }
    }

    #[instrument(skip_all, fields(actor = %who.actor()))]
    pub async fn create(&self, who: &Principal, req: CreateTemplate) -> Result<Created, AppError> {
        require_back_office(who)?;
        let source = req.draft.source.unwrap_or(Source::Shop);
        let shop_id = Self::target_shop(who, source, req.shop_id)?;
        // A replay is answered from the record before validating: the same body may no
        // longer validate (its claim window can be in the past by now) yet must still
        // return what it created.
        if let Some(k) = &req.idempotency
            && let Some((record, found)) = self.store.find_idempotency_key(shop_id, &k.key).await?
        {
            return replay(&record, k, found, self.clock.now());
        }
        let id = TemplateId::new(self.ids.next()?)
            .ok_or_else(|| AppError::Internal("id generator produced a non-positive id".into()))?;
        let now = self.clock.now();

        let mut errors = req.edge_errors;
        let validated = req.draft.validate(id, shop_id, now);
        let template = match validated {
            Ok(t) if errors.is_empty() => t,
            Ok(_) => return Err(AppError::Validation(errors)),
            Err(domain) => {
                // A field the edge could not read is reported once, with the edge's reason.
                for e in domain.into_vec() {
                    if !errors.has(&e.field) {
                        errors.add(&e.field, e.message);
                    }
                }
                return Err(AppError::Validation(errors));
            }
        };

        let record = req.idempotency.as_ref().map(|k| IdempotencyRecord {
            shop_id,
            key: k.key.clone(),
            request_hash: k.request_hash.clone(),
            template_id: id,
            created_at: template.created_at,
        });
        let audit = AuditEntry::created(&template, &who.actor());
        match self
            .store
            .create_template(&template, &audit, record.as_ref())
            .await?
        {
            CreateOutcome::Created => {
                if let Some(o) = self.observer.get() {
                    o.created(&template).await;
                }
                Ok(Created {
                    template: template.as_of(now),
                    replayed: false,
                })
            }
            CreateOutcome::KeyExists {
                record: existing,
                template: found,
            } => match &req.idempotency {
                Some(k) => replay(&existing, k, found, now),
                None => Err(AppError::Internal("key conflict without a key".into())),
            },
        }
    }

    /// The template if `who` may see it; 404 otherwise (existence does not leak).
    pub async fn get(&self, who: &Principal, id: TemplateId) -> Result<Template, AppError> {
        require_back_office(who)?;
        match self.store.get_template(id).await? {
            Some(t) if who.can_manage_shop(t.shop_id) => Ok(t.as_of(self.clock.now())),
            _ => Err(AppError::not_found("template")),
        }
    }

    pub async fn list(
        &self,
        who: &Principal,
        f: ListFilter,
    ) -> Result<(Page<Template>, u32, u32), AppError> {
        require_back_office(who)?;
        let shop_id = match who.role {
            Role::Merchant => {
                let own = who
                    .shop_id
                    .ok_or_else(|| AppError::Forbidden("merchant token without shop_id".into()))?;
                if f.shop_id.is_some_and(|s| s != own) {
                    return Err(AppError::Forbidden(
                        "merchants list their own shop only".into(),
                    ));
                }
                Some(own)
            }
            _ => f.shop_id,
        };
        let mut errs = ValidationErrors::new();
        let (page, page_size) = check_page(f.page, f.page_size, &mut errs);
        if f.name.as_ref().is_some_and(|n| n.chars().count() > 100) {
            errs.add("name", "must be at most 100 characters");
        }
        if let (Some(from), Some(to)) = (f.claim_from, f.claim_to)
            && from >= to
        {
            errs.add("claim_to", "must be after claim_from");
        }
        errs.finish(())?;
        let now = self.clock.now();
        let q = TemplateQuery {
            shop_id,
            status: f.status,
            kind: f.kind,
            name: f.name.filter(|n| !n.is_empty()),
            page,
            page_size,
            now,
            goods_id: f.goods_id,
            claim_from: f.claim_from,
            claim_to: f.claim_to,
        };
        let mut result = self.store.list_templates(&q).await?;
        result.items = result.items.into_iter().map(|t| t.as_of(now)).collect();
        Ok((result, page, page_size))
    }

    #[instrument(skip_all, fields(actor = %who.actor(), template = %id))]
    pub async fn add_stock(
        &self,
        who: &Principal,
        id: TemplateId,
        add: i64,
        idempotency: Option<IdempotencyKey>,
    ) -> Result<Template, AppError> {
        if !(1..=MAX_STOCK).contains(&add) {
            return Err(AppError::validation(
                "add",
                format!("must be between 1 and {MAX_STOCK}"),
            ));
        }
        self.change(who, id, TemplateChange::AddStock(add), idempotency)
            .await
    }

    #[instrument(skip_all, fields(actor = %who.actor(), template = %id))]
    pub async fn terminate(&self, who: &Principal, id: TemplateId) -> Result<Template, AppError> {
        // Terminating is idempotent by nature; no key is needed to repeat it safely.
        self.change(who, id, TemplateChange::Terminate, None).await
    }

    async fn change(
        &self,
        who: &Principal,
        id: TemplateId,
        change: TemplateChange,
        key: Option<IdempotencyKey>,
    ) -> Result<Template, AppError> {
        let current = self.get(who, id).await?;
        if let Some(k) = &key
            && let Some((record, _)) = self
                .store
                .find_idempotency_key(current.shop_id, &k.key)
                .await?
        {
            return self.replay_change(&record, k).await;
        }
        let now = self.clock.now();
        let record = key.as_ref().map(|k| IdempotencyRecord {
            shop_id: current.shop_id,
            key: k.key.clone(),
            request_hash: k.request_hash.clone(),
            template_id: id,
            created_at: stampede_domain::time::truncate_ms(now),
        });
        match self
            .store
            .change_template_keyed(id, change, &who.actor(), now, record.as_ref())
            .await?
        {
            ChangeOutcome::Changed(t) => {
                self.notify_changed(&t).await;
                Ok(t.as_of(now))
            }
            ChangeOutcome::Unchanged(t) => Ok(t.as_of(now)),
            ChangeOutcome::NotFound => Err(AppError::not_found("template")),
            ChangeOutcome::Refused(e) => Err(refusal(e)),
            ChangeOutcome::KeyExists(existing) => match &key {
                Some(k) => self.replay_change(&existing, k).await,
                None => Err(AppError::Internal("key conflict without a key".into())),
            },
        }
    }

    /// A repeated keyed change: the template as it is now, if the request is the same.
    async fn replay_change(
        &self,
        record: &IdempotencyRecord,
        key: &IdempotencyKey,
    ) -> Result<Template, AppError> {
        let template = self.store.get_template(record.template_id).await?;
        replay(record, key, template, self.clock.now()).map(|c| c.template)
    }

    pub async fn audit(
        &self,
        who: &Principal,
        id: TemplateId,
    ) -> Result<Vec<AuditEntry>, AppError> {
        self.get(who, id).await?;
        Ok(self.store.audit_log(id).await?)
    }

    /// Ends every active template whose window has passed (at most `batch` per call);
    /// returns how many it ended. Safe to run on many nodes at once: the store's
    /// transaction makes a second `End` a no-op.
    pub async fn end_due(&self, batch: u32) -> Result<usize, AppError> {
        let now = self.clock.now();
        let mut ended = 0;
        for id in self.store.templates_due_to_end(now, batch).await? {
            if let ChangeOutcome::Changed(t) = self
                .store
                .change_template(id, TemplateChange::End, "system", now)
                .await?
            {
                self.notify_changed(&t).await;
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// Forgets idempotency keys older than `retention`.
    pub async fn purge_idempotency(
        &self,
        retention: jiff::SignedDuration,
    ) -> Result<u64, AppError> {
        let cutoff = self
            .clock
            .now()
            .checked_sub(retention)
            .unwrap_or(jiff::Timestamp::MIN);
        Ok(self.store.purge_idempotency_keys(cutoff).await?)
    }
}

/// The answer to a request whose idempotency key is already bound: the same template when
/// the body is the same, `IDEMPOTENCY_KEY_REUSED` otherwise.
fn replay(
    record: &IdempotencyRecord,
    key: &IdempotencyKey,
    template: Option<Template>,
    now: jiff::Timestamp,
) -> Result<Created, AppError> {
    if record.request_hash != key.request_hash {
        return Err(AppError::IdempotencyKeyReused);
    }
    match template {
        Some(t) => Ok(Created {
            template: t.as_of(now),
            replayed: true,
        }),
        None => Err(AppError::Internal(
            "idempotency record points at a missing template".into(),
        )),
    }
}

fn refusal(e: ChangeError) -> AppError {
    match e {
        ChangeError::Terminated => AppError::Conflict {
            code: ErrorCode::TemplateTerminated,
            detail: "the template was terminated".into(),
        },
        ChangeError::Ended => AppError::Conflict {
            code: ErrorCode::ClaimEnded,
            detail: "the template's claim window has ended".into(),
        },
        ChangeError::StockCap => {
            AppError::validation("add", format!("stock_total would exceed {MAX_STOCK}"))
        }
        ChangeError::InvalidAdd => AppError::validation("add", "must be at least 1"),
    }
}
