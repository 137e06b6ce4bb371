//! `POST /merchant/templates`: create a template from a JSON body read field by field, so
//! every type error is reported at once, with the rule errors of the use case.

use crate::error::{ApiResult, PROBLEM_JSON, Problem};
use crate::extract::{
    BackOfficeRoles, Caller, Fields, JsonObject, canonical_hash, idempotency_key,
};
use crate::responses::{BackOfficeErrors, JsonBodyErrors};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use stampede_core::backoffice::{CreateTemplate, IdempotencyKey};
use stampede_domain::ValidationErrors;
use stampede_domain::ids::{GoodsId, ShopId};
use stampede_domain::template::{Kind, Scope, Source, Template, TemplateDraft};
use utoipa::ToSchema;

/// The body of `POST /merchant/templates`. Money is integer minor units; times RFC 3339.
/// Give validity either as `valid_from` + `valid_until` (absolute) or as `validity_hours`
/// (relative to the claim; an optional `valid_until` then caps it). Unknown fields are rejected.
#[derive(ToSchema)]
// The handler refuses fields it does not know: published as `additionalProperties: false`.
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documents the contract; the handler reads fields with `Fields`
pub struct CreateTemplateBody {
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
    #[schema(max_length = 1000)]
    instructions: Option<String>,
    /// `platform` is for admins only. Default `shop`.
    source: Option<Source>,
    /// Admins name the shop of a `shop` template; merchants may omit it (their own).
    #[schema(value_type = Option<String>, pattern = "^([1-9][0-9]{0,17}|[1-8][0-9]{18}|9[0-1][0-9]{17}|92[0-1][0-9]{16}|922[0-2][0-9]{15}|9223[0-2][0-9]{14}|92233[0-6][0-9]{13}|922337[0-1][0-9]{12}|92233720[0-2][0-9]{10}|922337203[0-5][0-9]{9}|9223372036[0-7][0-9]{8}|92233720368[0-4][0-9]{7}|922337203685[0-3][0-9]{6}|9223372036854[0-6][0-9]{5}|92233720368547[0-6][0-9]{4}|922337203685477[0-4][0-9]{3}|9223372036854775[0-7][0-9]{2}|922337203685477580[0-6]|9223372036854775807)$")]
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

/// Create a template.
///
/// With an `Idempotency-Key`, repeating the same body returns the same template with 200;
/// the same key with a different body is 422 `IDEMPOTENCY_KEY_REUSED`. Keys are kept ≥ 24 h.
#[utoipa::path(post, path = "/api/v1/merchant/templates", tag = "back-office",
    request_body = CreateTemplateBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "1–255 visible ASCII characters", pattern = "^[!-~]{1,255}$")),
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
