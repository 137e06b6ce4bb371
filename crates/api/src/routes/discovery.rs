//! Coupon discovery: the claimable templates of a shop page, a product page and a cart.
//! Served from each node's memory (per-shop listings, stock from the hot state).
//!
//! Query parameters are read by hand so that every bad one is reported at once.

use super::settlement::cart::{CartLine, cart_of, read_items};
use crate::error::{ApiError, ApiResult, PROBLEM_JSON, Problem};
use crate::extract::{AnyRole, Caller, Fields, JsonObject, UserOnly};
use crate::responses::{BearerErrors, ClaimErrors, JsonBodyErrors, NotFound};
use crate::state::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use stampede_core::discovery::{DiscoveryPage, PageParams, Rendered};
use stampede_domain::ids::{GoodsId, ShopId};
use stampede_domain::{ErrorCode, ValidationErrors};
use std::collections::HashMap;
use utoipa::{IntoParams, ToSchema};

/// Marks a page answered without the hot state (stored stock, no per-user fields).
const PARTIAL: &str = "x-partial";

type RawQuery = Result<Query<HashMap<String, String>>, QueryRejection>;

fn query(q: RawQuery) -> ApiResult<HashMap<String, String>> {
    let Query(q) = q.map_err(|e| ApiError::new(ErrorCode::MalformedRequest, e.body_text()))?;
    Ok(q)
}

fn flag(q: &HashMap<String, String>, name: &str, errs: &mut ValidationErrors) -> bool {
    match q.get(name).map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            errs.add(name, "must be true or false");
            false
        }
    }
}

fn number<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    name: &str,
    what: &str,
    errs: &mut ValidationErrors,
) -> Option<T> {
    let raw = q.get(name)?;
    let n = raw.parse::<T>().ok();
    if n.is_none() {
        errs.add(name, format!("must be {what}"));
    }
    n
}

fn page_params(q: &HashMap<String, String>, errs: &mut ValidationErrors) -> PageParams {
    PageParams {
        limit: number(q, "limit", "an integer from 1 to 100", errs),
        cursor: q.get("cursor").cloned(),
        include_sold_out: flag(q, "include_sold_out", errs),
    }
}

/// The page's JSON (written from pre-rendered fragments, see `core::discovery`).
fn answer(page: Rendered) -> (HeaderMap, String) {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if page.partial {
        headers.insert(PARTIAL, HeaderValue::from_static("true"));
    }
    (headers, page.body)
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the query; the handler reads it by hand to report every bad parameter
pub struct ShopParams {
    /// Also list platform templates (they apply in every shop). Default `false`.
    include_platform: Option<bool>,
    /// Reference price in minor units that `discount` and the order are computed on.
    /// Default 10000 (100.00).
    #[param(minimum = 0, maximum = 1_000_000_000_000i64)]
    price: Option<i64>,
    /// List sold-out templates too (`stock_level: sold_out`). Default `false`.
    include_sold_out: Option<bool>,
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The claimable templates of a shop: shop-wide and goods-scoped ones whose claim window is
/// open or opens within the horizon (`discovery.horizon_hours`, default 24), plus platform
/// templates with `include_platform=true`. Most useful first (largest discount on the
/// reference `price`, then the window closing soonest). For a `user`, each item also says
/// how many the user holds (`user_claimed`), the limit, and whether a claim now would pass
/// (`can_claim`). An unknown shop answers an empty list.
#[utoipa::path(get, path = "/api/v1/shops/{shop_id}/templates", tag = "discovery",
    params(("shop_id" = String, Path, description = "shop id (a positive integer)", pattern = "^([1-9][0-9]{0,17}|[1-8][0-9]{18}|9[0-1][0-9]{17}|92[0-1][0-9]{16}|922[0-2][0-9]{15}|9223[0-2][0-9]{14}|92233[0-6][0-9]{13}|922337[0-1][0-9]{12}|92233720[0-2][0-9]{10}|922337203[0-5][0-9]{9}|9223372036[0-7][0-9]{8}|92233720368[0-4][0-9]{7}|922337203685[0-3][0-9]{6}|9223372036854[0-6][0-9]{5}|92233720368547[0-6][0-9]{4}|922337203685477[0-4][0-9]{3}|9223372036854775[0-7][0-9]{2}|922337203685477580[0-6]|9223372036854775807)$"), ShopParams),
    security(("bearer" = [])),
    responses(
        (status = 200, body = DiscoveryPage, headers(
            ("X-Partial" = Option<bool>, description = "`true` when the hot state could not be read: stored stock, no per-user fields"),
        )),
        BearerErrors, NotFound,
        (status = 422, body = Problem, content_type = PROBLEM_JSON, description = "VALIDATION_FAILED: bad include_platform, price, include_sold_out, limit or cursor"),
    ))]
