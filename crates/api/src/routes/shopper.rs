//! Shopper endpoints: the public template view, claiming, my coupons.

use crate::error::{ApiError, ApiResult, PROBLEM_JSON, Problem};
use crate::extract::{AnyRole, Caller, Fields, OptionalJsonObject, UserOnly, idempotency_key};
use crate::flow::ClientIp;
use crate::responses::{BearerErrors, ClaimErrors, JsonBodyErrors, NotFound};
use crate::state::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::{Extension, Json};
use serde::Serialize;
use stampede_core::claims::PublicTemplate;
use stampede_domain::coupon::{CouponStatus, UserCoupon};
use stampede_domain::ids::{CouponId, TemplateId};
use stampede_domain::{ErrorCode, ValidationErrors};
use std::collections::HashMap;
use utoipa::{IntoParams, ToSchema};

/// A template as shoppers see it, with the stock left right now. Served from cache; an
/// unknown id costs no database query (bloom filter + negative cache). When the database
/// cannot be read, this node's last copy answers (stale-if-error): same body, with `Age`
/// (seconds since the copy was loaded), `X-Stale: true` and `Warning: 110`.
#[utoipa::path(get, path = "/api/v1/templates/{id}", operation_id = "get_public_template", tag = "engine",
    params(("id" = String, Path, description = "template id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = PublicTemplate, headers(
            ("Age" = Option<u64>, description = "present on a stale copy: seconds since it was loaded"),
            ("X-Stale" = Option<bool>, description = "`true` when the database could not be read and a stale copy answered"),
        )),
        BearerErrors, NotFound,
    ))]
pub async fn get_template(
    State(state): State<AppState>,
    _caller: Caller<AnyRole>,
    Path(id): Path<String>,
) -> ApiResult<(HeaderMap, Json<PublicTemplate>)> {
    let id = TemplateId::parse(&id).ok_or_else(ApiError::not_found)?;
    let (view, age) = state.claims.public_template(id).await?;
    let mut headers = HeaderMap::new();
    if let Some(age) = age {
        headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
        headers.insert(STALE, HeaderValue::from_static("true"));
        headers.insert(
            header::WARNING,
            HeaderValue::from_static("110 - \"Response is Stale\""),
        );
    }
    Ok((headers, Json(view)))
}

/// Marks an answer served from this node's copy because the database could not be read.
const STALE: &str = "x-stale";
/// Marks a list that holds only what this node has (the database could not be read).
const PARTIAL: &str = "x-partial";

#[derive(Serialize, ToSchema)]
pub struct ClaimResponse {
    pub coupon: UserCoupon,
}

/// Claim one coupon. Answered 201 only once the claim is durable. With an `Idempotency-Key`,
/// a repeat answers 200 with the same coupon and takes nothing more.
///
/// The key is required by default (`engine.claim_key_required`): without it, 400
/// `IDEMPOTENCY_KEY_REQUIRED`. When the claim reached the hot store but its answer was lost
/// (connection reset, timeout), the node looks the claim up by its key before answering: if
/// it happened, the answer is the original 201; if that cannot be known, 503
/// `OUTCOME_UNKNOWN`: the claim may or may not have been made, and retrying with the SAME
/// `Idempotency-Key` is the way to learn which (200 with the coupon, or a fresh decision).
/// A plain 503 `UNAVAILABLE` means nothing was taken.
#[utoipa::path(post, path = "/api/v1/templates/{id}/claim", tag = "engine",
    params(("id" = String, Path, description = "template id"),
           ("Idempotency-Key" = Option<String>, Header, description = "1–255 visible ASCII characters; required unless `engine.claim_key_required = false`", pattern = "^[!-~]{1,255}$")),
    security(("bearer" = [])),
    responses(
        (status = 201, body = ClaimResponse, description = "claimed"),
        (status = 200, body = ClaimResponse, description = "replay of an earlier claim with the same Idempotency-Key"),
        (status = 400, body = Problem, content_type = PROBLEM_JSON, description = "IDEMPOTENCY_KEY_REQUIRED: the claim carries no Idempotency-Key"),
        JsonBodyErrors, ClaimErrors, NotFound,
        (status = 409, body = Problem, content_type = PROBLEM_JSON, description = "SOLD_OUT, LIMIT_REACHED, CLAIM_NOT_STARTED, CLAIM_ENDED or TEMPLATE_TERMINATED"),
        (status = 422, body = Problem, content_type = PROBLEM_JSON, description = "VALIDATION_FAILED: a bad Idempotency-Key or body"),
        (status = 429, body = Problem, content_type = PROBLEM_JSON, description = "RATE_LIMITED: over a flow-control rule (claim route, user, IP or template); see Retry-After"),
        (status = 503, body = Problem, content_type = PROBLEM_JSON, description = "UNAVAILABLE: the claim could not be made (nothing was taken; `dependency` names what is missing). OUTCOME_UNKNOWN: its answer was lost and it may have been made: retry with the same Idempotency-Key. OVERLOADED: the node sheds load; see Retry-After"),
    ))]
pub async fn claim(
    state: State<AppState>,
    caller: Caller<UserOnly>,
    id: Path<String>,
    client_ip: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    body: OptionalJsonObject,
) -> ApiResult<(StatusCode, Json<ClaimResponse>)> {
    let answer = claim_once(state, caller, id, client_ip, headers, body).await;
    // Claims by outcome: `claimed`, `replayed`, or the refusal's code (`SOLD_OUT`, …).
    let outcome = match &answer {
        Ok((StatusCode::CREATED, _)) => "claimed",
        Ok(_) => "replayed",
        Err(e) => e.code().as_str(),
    };
    metrics::counter!(CLAIMS, "outcome" => outcome).increment(1);
    answer
}

/// Claims that reached the claim handler (past authentication), by outcome.
pub const CLAIMS: &str = "stampede_claims_total";

async fn claim_once(
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
    #[param(minimum = 1, maximum = 100)]
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
    /// Present (`true`) only when the database could not be read: the page lists what this
    /// node holds (claims not yet persisted, unused coupons it cached), not everything.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

/// The caller's coupons. A claim answered 201 shows up here at once. When the database
/// cannot be read, the answer is still 200 with what this node holds, marked
/// `"partial": true` and `X-Partial: true`.
#[utoipa::path(get, path = "/api/v1/me/coupons", tag = "engine",
    params(CouponParams),
    security(("bearer" = [])),
    responses(
        (status = 200, body = CouponPage, headers(
            ("X-Partial" = Option<bool>, description = "`true` when the database could not be read and the page is partial"),
        )),
        ClaimErrors,
        (status = 422, body = Problem, content_type = PROBLEM_JSON, description = "VALIDATION_FAILED: bad status, limit or cursor"),
    ))]
pub async fn my_coupons(
    State(state): State<AppState>,
    caller: Caller<UserOnly>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<(HeaderMap, Json<CouponPage>)> {
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::MalformedRequest, e.body_text()))?;
    let mut errs = ValidationErrors::new();
    let status = match q.get("status") {
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
    let page = state
        .claims
        .my_coupons(
            &caller.principal,
            status,
            limit,
            q.get("cursor").map(String::as_str),
        )
        .await?;
    let mut headers = HeaderMap::new();
    if page.partial {
        headers.insert(PARTIAL, HeaderValue::from_static("true"));
    }
    Ok((
        headers,
        Json(CouponPage {
            items: page.items,
            next_cursor: page.next_cursor,
            partial: page.partial,
        }),
    ))
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
