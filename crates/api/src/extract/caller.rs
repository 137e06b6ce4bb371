//! `Caller<R>`: the verified principal of a request, where `R` names the roles the endpoint
//! admits. The role set sits in each handler's signature, so "who may call this" is declared
//! next to the code it guards, and is checked before the handler body runs.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use stampede_domain::ErrorCode;
use stampede_domain::auth::{Principal, Role};
use std::marker::PhantomData;

pub trait Allowed: Send + Sync + 'static {
    const ROLES: &'static [Role];
}

/// Merchants (own shop) and admins (any shop).
pub struct BackOfficeRoles;
impl Allowed for BackOfficeRoles {
    const ROLES: &'static [Role] = &[Role::Merchant, Role::Admin];
}

pub struct AdminOnly;
impl Allowed for AdminOnly {
    const ROLES: &'static [Role] = &[Role::Admin];
}

/// Shoppers: the `user` role.
pub struct UserOnly;
impl Allowed for UserOnly {
    const ROLES: &'static [Role] = &[Role::User];
}

/// Settlement: users for themselves, the order service for any user.
pub struct SettlementRoles;
impl Allowed for SettlementRoles {
    const ROLES: &'static [Role] = &[Role::User, Role::Service];
}

/// Any authenticated caller.
pub struct AnyRole;
impl Allowed for AnyRole {
    const ROLES: &'static [Role] = &[Role::User, Role::Merchant, Role::Admin, Role::Service];
}

pub struct Caller<R: Allowed> {
    pub principal: Principal,
    _roles: PhantomData<R>,
}

impl<R: Allowed> FromRequestParts<AppState> for Caller<R> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Unauthenticated,
                    "send Authorization: Bearer <token>",
                )
            })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Unauthenticated,
                    "the Authorization header must be a Bearer token",
                )
            })?;
        let principal = state.auth.tokens().verify(token).map_err(ApiError::from)?;
        if !R::ROLES.contains(&principal.role) {
            let allowed: Vec<&str> = R::ROLES.iter().map(|r| r.as_str()).collect();
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "this endpoint is for {}; the token's role is {}",
                    allowed.join(", "),
                    principal.role.as_str()
                ),
            ));
        }
        Ok(Caller {
            principal,
            _roles: PhantomData,
        })
    }
}