pub async fn shop_templates(
    State(state): State<AppState>,
    caller: Caller<AnyRole>,
    Path(shop): Path<String>,
    q: RawQuery,
) -> ApiResult<(HeaderMap, String)> {
    let shop = ShopId::parse(&shop).ok_or_else(ApiError::not_found)?;
    let q = query(q)?;
    let mut errs = ValidationErrors::new();
    let include_platform = flag(&q, "include_platform", &mut errs);
    let price = number(&q, "price", "an amount in minor units", &mut errs);
    let page = page_params(&q, &mut errs);
    state.discovery.check(price, &page, &mut errs);
    errs.finish(()).map_err(ApiError::validation)?;
    let page = state
        .discovery
        .shop(&caller.principal, shop, include_platform, price, page)
        .await?;
    Ok(answer(page))
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the query; the handler reads it by hand to report every bad parameter
pub struct GoodsParams {
    /// The shop selling the product (a goods id is the shop's own). Required.
    #[param(
        pattern = "^([1-9][0-9]{0,17}|[1-8][0-9]{18}|9[0-1][0-9]{17}|92[0-1][0-9]{16}|922[0-2][0-9]{15}|9223[0-2][0-9]{14}|92233[0-6][0-9]{13}|922337[0-1][0-9]{12}|92233720[0-2][0-9]{10}|922337203[0-5][0-9]{9}|9223372036[0-7][0-9]{8}|92233720368[0-4][0-9]{7}|922337203685[0-3][0-9]{6}|9223372036854[0-6][0-9]{5}|92233720368547[0-6][0-9]{4}|922337203685477[0-4][0-9]{3}|9223372036854775[0-7][0-9]{2}|922337203685477580[0-6]|9223372036854775807)$"
    )]
    shop_id: String,
    /// The product's price in minor units, the reference for `discount` and the order.
    /// Default 10000 (100.00).
    #[param(minimum = 0, maximum = 1_000_000_000_000i64)]
    price: Option<i64>,
    /// List sold-out templates too (`stock_level: sold_out`). Default `false`.
    include_sold_out: Option<bool>,
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The templates that apply to one product: the shop's shop-wide templates, its
/// goods-scoped ones listing the product, and platform templates (platform-wide, or
/// goods-scoped listing it). Same window, order and per-user fields as the shop listing.
#[utoipa::path(get, path = "/api/v1/goods/{goods_id}/templates", tag = "discovery",
    params(("goods_id" = String, Path, description = "goods id (a positive integer)", pattern = "^([1-9][0-9]{0,17}|[1-8][0-9]{18}|9[0-1][0-9]{17}|92[0-1][0-9]{16}|922[0-2][0-9]{15}|9223[0-2][0-9]{14}|92233[0-6][0-9]{13}|922337[0-1][0-9]{12}|92233720[0-2][0-9]{10}|922337203[0-5][0-9]{9}|9223372036[0-7][0-9]{8}|92233720368[0-4][0-9]{7}|922337203685[0-3][0-9]{6}|9223372036854[0-6][0-9]{5}|92233720368547[0-6][0-9]{4}|922337203685477[0-4][0-9]{3}|9223372036854775[0-7][0-9]{2}|922337203685477580[0-6]|9223372036854775807)$"), GoodsParams),
    security(("bearer" = [])),
    responses(
        (status = 200, body = DiscoveryPage, headers(
            ("X-Partial" = Option<bool>, description = "`true` when the hot state could not be read: stored stock, no per-user fields"),
        )),
        BearerErrors, NotFound,
        (status = 422, body = Problem, content_type = PROBLEM_JSON, description = "VALIDATION_FAILED: shop_id missing or bad; bad price, include_sold_out, limit or cursor"),
    ))]
