//! Shopper endpoints: the public template view, claiming, my coupons.

use crate::error::{ApiError, ApiResult, PROBLEM_JSON, Problem};
use crate::extract::{AnyRole, Caller, Fields, OptionalJsonObject, UserOnly, idempotency_key};
use crate::flow::ClientIp;
use crate::responses::{BearerErrors, ClaimErrors, NotFound};
use crate::state::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::Serialize;
use stampede_core::claims::PublicTemplate;
use stampede_domain::coupon::{CouponStatus, UserCoupon};
use stampede_domain::ids::{CouponId, TemplateId};
use stampede_domain::{ErrorCode, ValidationErrors};
use std::collections::HashMap;
use utoipa::{IntoParams, ToSchema};

/// A template as shoppers see it, with the stock left right now. Served from cache; an
/// unknown id costs no database query (bloom filter + negative cache).
#[utoipa::path(get, path = "/api/v1/templates/{id}", tag = "engine",
    params(("id" = String, Path, description = "template id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = PublicTemplate),
        BearerErrors, NotFound,
    ))]
pub async fn get_template(
    State(state): State<AppState>,
    _caller: Caller<AnyRole>,
    Path(id): Path<String>,
) -> ApiResult<Json<PublicTemplate>> {
    let id = TemplateId::parse(&id).ok_or_else(ApiError::not_found)?;
    Ok(Json(state.claims.public_template(id).await?))
}

#[derive(Serialize, ToSchema)]
pub struct ClaimResponse {
    pub coupon: UserCoupon,
}

/// Claim one coupon. Answered 201 only once the claim is durable. With an `Idempotency-Key`,
/// a repeat answers 200 with the same coupon and takes nothing more.
#[utoipa::path(post, path = "/api/v1/templates/{id}/claim", tag = "engine",
    params(("id" = String, Path, description = "template id"),
           ("Idempotency-Key" = Option<String>, Header, description = "1–255 visible ASCII characters")),
    security(("bearer" = [])),
    responses(
        (status = 201, body = ClaimResponse, description = "claimed"),
        (status = 200, body = ClaimResponse, description = "replay of an earlier claim with the same Idempotency-Key"),
        ClaimErrors, NotFound,
        (status = 409, body = Problem, content_type = PROBLEM_JSON, description = "SOLD_OUT, LIMIT_REACHED, CLAIM_NOT_STARTED, CLAIM_ENDED or TEMPLATE_TERMINATED"),
        (status = 422, body = Problem, content_type = PROBLEM_JSON, description = "VALIDATION_FAILED: a bad Idempotency-Key or body"),
        (status = 429, body = Problem, content_type = PROBLEM_JSON, description = "RATE_LIMITED: over a flow-control rule (claim route, user, IP or template); see Retry-After"),
        (status = 503, body = Problem, content_type = PROBLEM_JSON, description = "UNAVAILABLE: the claim could not be made durable; nothing was taken. OVERLOADED: the node sheds load; see Retry-After"),
    ))]
pub async fn claim(
    State(state): State<AppState>,
    caller: Caller<UserOnly>,
    Path(id): Path<String>,
    client_ip: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    OptionalJsonObject(body): OptionalJsonObject,
) -> ApiResult<(StatusCode, Json<ClaimResponse>)> {
    let id = TemplateId::parse(&id).ok_or_else(ApiError::not_found)?;
    let user = stampede_core::claims::user_of(&caller.principal).ok();
    let ip = client_ip.map(|Extension(ClientIp(ip))| ip);
    state
        .flow
        .check_claim(user.map(|u| u.get()), ip, id.get())
        .await?;
    Fields::new(body)
        .finish()
        .finish(())
        .map_err(ApiError::validation)?;
    let key = idempotency_key(&headers)?;
    let (coupon, replayed) = state
        .claims
        .claim(&caller.principal, id, key.as_deref())
        .await?;
    let status = if replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(ClaimResponse { coupon })))
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the query; the handler reads it by hand to report every bad parameter
pub struct CouponParams {
    /// `unused`, `locked`, `used`, `expired` or `revoked`.
    status: Option<CouponStatus>,
    /// 1–100, default 20.
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CouponPage {
    /// Ordered by `valid_until`, then id.
    pub items: Vec<UserCoupon>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The caller's coupons. A claim answered 201 shows up here at once.
#[utoipa::path(get, path = "/api/v1/me/coupons", tag = "engine",
    params(CouponParams),
    security(("bearer" = [])),
    responses(
        (status = 200, body = CouponPage),
        ClaimErrors,
        (status = 422, body = Problem, content_type = PROBLEM_JSON, description = "VALIDATION_FAILED: bad status, limit or cursor"),
    ))]
pub async fn my_coupons(
    State(state): State<AppState>,
    caller: Caller<UserOnly>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<CouponPage>> {
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::MalformedRequest, e.body_text()))?;
    let mut errs = ValidationErrors::new();
    let status = match q.get("status").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => {
            let st = CouponStatus::parse(s);
            if st.is_none() {
                errs.add(
                    "status",
                    format!("must be one of: {}", CouponStatus::ALL.join(", ")),
                );
            }
            st
        }
    };
    let limit = match q.get("limit") {
        None => None,
        Some(l) => {
            let n = l.parse::<u32>().ok();
            if n.is_none() {
                errs.add("limit", "must be a non-negative integer");
            }
            n
        }
    };
    errs.finish(()).map_err(ApiError::validation)?;
    let (items, next_cursor) = state
        .claims
        .my_coupons(
            &caller.principal,
            status,
            limit,
            q.get("cursor").map(String::as_str),
        )
        .await?;
    Ok(Json(CouponPage { items, next_cursor }))
}

/// One of the caller's coupons (another user's is 404).
#[utoipa::path(get, path = "/api/v1/me/coupons/{id}", tag = "engine",
    params(("id" = String, Path, description = "coupon id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = UserCoupon),
        ClaimErrors, NotFound,
    ))]
pub async fn my_coupon(
    State(state): State<AppState>,
    caller: Caller<UserOnly>,
    Path(id): Path<String>,
) -> ApiResult<Json<UserCoupon>> {
    let id = CouponId::parse(&id).ok_or_else(ApiError::not_found)?;
    Ok(Json(state.claims.my_coupon(&caller.principal, id).await?))
}
