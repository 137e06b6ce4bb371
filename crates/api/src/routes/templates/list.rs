//! `GET /merchant/templates`: list templates with filters, newest first. The query is read
//! by hand so every bad parameter is reported at once.

use crate::error::{ApiError, ApiResult, PROBLEM_JSON, Problem};
use crate::extract::{BackOfficeRoles, Caller};
use crate::responses::BackOfficeErrors;
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use jiff::Timestamp;
use serde::Serialize;
use stampede_core::backoffice::ListFilter;
use stampede_domain::ids::{GoodsId, ShopId};
use stampede_domain::template::{Kind, Template, TemplateStatus};
use stampede_domain::{ErrorCode, ValidationErrors};
use std::collections::HashMap;
use utoipa::{IntoParams, ToSchema};

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
    /// Admins only: one shop (platform templates: `0`). Empty: every shop.
    #[param(
        pattern = "^(0|([1-9][0-9]{0,17}|[1-8][0-9]{18}|9[0-1][0-9]{17}|92[0-1][0-9]{16}|922[0-2][0-9]{15}|9223[0-2][0-9]{14}|92233[0-6][0-9]{13}|922337[0-1][0-9]{12}|92233720[0-2][0-9]{10}|922337203[0-5][0-9]{9}|9223372036[0-7][0-9]{8}|92233720368[0-4][0-9]{7}|922337203685[0-3][0-9]{6}|9223372036854[0-6][0-9]{5}|92233720368547[0-6][0-9]{4}|922337203685477[0-4][0-9]{3}|9223372036854775[0-7][0-9]{2}|922337203685477580[0-6]|9223372036854775807))?$"
    )]
    shop_id: Option<String>,
    /// Goods-scoped templates listing this goods id. Empty: no goods filter.
    #[param(
        pattern = "^(([1-9][0-9]{0,17}|[1-8][0-9]{18}|9[0-1][0-9]{17}|92[0-1][0-9]{16}|922[0-2][0-9]{15}|9223[0-2][0-9]{14}|92233[0-6][0-9]{13}|922337[0-1][0-9]{12}|92233720[0-2][0-9]{10}|922337203[0-5][0-9]{9}|9223372036[0-7][0-9]{8}|92233720368[0-4][0-9]{7}|922337203685[0-3][0-9]{6}|9223372036854[0-6][0-9]{5}|92233720368547[0-6][0-9]{4}|922337203685477[0-4][0-9]{3}|9223372036854775[0-7][0-9]{2}|922337203685477580[0-6]|9223372036854775807))?$"
    )]
    goods_id: Option<String>,
    /// Templates whose claim window `[claim_start, claim_end)` overlaps
    /// `[claim_from, claim_to)`; either bound may be left out. RFC 3339.
    #[param(format = DateTime)]
    claim_from: Option<String>,
    #[param(format = DateTime)]
    claim_to: Option<String>,
    /// 1-based, default 1.
    #[param(minimum = 1)]
    page: Option<u32>,
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
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
    // Only the id filters read an empty value as "any" (their published pattern says so).
    if let Some(s) = q.get("status") {
        filter.status = TemplateStatus::parse(s);
        if filter.status.is_none() {
            errs.add(
                "status",
                format!("must be one of: {}", TemplateStatus::ALL.join(", ")),
            );
        }
    }
    if let Some(k) = q.get("kind") {
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
    if let Some(g) = q.get("goods_id").filter(|s| !s.is_empty()) {
        filter.goods_id = GoodsId::parse(g);
        if filter.goods_id.is_none() {
            errs.add("goods_id", "must be a goods id (a positive integer)");
        }
    }
    // An empty time is no time at all (unlike the id filters, where empty means "any").
    let mut time = |k: &str| -> Option<Timestamp> {
        let v = q.get(k)?;
        let t = v.parse::<Timestamp>().ok();
        if t.is_none() {
            errs.add(k, "must be an RFC 3339 date-time");
        }
        t
    };
    filter.claim_from = time("claim_from");
    filter.claim_to = time("claim_to");
    filter.name = q.get("name").cloned();
    errs.finish(filter).map_err(ApiError::validation)
}

/// List templates, newest first. Merchants see their shop; admins every shop (or one with
/// `shop_id`: one query per database for all shops). Filters combine: status, kind, name
/// substring, goods id, claim-window overlap.
#[utoipa::path(get, path = "/api/v1/merchant/templates", tag = "back-office",
    params(ListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, body = TemplatePage),
        BackOfficeErrors,
        (status = 422, body = Problem, content_type = PROBLEM_JSON, description = "VALIDATION_FAILED: a bad filter or page, or claim_from not before claim_to"),
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
