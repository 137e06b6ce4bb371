//! Back-office template endpoints (SPEC §6): merchants for their own shop, admins for any.

use crate::error::{ApiError, ApiResult, PROBLEM_JSON, Problem};
use crate::extract::{
    BackOfficeRoles, Caller, Fields, JsonObject, OptionalJsonObject, canonical_hash,
    idempotency_key,
};
use crate::responses::{BackOfficeErrors, JsonBodyErrors, NotFound};
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use stampede_core::backoffice::{CreateTemplate, IdempotencyKey, ListFilter};
use stampede_domain::audit::AuditEntry;
use stampede_domain::ids::{GoodsId, ShopId, TemplateId};
use stampede_domain::template::{Kind, Scope, Source, Template, TemplateDraft, TemplateStatus};
use stampede_domain::{ErrorCode, ValidationErrors};
use std::collections::HashMap;
use utoipa::{IntoParams, ToSchema};

/// The body of `POST /merchant/templates`. Money is integer minor units; times RFC 3339.
/// Give validity either as `valid_from` + `valid_until` (absolute) or as `validity_hours`
/// (relative to the claim; an optional `valid_until` then caps it). Unknown fields are rejected.
#[derive(ToSchema)]
#[allow(dead_code)] // documents the contract; the handler reads fields with `Fields`
pub struct CreateTemplateBody {
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    #[schema(max_length = 1000)]
    instructions: Option<String>,
    /// `platform` is for admins only. Default `shop`.
    source: Option<Source>,
    /// Admins name the shop of a `shop` template; merchants may omit it (their own).
    shop_id: Option<ShopId>,
    /// Default `shop`.
    scope: Option<Scope>,
    /// 1–100 ids when `scope = goods`; absent or empty otherwise.
    goods_ids: Option<Vec<GoodsId>>,
    kind: Kind,
    /// > 0 for `fixed` and `threshold`; absent for `percent`.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    amount_off: Option<i64>,
    /// Required for `threshold` (> `amount_off`), optional for `percent`, absent or 0 for `fixed`.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    threshold: Option<i64>,
    /// Required for `percent`.
    #[schema(minimum = 1, maximum = 99)]
    percent_off: Option<i64>,
    /// Optional cap of a `percent` discount.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    max_off: Option<i64>,
    #[schema(minimum = 1, maximum = 20_000_000)]
    stock_total: i64,
    #[schema(value_type = String, format = DateTime)]
    claim_start: String,
    /// After `claim_start`, and in the future.
    #[schema(value_type = String, format = DateTime)]
    claim_end: String,
    #[schema(value_type = Option<String>, format = DateTime)]
    valid_from: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    valid_until: Option<String>,
    #[schema(minimum = 1, maximum = 8760)]
    validity_hours: Option<i64>,
    /// Default 1.
    #[schema(minimum = 1, maximum = 100)]
    per_user_limit: Option<i64>,
}

/// Reads a create body into a draft, the requested shop and every type error.
pub fn read_create_body(
    map: Map<String, Value>,
) -> (TemplateDraft, Option<ShopId>, ValidationErrors) {
    let mut f = Fields::new(map);
    let (draft, shop_id) = read_create_fields(&mut f);
    (draft, shop_id, f.finish())
}

fn read_create_fields(f: &mut Fields) -> (TemplateDraft, Option<ShopId>) {
    let draft = TemplateDraft {
        name: f.string("name"),
        instructions: f.string("instructions"),
        source: f.choice("source", Source::ALL, Source::parse),
        scope: f.choice("scope", Scope::ALL, Scope::parse),
        goods_ids: f.id_list("goods_ids", GoodsId::parse),
        kind: f.choice("kind", Kind::ALL, Kind::parse),
        amount_off: f.int("amount_off"),
        threshold: f.int("threshold"),
        percent_off: f.int("percent_off"),
        max_off: f.int("max_off"),
        stock_total: f.int("stock_total"),
        claim_start: f.time("claim_start"),
        claim_end: f.time("claim_end"),
        valid_from: f.time("valid_from"),
        valid_until: f.time("valid_until"),
        validity_hours: f.int("validity_hours"),
        per_user_limit: f.int("per_user_limit"),
    };
    (draft, f.id("shop_id", ShopId::parse))
}

fn template_id(raw: &str) -> ApiResult<TemplateId> {
    // An id that cannot exist is simply not found.
    TemplateId::parse(raw).ok_or_else(ApiError::not_found)
}

