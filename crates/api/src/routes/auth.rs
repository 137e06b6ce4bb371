//! Login, token refresh with rotation, logout, and account creation by admins.

use crate::error::{ApiError, ApiResult, PROBLEM_JSON, Problem};
use crate::extract::{AdminOnly, AnyRole, Caller, Fields, JsonObject, OptionalJsonObject};
use crate::responses::{AdminErrors, BearerErrors, JsonBodyErrors, ValidationFailed};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use stampede_core::auth::{NewAccount, TokenPair};
use stampede_domain::auth::Role;
use stampede_domain::ids::ShopId;
use utoipa::ToSchema;

#[derive(ToSchema)]
// The handler refuses fields it does not know: published as `additionalProperties: false`.
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct LoginBody {
    username: String,
    password: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Single use: each refresh returns a new one and retires this one.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until `access_token` expires.
    pub expires_in: i64,
}

impl From<TokenPair> for TokenResponse {
    fn from(p: TokenPair) -> Self {
        Self {
            access_token: p.access_token,
            refresh_token: p.refresh_token,
            token_type: p.token_type,
            expires_in: p.expires_in,
        }
    }
}

fn required(f: &mut Fields, name: &'static str) -> Option<String> {
    let v = f.string(name);
    if v.is_none() && !f.errors.has(name) {
        f.errors.add(name, "is required");
    }
    v
}

