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
    components(schemas(
        Problem,
        ErrorCode,
        stampede_domain::FieldError,
        crate::routes::distributions::failures::ReportFormat
    )),
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

/// OpenAPI requires a `description` on every response; one documented only by its body gets
/// its status's reason phrase, so generators that validate the document accept it (the HTTP
/// suite checks that none is left without).
pub fn describe_responses(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    for op in operations_mut(doc) {
        for (status, response) in op.responses.responses.iter_mut() {
            if let RefOr::T(r) = response
                && r.description.is_empty()
            {
                r.description = status
                    .parse::<u16>()
                    .ok()
                    .and_then(|s| axum::http::StatusCode::from_u16(s).ok())
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("Response")
                    .to_owned();
            }
        }
    }
}

/// Every operation of the document, mutably.
fn operations_mut(
    doc: &mut utoipa::openapi::OpenApi,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    doc.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ]
        .into_iter()
        .flatten()
    })
}

/// A request body any client (and a contract tester) can send as is: each operation's
/// request body example, keyed by operation id. Valid against the schema and the rules no
/// schema keyword states (the claim window ends in the future, a merchant names its shop).
pub fn request_examples() -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let cart = json!([
        {"goods_id": "1001", "shop_id": "7", "unit_price": 19900, "quantity": 2},
        {"goods_id": "1002", "shop_id": "7", "unit_price": 4500, "quantity": 1}
    ]);
    vec![
        (
            "login",
            json!({"username": "merchant.seven", "password": "correct horse battery"}),
        ),
        (
            "refresh",
            json!({"refresh_token": "c2Vzc2lvbi1yZWZyZXNoLXRva2Vu"}),
        ),
        (
            "logout",
            json!({"refresh_token": "c2Vzc2lvbi1yZWZyZXNoLXRva2Vu"}),
        ),
        (
            "create_account",
            json!({"username": "merchant.seven", "password": "correct horse battery",
                   "role": "merchant", "shop_id": "7"}),
        ),
        (
            "put_flow_rules",
            json!({"routes": {"claim": {"per_second": 50000, "burst": 100000}},
                   "claim_per_user": {"per_second": 100, "burst": 200},
                   "concurrency": {"max_in_flight": 1024, "settlement_reserved": 64,
                                   "queue_timeout_ms": 50}}),
        ),
        (
            "create_template",
            json!({"name": "Flash sale: 10 off", "kind": "fixed", "amount_off": 1000,
                   "stock_total": 1000, "per_user_limit": 1,
                   "claim_start": "2026-01-01T00:00:00Z", "claim_end": "2099-12-31T00:00:00Z",
                   "validity_hours": 72}),
        ),
        ("add_stock", json!({"add": 500})),
        (
            "upload_distribution",
            json!({"template_id": "7243001234567890", "name": "November push",
                   "file": "user_id\n42\n43\n"}),
        ),
        (
            "set_reminder",
            json!({"channel": "app", "minutes_before": 15}),
        ),
        ("claimable", json!({"items": cart})),
        ("quote", json!({"user_id": "42", "items": cart})),
        (
            "lock",
            json!({"user_id": "42", "coupon_ids": ["7243001234567890"], "items": cart,
                   "expected_discount": 1000}),
        ),
        ("redeem", json!({"user_id": "42"})),
        ("release", json!({"user_id": "42"})),
        (
            "refund",
            json!({"user_id": "42", "coupon_ids": ["7243001234567890"]}),
        ),
    ]
}

/// Links a contract tester follows to chain calls on real data: create a template, claim it,
/// lock, redeem and refund the coupon; read what was created; page with the cursors the API
/// returns. `(source operation, status, link name, target operation, parameters, body)`.
type LinkSpec = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    Option<serde_json::Value>,
);

fn link_specs() -> Vec<LinkSpec> {
    use serde_json::json;
    const TEMPLATE: &[(&str, &str)] = &[("id", "$response.body#/id")];
    const COUPON: &[(&str, &str)] = &[("id", "$response.body#/coupon/id")];
    const ORDER: &[(&str, &str)] = &[("order_id", "$response.body#/order_id")];
    const DISTRIBUTION: &[(&str, &str)] = &[("id", "$response.body#/id")];
    let lock_body = json!({
        "coupon_ids": ["$response.body#/coupon/id"],
        "items": [{"goods_id": "1001", "shop_id": "$response.body#/coupon/shop_id",
                   "unit_price": 1_000_000_000_i64, "quantity": 1}]
    });
    let mut links: Vec<LinkSpec> = Vec::new();
    for status in ["201", "200"] {
        for (name, target) in [
            ("GetTemplate", "get_merchant_template"),
            ("AddStock", "add_stock"),
            ("Terminate", "terminate"),
            ("Audit", "audit"),
            ("PublicView", "get_public_template"),
            ("Claim", "claim"),
            ("SetReminder", "set_reminder"),
        ] {
            links.push(("create_template", status, name, target, TEMPLATE, None));
        }
        links.push(("claim", status, "MyCoupon", "my_coupon", COUPON, None));
        links.push((
            "claim",
            status,
            "Lock",
            "lock",
            &[],
            Some(lock_body.clone()),
        ));
    }
    for (name, target) in [
        ("Redeem", "redeem"),
        ("Release", "release"),
        ("Order", "get_order_coupons"),
    ] {
        links.push(("lock", "200", name, target, ORDER, None));
    }
    links.push(("redeem", "200", "Refund", "refund", ORDER, None));
    for status in ["202", "200"] {
        for (name, target) in [
            ("Get", "get_distribution"),
            ("Cancel", "cancel_distribution"),
            ("Failures", "distribution_failures"),
        ] {
            links.push((
                "upload_distribution",
                status,
                name,
                target,
                DISTRIBUTION,
                None,
            ));
        }
    }
    links.push((
        "create_account",
        "201",
        "Login",
        "login",
        &[],
        Some(json!({"username": "$request.body#/username",
                    "password": "$request.body#/password"})),
    ));
    links.push((
        "login",
        "200",
        "Refresh",
        "refresh",
        &[],
        Some(json!({"refresh_token": "$response.body#/refresh_token"})),
    ));
    links
}