/// Create a template.
///
/// With an `Idempotency-Key`, repeating the same body returns the same template with 200;
/// the same key with a different body is 422 `IDEMPOTENCY_KEY_REUSED`. Keys are kept ≥ 24 h.
#[utoipa::path(post, path = "/api/v1/merchant/templates", tag = "back-office",
    request_body = CreateTemplateBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "1–255 visible ASCII characters")),
    security(("bearer" = [])),
    responses(
        (status = 201, body = Template, description = "created"),
        (status = 200, body = Template, description = "replay of an earlier request with the same Idempotency-Key"),
        BackOfficeErrors, JsonBodyErrors,
        (status = 403, body = Problem, content_type = PROBLEM_JSON, description = "FORBIDDEN: not a merchant or admin token, another shop, or a merchant creating a platform template"),
        (status = 413, body = Problem, content_type = PROBLEM_JSON, description = "PAYLOAD_TOO_LARGE: the body is over the JSON size limit"),
        (status = 422, body = Problem, content_type = PROBLEM_JSON, description = "VALIDATION_FAILED (all field errors in errors[]) or IDEMPOTENCY_KEY_REUSED"),
    ))]
pub async fn create_template(
    State(state): State<AppState>,
    caller: Caller<BackOfficeRoles>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let hash = canonical_hash(&body);
    let idempotency = match idempotency_key(&headers)? {
        Some(k) => Some(IdempotencyKey::parse(&k, hash)?),
        None => None,
    };
    let (draft, shop_id, edge_errors) = read_create_body(body);
    let created = state
        .backoffice
        .create(
            &caller.principal,
            CreateTemplate {
                draft,
                shop_id,
                idempotency,
                edge_errors,
            },
        )
        .await?;
    let status = if created.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut resp = (status, Json(&created.template)).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!(
        "/api/v1/merchant/templates/{}",
        created.template.id
    )) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the query; the handler reads it by hand to report every bad parameter
pub struct ListParams {
    /// `active`, `ended` or `terminated`.
    status: Option<TemplateStatus>,
    /// `fixed`, `threshold` or `percent`.
    kind: Option<Kind>,
    /// Case-insensitive substring of the name.
    name: Option<String>,
    /// Admins only: one shop (platform templates: `0`).
    shop_id: Option<String>,
    /// 1-based, default 1.
    page: Option<u32>,
    /// 1–100, default 20.
    page_size: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct TemplatePage {
    pub items: Vec<Template>,
    pub page: u32,
    pub page_size: u32,
    pub total: u64,
}

fn parse_list_query(q: &HashMap<String, String>) -> Result<ListFilter, ApiError> {
    let mut errs = ValidationErrors::new();
    let mut filter = ListFilter::default();
    let num = |errs: &mut ValidationErrors, k: &str| -> Option<u32> {
        let v = q.get(k)?;
        let parsed = v.parse::<u32>().ok();
        if parsed.is_none() {
            errs.add(k, "must be a non-negative integer");
        }
        parsed
    };
    filter.page = num(&mut errs, "page");
    filter.page_size = num(&mut errs, "page_size");
    if let Some(s) = q.get("status").filter(|s| !s.is_empty()) {
        filter.status = TemplateStatus::parse(s);
        if filter.status.is_none() {
            errs.add(
                "status",
                format!("must be one of: {}", TemplateStatus::ALL.join(", ")),
            );
        }
    }
    if let Some(k) = q.get("kind").filter(|s| !s.is_empty()) {
        filter.kind = Kind::parse(k);
        if filter.kind.is_none() {
            errs.add("kind", format!("must be one of: {}", Kind::ALL.join(", ")));
        }
    }
    if let Some(s) = q.get("shop_id").filter(|s| !s.is_empty()) {
        filter.shop_id = if s == "0" {
            Some(ShopId::PLATFORM)
        } else {
            ShopId::parse(s)
        };
        if filter.shop_id.is_none() {
            errs.add("shop_id", "must be a shop id");
        }
    }
    filter.name = q.get("name").cloned();
    errs.finish(filter).map_err(ApiError::validation)
}

/// List templates, newest first. Merchants see their shop; admins every shop (or one with
/// `shop_id`).
#[utoipa::path(get, path = "/api/v1/merchant/templates", tag = "back-office",
    params(ListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, body = TemplatePage),
        BackOfficeErrors,
        (status = 422, body = Problem, content_type = PROBLEM_JSON, description = "VALIDATION_FAILED: a bad filter or page"),
    ))]
pub async fn list_templates(
    State(state): State<AppState>,
    caller: Caller<BackOfficeRoles>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<TemplatePage>> {
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::MalformedRequest, e.body_text()))?;
    let filter = parse_list_query(&q)?;
    let (result, page, page_size) = state.backoffice.list(&caller.principal, filter).await?;
    Ok(Json(TemplatePage {
        items: result.items,
        page,
        page_size,
        total: result.total,
    }))
}

/// One template. Another shop's template is 404, like a missing one.
#[utoipa::path(get, path = "/api/v1/merchant/templates/{id}", tag = "back-office",
    params(("id" = String, Path, description = "template id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Template),
        BackOfficeErrors, NotFound,
    ))]