/// Exchange a username and password for an access and a refresh token.
///
/// Throttled: after `auth.login_account_free_failures` failed logins of one account (or
/// `auth.login_ip_free_failures` from one client address, the TCP peer), further attempts
/// are refused with 429 `RATE_LIMITED` and `Retry-After` for a lockout that starts at
/// `auth.login_lockout_initial_ms` and doubles with each further failure up to
/// `auth.login_lockout_max_secs`; a successful login clears its account's failures. At most
/// `auth.login_max_in_flight` password checks run at once per node: beyond, after
/// `auth.login_queue_wait_ms`, 503 `OVERLOADED`.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginBody, responses(
    (status = 200, body = TokenResponse),
    JsonBodyErrors, ValidationFailed,
    (status = 401, body = Problem, content_type = PROBLEM_JSON, description = "UNAUTHENTICATED: wrong username or password"),
    (status = 429, body = Problem, content_type = PROBLEM_JSON, description = "RATE_LIMITED: too many failed logins for this account or address; see Retry-After"),
    (status = 503, body = Problem, content_type = PROBLEM_JSON, description = "OVERLOADED: too many logins being checked; see Retry-After. UNAVAILABLE: the database is unavailable"),
))]
pub async fn login(
    State(state): State<AppState>,
    extensions: axum::http::Extensions,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<TokenResponse>> {
    // The TCP peer: forwarded headers are not trusted (no trusted-proxy setting exists).
    let ip = extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let mut f = Fields::new(body);
    let username = required(&mut f, "username");
    let password = required(&mut f, "password");
    let (username, password) = match (username, password, f.finish()) {
        (Some(u), Some(p), errs) if errs.is_empty() => (u, p),
        (_, _, errs) => return Err(ApiError::validation(errs)),
    };
    Ok(Json(
        state
            .auth
            .login_from(&username, &password, ip.as_deref())
            .await?
            .into(),
    ))
}

#[derive(ToSchema)]
// The handler refuses fields it does not know: published as `additionalProperties: false`.
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RefreshBody {
    refresh_token: String,
}

/// Trade a refresh token for a new pair. The old refresh token stops working; presenting it
/// again revokes the whole session.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshBody, responses(
    (status = 200, body = TokenResponse),
    JsonBodyErrors, ValidationFailed,
    (status = 401, body = Problem, content_type = PROBLEM_JSON, description = "UNAUTHENTICATED: the refresh token is invalid, expired, rotated or revoked"),
))]
pub async fn refresh(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<TokenResponse>> {
    let mut f = Fields::new(body);
    let token = required(&mut f, "refresh_token");
    let errs = f.finish();
    let token = match token {
        Some(t) if errs.is_empty() => t,
        _ => return Err(ApiError::validation(errs)),
    };
    Ok(Json(state.auth.refresh(&token).await?.into()))
}

#[derive(ToSchema)]
// The handler refuses fields it does not know: published as `additionalProperties: false`.
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct LogoutBody {
    /// Also end the session this refresh token belongs to.
    refresh_token: Option<String>,
}

/// End the caller's session: its refresh tokens stop working. Idempotent.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", request_body(content = Option<LogoutBody>), security(("bearer" = [])), responses(
    (status = 204, description = "logged out"),
    BearerErrors, JsonBodyErrors, ValidationFailed,
))]
pub async fn logout(
    State(state): State<AppState>,
    caller: Caller<AnyRole>,
    OptionalJsonObject(body): OptionalJsonObject,
) -> ApiResult<StatusCode> {
    let mut f = Fields::new(body);
    let token = f.string("refresh_token");
    f.finish().finish(()).map_err(ApiError::validation)?;
    state
        .auth
        .logout(&caller.principal, token.as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(ToSchema)]
// The handler refuses fields it does not know: published as `additionalProperties: false`.
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CreateAccountBody {
    /// 3–64 of letters, digits and `. _ @ -`.
    #[schema(pattern = "^[A-Za-z0-9._@-]{3,64}$")]
    username: String,
    /// 8–128 characters.
    #[schema(min_length = 8, max_length = 128)]
    password: String,
    role: Role,
    /// Required for merchants, absent for other roles.
    #[schema(value_type = Option<String>, pattern = "^([1-9][0-9]{0,17}|[1-8][0-9]{18}|9[0-1][0-9]{17}|92[0-1][0-9]{16}|922[0-2][0-9]{15}|9223[0-2][0-9]{14}|92233[0-6][0-9]{13}|922337[0-1][0-9]{12}|92233720[0-2][0-9]{10}|922337203[0-5][0-9]{9}|9223372036[0-7][0-9]{8}|92233720368[0-4][0-9]{7}|922337203685[0-3][0-9]{6}|9223372036854[0-6][0-9]{5}|92233720368547[0-6][0-9]{4}|922337203685477[0-4][0-9]{3}|9223372036854775[0-7][0-9]{2}|922337203685477580[0-6]|9223372036854775807)$")]
    shop_id: Option<ShopId>,
}

#[derive(Serialize, ToSchema)]
pub struct AccountView {
    pub id: String,
    pub username: String,
    pub role: Role,
    pub shop_id: Option<ShopId>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: jiff::Timestamp,
}

/// Create an account (admins only).
#[utoipa::path(post, path = "/api/v1/admin/accounts", tag = "auth", request_body = CreateAccountBody, security(("bearer" = [])), responses(
    (status = 201, body = AccountView),
    JsonBodyErrors, AdminErrors, ValidationFailed,
    (status = 409, body = Problem, content_type = PROBLEM_JSON, description = "CONFLICT: username taken"),
))]
pub async fn create_account(
    State(state): State<AppState>,
    _caller: Caller<AdminOnly>,
    JsonObject(body): JsonObject,
) -> ApiResult<(StatusCode, Json<AccountView>)> {
    let mut f = Fields::new(body);
    let username = required(&mut f, "username");
    let password = required(&mut f, "password");
    let role = f.choice(
        "role",
        &["user", "merchant", "admin", "service"],
        Role::parse,
    );
    if role.is_none() && !f.errors.has("role") {
        f.errors.add("role", "is required");
    }
    let shop_id = f.id("shop_id", ShopId::parse);
    let mut errs = f.finish();
    let new = NewAccount {
        username: username.unwrap_or_default(),
        password: password.unwrap_or_default(),
        role: role.unwrap_or(Role::User),
        shop_id,
    };
    // Rule errors for fields the reader could not read would only repeat its message.
    for e in new.validate().into_vec() {
        if !errs.has(&e.field) && (e.field != "shop_id" || role.is_some()) {
            errs.add(&e.field, e.message);
        }
    }
    errs.finish(()).map_err(ApiError::validation)?;
    let a = state.auth.create_account(new).await?;
    Ok((
        StatusCode::CREATED,
        Json(AccountView {
            id: a.id.to_string(),
            username: a.username,
            role: a.role,
            shop_id: a.shop_id,
            created_at: a.created_at,
        }),
    ))
}