/// Adds the request examples and the links. Both name operations by id, so a renamed
/// operation would silently drop them: the HTTP suite checks every one is in place.
pub fn add_examples_and_links(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::link::LinkBuilder;
    let examples = request_examples();
    let links = link_specs();
    for op in operations_mut(doc) {
        let Some(id) = op.operation_id.clone() else {
            continue;
        };
        if let Some((_, example)) = examples.iter().find(|(o, _)| *o == id)
            && let Some(RefOr::T(body)) = op.request_body.as_mut()
        {
            for content in body.content.values_mut() {
                if let RefOr::T(content) = content {
                    content.example = Some(example.clone());
                }
            }
        }
        for (_, status, name, target, params, body) in links.iter().filter(|l| l.0 == id) {
            let Some(RefOr::T(response)) = op.responses.responses.get_mut(*status) else {
                continue;
            };
            let mut link = LinkBuilder::new().operation_id(*target);
            for (p, v) in params.iter() {
                link = link.parameter(*p, *v);
            }
            response.links.insert(
                (*name).to_owned(),
                RefOr::T(link.request_body(body.clone()).build()),
            );
        }
    }
}

/// Keywords the derive cannot write: the route classes a flow rule may name (the key schema
/// of `routes`), that a lock's coupon ids are distinct, and that an optional header is a
/// string or absent (an `Option` field reads as "string or null", and a header has no null).
pub fn add_keywords(doc: &mut utoipa::openapi::OpenApi, classes: &[&str]) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
    for op in operations_mut(doc) {
        for p in op.parameters.iter_mut().flatten() {
            if let RefOr::T(p) = p
                && matches!(p.parameter_in, ParameterIn::Header)
                && let Some(RefOr::T(Schema::Object(s))) = p.schema.as_mut()
                && let SchemaType::Array(types) = &s.schema_type
            {
                let types: Vec<Type> = types
                    .iter()
                    .filter(|t| **t != Type::Null)
                    .cloned()
                    .collect();
                s.schema_type = match types.as_slice() {
                    [one] => SchemaType::Type(one.clone()),
                    _ => SchemaType::Array(types),
                };
            }
        }
    }
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    if let Some(RefOr::T(Schema::Object(lock))) = components.schemas.get_mut("LockBody")
        && let Some(RefOr::T(Schema::Array(ids))) = lock.properties.get_mut("coupon_ids")
    {
        ids.unique_items = true;
    }
    if let Some(RefOr::T(Schema::Object(rules))) = components.schemas.get_mut("FlowRules")
        && let Some(RefOr::T(Schema::Object(routes))) = rules.properties.get_mut("routes")
    {
        routes.property_names = Some(Box::new(Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(classes.iter().copied()))
                .build(),
        )));
    }
}

/// What a deployment's configuration changes in the contract: whether a claim must carry an
/// `Idempotency-Key`, and which reminder channels it delivers. The served document describes
/// this deployment, so a client generated from it sends what this server accepts.
pub fn for_deployment(
    doc: &mut utoipa::openapi::OpenApi,
    claim_key_required: bool,
    reminder_channels: &[&str],
) {
    use utoipa::openapi::schema::Schema;
    use utoipa::openapi::{RefOr, Required};
    if claim_key_required {
        for op in operations_mut(doc).filter(|o| o.operation_id.as_deref() == Some("claim")) {
            for p in op.parameters.iter_mut().flatten() {
                if let RefOr::T(p) = p
                    && p.name == "Idempotency-Key"
                {
                    p.required = Required::True;
                    p.description = Some("1–255 visible ASCII characters; required by this deployment (`engine.claim_key_required`)".to_owned());
                }
            }
        }
    }
    // A deployment without reminders keeps the full list (and refuses each with 422).
    if !reminder_channels.is_empty()
        && let Some(components) = doc.components.as_mut()
        && let Some(RefOr::T(Schema::Object(channel))) = components.schemas.get_mut("Channel")
    {
        channel.enum_values = Some(reminder_channels.iter().map(|c| (*c).into()).collect());
    }
}