pub async fn goods_templates(
    State(state): State<AppState>,
    caller: Caller<AnyRole>,
    Path(goods): Path<String>,
    q: RawQuery,
) -> ApiResult<(HeaderMap, String)> {
    let goods = GoodsId::parse(&goods).ok_or_else(ApiError::not_found)?;
    let q = query(q)?;
    let mut errs = ValidationErrors::new();
    let shop = match q.get("shop_id") {
        None => {
            errs.add("shop_id", "is required");
            None
        }
        Some(s) => {
            let id = ShopId::parse(s);
            if id.is_none() {
                errs.add("shop_id", "must be a positive integer id");
            }
            id
        }
    };
    let price = number(&q, "price", "an amount in minor units", &mut errs);
    let page = page_params(&q, &mut errs);
    state.discovery.check(price, &page, &mut errs);
    let shop = errs
        .finish(shop)
        .map_err(ApiError::validation)?
        .ok_or_else(|| ApiError::validation(ValidationErrors::single("shop_id", "is required")))?;
    let page = state
        .discovery
        .goods(&caller.principal, shop, goods, price, page)
        .await?;
    Ok(answer(page))
}

#[derive(ToSchema)]
// The handler refuses fields it does not know: published as `additionalProperties: false`.
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ClaimableBody {
    /// 1–100 lines.
    #[schema(min_items = 1, max_items = 100)]
    items: Vec<CartLine>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the query; the handler reads it by hand to report every bad parameter
pub struct ClaimableParams {
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// For a cart: the templates the user could claim right now (window open, stock left,
/// under the per-user limit) that would lower this cart's price, each with the discount it
/// would give on this cart on its own (the quote's rules), best first. Templates of the
/// cart's shops and platform templates are considered.
#[utoipa::path(post, path = "/api/v1/checkout/claimable", tag = "discovery",
    params(ClaimableParams),
    request_body = ClaimableBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = DiscoveryPage, headers(
            ("X-Partial" = Option<bool>, description = "`true` when the hot state could not be read: stored stock, no per-user fields"),
        )),
        ClaimErrors, JsonBodyErrors,
        (status = 422, body = Problem, content_type = PROBLEM_JSON, description = "VALIDATION_FAILED: every bad cart line or field at once, or a bad limit or cursor"),
    ))]
pub async fn claimable(
    State(state): State<AppState>,
    caller: Caller<UserOnly>,
    q: RawQuery,
    JsonObject(body): JsonObject,
) -> ApiResult<(HeaderMap, String)> {
    let q = query(q)?;
    let mut errs = ValidationErrors::new();
    let page = PageParams {
        limit: number(&q, "limit", "an integer from 1 to 100", &mut errs),
        cursor: q.get("cursor").cloned(),
        include_sold_out: false,
    };
    state.discovery.check(None, &page, &mut errs);
    let mut f = Fields::new(body);
    let drafts = read_items(&mut f, &mut errs);
    for e in f.finish().into_vec() {
        errs.add(&e.field, e.message);
    }
    let cart = cart_of(drafts, errs)?;
    let page = state
        .discovery
        .claimable(&caller.principal, &cart, page)
        .await?;
    Ok(answer(page))
}
