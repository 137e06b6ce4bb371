//! Stampede's HTTP surface: the axum router, our extractors, the problem+json error policy
//! (`error`), request ids and access logs (`request_id`), and the OpenAPI document.
//!
//! Layout: `routes/` has one module per resource (a directory with one file per route action
//! once it grows); `extract/` the body, field, caller and idempotency-key extractors;
//! `responses` the problem responses of the OpenAPI document, one set per endpoint family;
//! `state` what handlers share. The router is built from `utoipa_axum` so every route is
//! documented by construction. Business rules live in `stampede-core`.

pub mod error;
pub mod extract;
pub mod flow;
pub mod openapi;
pub mod request_id;
pub mod responses;
pub mod routes;
pub mod state;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use error::ApiError;
use stampede_domain::ErrorCode;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

pub use state::{AppState, HealthCheck, Shared};

/// HTTP limits, from the server's configuration.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Largest request body accepted by JSON endpoints.
    pub max_body_bytes: usize,
}

/// The routes and their OpenAPI document.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    use routes::{
        auth, discovery, distributions, flow_rules, ops, reminders, settlement, shopper, templates,
    };
    use utoipa_axum::router::UtoipaMethodRouterExt;
    let parts = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::create_account))
        .routes(routes!(
            flow_rules::get_flow_rules,
            flow_rules::put_flow_rules
        ))
        .routes(routes!(
            templates::create_template,
            templates::list_templates
        ))
        .routes(routes!(templates::get_template))
        .routes(routes!(templates::add_stock))
        .routes(routes!(templates::terminate))
        .routes(routes!(templates::audit))
        // The upload enforces its own (much larger) limit while it streams.
        .routes(
            routes!(distributions::upload, distributions::list).layer(DefaultBodyLimit::disable()),
        )
        .routes(routes!(distributions::get))
        .routes(routes!(distributions::cancel))
        .routes(routes!(distributions::failures))
        .routes(routes!(settlement::quote))
        .routes(routes!(settlement::lock))
        .routes(routes!(settlement::redeem))
        .routes(routes!(settlement::release))
        .routes(routes!(settlement::refund))
        .routes(routes!(settlement::get))
        .routes(routes!(shopper::get_template))
        .routes(routes!(shopper::claim))
        .routes(routes!(shopper::my_coupons))
        .routes(routes!(shopper::my_coupon))
        .routes(routes!(discovery::shop_templates))
        .routes(routes!(discovery::goods_templates))
        .routes(routes!(discovery::claimable))
        .routes(routes!(reminders::set_reminder, reminders::delete_reminder))
        .routes(routes!(reminders::my_reminders))
        .split_for_parts();
    let (routes, mut doc) = parts;
    openapi::describe_responses(&mut doc);
    openapi::add_examples_and_links(&mut doc);
    let classes: Vec<&str> = stampede_domain::flow::RouteClass::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    openapi::add_keywords(&mut doc, &classes);
    (routes, doc)
}

/// The complete application router.
pub fn router(state: AppState, limits: &HttpLimits) -> Router {
    let (routes, mut doc) = api();
    let channels: Vec<&str> = state
        .reminders
        .channels()
        .iter()
        .map(|c| c.as_str())
        .collect();
    openapi::for_deployment(&mut doc, state.claims.key_required(), &channels);
    routes
        .merge(SwaggerUi::new("/docs").url("/openapi.json", doc))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "this route does not accept that method",
            )
        })
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.flow.clone(),
            flow::admission,
        ))
        .layer(middleware::from_fn(request_id::request_context))
        .with_state(state)
}
