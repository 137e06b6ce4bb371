//! The OpenAPI document. Routes are registered through `utoipa_axum::routes!` in `lib.rs`,
//! so a route cannot exist without its documentation; this file adds what is global.

use crate::error::Problem;
use stampede_domain::ErrorCode;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Stampede",
        description = "High-concurrency coupon platform. Errors are `application/problem+json` with a stable `code`; ids are strings; money is integer minor units; times are RFC 3339. Every response carries `x-request-id`.",
        version = "1"
    ),
    components(schemas(Problem, ErrorCode, stampede_domain::FieldError)),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Login, token refresh, logout, accounts"),
        (name = "back-office", description = "Coupon templates for merchants (own shop) and admins (any shop)"),
        (name = "distribution", description = "Bulk push of a template's coupons to the users of an uploaded file"),
        (name = "engine", description = "Shoppers: template view, claims, my coupons"),
        (name = "discovery", description = "Shoppers: claimable coupons of a shop, a product and a cart"),
        (name = "settlement", description = "Checkout quote and the order lifecycle of coupons: lock, redeem, release, refund"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}
