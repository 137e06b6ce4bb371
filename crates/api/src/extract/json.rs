//! JSON bodies: content type checked (415), size limited by the router's `DefaultBodyLimit`
//! (413), syntax checked (400), and the root must be an object (422). Handlers then read
//! fields one by one with `Fields`, which reports every bad field at once.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde_json::{Map, Value};
use stampede_core::auth::sha256_hex;
use stampede_domain::{ErrorCode, ValidationErrors};

pub struct JsonObject(pub Map<String, Value>);

/// Like `JsonObject`, but an empty body or `null` is accepted as "no fields" (for actions
/// whose body is optional, such as logout or terminate).
pub struct OptionalJsonObject(pub Map<String, Value>);

fn is_json(req: &Request) -> bool {
    let Some(ct) = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

async fn read(req: Request, optional: bool) -> Result<Map<String, Value>, ApiError> {
    let has_ct = req.headers().contains_key(header::CONTENT_TYPE);
    let json = is_json(&req);
    let bytes = Bytes::from_request(req, &()).await.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                "the request body is larger than this endpoint accepts",
            )
        } else {
            ApiError::new(
                ErrorCode::MalformedRequest,
                "the request body could not be read",
            )
        }
    })?;
    // No body at all is "absent"; whitespace alone is not JSON, so it is a malformed body.
    if optional && bytes.is_empty() && (!has_ct || json) {
        return Ok(Map::new());
    }
    if !json {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the body as JSON with Content-Type: application/json",
        ));
    }
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::MalformedRequest,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    match value {
        Value::Object(map) => Ok(map),
        // An optional body may also be sent as `null` (what its published schema allows).
        Value::Null if optional => Ok(Map::new()),
        _ => Err(ApiError::validation(ValidationErrors::single(
            "body",
            "must be a JSON object",
        ))),
    }
}

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        read(req, false).await.map(JsonObject)
    }
}

impl<S: Send + Sync> FromRequest<S> for OptionalJsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        read(req, true).await.map(OptionalJsonObject)
    }
}

/// A hash of the body that ignores key order and whitespace, so a client retrying with the
/// same content but a different serializer still matches its idempotency record.
pub fn canonical_hash(map: &Map<String, Value>) -> String {
    fn canon(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    if let Some(x) = m.get(k) {
                        canon(x, out);
                    }
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canon(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut s = String::new();
    canon(&Value::Object(map.clone()), &mut s);
    sha256_hex(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_hash_ignores_key_order() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[1,2],"x":"s"}}"#).unwrap_or_default();
        let b: Value =
            serde_json::from_str(r#"{ "a": {"x":"s","y":[1,2]}, "b": 1 }"#).unwrap_or_default();
        let c: Value =
            serde_json::from_str(r#"{"b":2,"a":{"y":[1,2],"x":"s"}}"#).unwrap_or_default();
        let (Value::Object(a), Value::Object(b), Value::Object(c)) = (a, b, c) else {
            panic!()
        };
        assert_eq!(canonical_hash(&a), canonical_hash(&b));
        assert_ne!(canonical_hash(&a), canonical_hash(&c));
    }
}