pub async fn get_template(
    State(state): State<AppState>,
    caller: Caller<BackOfficeRoles>,
    Path(id): Path<String>,
) -> ApiResult<Json<Template>> {
    let id = template_id(&id)?;
    Ok(Json(state.backoffice.get(&caller.principal, id).await?))
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AddStockBody {
    /// ≥ 1; the new `stock_total` may not pass 20,000,000.
    #[schema(minimum = 1, maximum = 20_000_000)]
    add: i64,
}

/// Add stock to an active template.
///
/// With an `Idempotency-Key`, a retried request adds nothing more and returns the template as
/// it is now; the same key with another body (or another template) is 422
/// `IDEMPOTENCY_KEY_REUSED`.
#[utoipa::path(post, path = "/api/v1/merchant/templates/{id}/stock", tag = "back-office",
    params(("id" = String, Path, description = "template id"),
           ("Idempotency-Key" = Option<String>, Header, description = "1–255 visible ASCII characters")),
    request_body = AddStockBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = Template),
        BackOfficeErrors, NotFound, JsonBodyErrors,
        (status = 409, body = Problem, content_type = PROBLEM_JSON, description = "TEMPLATE_TERMINATED or CLAIM_ENDED"),
        (status = 422, body = Problem, content_type = PROBLEM_JSON, description = "VALIDATION_FAILED (add < 1 or past the cap) or IDEMPOTENCY_KEY_REUSED"),
    ))]
pub async fn add_stock(
    State(state): State<AppState>,
    caller: Caller<BackOfficeRoles>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Template>> {
    let id = template_id(&id)?;
    // The hash names the action and the template, so a key cannot be replayed elsewhere.
    let mut scoped = Map::new();
    scoped.insert(format!("add_stock:{id}"), Value::Object(body.clone()));
    let idempotency = match idempotency_key(&headers)? {
        Some(k) => Some(IdempotencyKey::parse(&k, canonical_hash(&scoped))?),
        None => None,
    };
    let mut f = Fields::new(body);
    let add = f.int("add");
    let mut errs = f.finish();
    if add.is_none() && !errs.has("add") {
        errs.add("add", "is required");
    }
    let add = errs
        .finish(add.unwrap_or_default())
        .map_err(ApiError::validation)?;
    Ok(Json(
        state
            .backoffice
            .add_stock(&caller.principal, id, add, idempotency)
            .await?,
    ))
}

/// End a template now: claims stop at once. Terminating twice is a 200 with the same
/// template; an already ended template is 409 `CLAIM_ENDED`.
#[utoipa::path(post, path = "/api/v1/merchant/templates/{id}/terminate", tag = "back-office",
    params(("id" = String, Path, description = "template id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Template),
        BackOfficeErrors, NotFound,
        (status = 409, body = Problem, content_type = PROBLEM_JSON, description = "CLAIM_ENDED"),
        (status = 422, body = Problem, content_type = PROBLEM_JSON, description = "VALIDATION_FAILED: the body, if any, must be an empty object"),
    ))]
pub async fn terminate(
    State(state): State<AppState>,
    caller: Caller<BackOfficeRoles>,
    Path(id): Path<String>,
    OptionalJsonObject(body): OptionalJsonObject,
) -> ApiResult<Json<Template>> {
    let id = template_id(&id)?;
    Fields::new(body)
        .finish()
        .finish(())
        .map_err(ApiError::validation)?;
    Ok(Json(
        state.backoffice.terminate(&caller.principal, id).await?,
    ))
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    /// Oldest first.
    pub items: Vec<AuditEntry>,
}

/// The template's audit log: one entry per change, with the template before and after.
#[utoipa::path(get, path = "/api/v1/merchant/templates/{id}/audit", tag = "back-office",
    params(("id" = String, Path, description = "template id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = AuditPage),
        BackOfficeErrors, NotFound,
    ))]
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller<BackOfficeRoles>,
    Path(id): Path<String>,
) -> ApiResult<Json<AuditPage>> {
    let id = template_id(&id)?;
    Ok(Json(AuditPage {
        items: state.backoffice.audit(&caller.principal, id).await?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::PartialSchema;

    /// The documented body and the reader accept exactly the same fields.
    #[test]
    fn create_body_schema_matches_reader() {
        let schema = serde_json::to_value(CreateTemplateBody::schema()).unwrap_or_default();
        let mut documented: Vec<String> = schema["properties"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        documented.sort();
        let mut f = Fields::new(Map::new());
        let _ = read_create_fields(&mut f);
        let read: Vec<String> = f.known().map(|k| k.to_string()).collect();
        assert_eq!(documented, read);
    }
}
