//! The `claim` scenario's setup: templates created through the back-office API with an admin
//! token, and one user token per simulated user, all signed with the server's JWT secret.
//! Token minting and template creation are shared with the `distribution` scenario.

use crate::client::{Body, Target, bearer};
use crate::load::RequestMix;
use anyhow::{Context, bail};
use hyper::Method;
use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderValue;
use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use stampede_core::auth::TokenService;
use stampede_core::clock::SystemClock;
use stampede_domain::auth::{Principal, Role};
use stampede_domain::ids::ShopId;
use std::sync::Arc;

/// Tokens outlive any run.
const TOKEN_TTL: SignedDuration = SignedDuration::from_hours(24);

#[derive(Debug, Clone)]
pub struct ClaimSetup {
    pub users: u64,
    /// The first user id; users are `first_user .. first_user + users`.
    pub first_user: u64,
    pub templates: u64,
    pub stock: u64,
    pub limit: u64,
}

/// Creates the templates and mints the user tokens; returns the claim requests to fire.
pub async fn setup(target: &Target, secret: &[u8], cfg: &ClaimSetup) -> anyhow::Result<RequestMix> {
    if cfg.users == 0 || cfg.templates == 0 {
        bail!("--users and --templates must be at least 1");
    }
    let tokens = TokenService::new(secret, Arc::new(SystemClock));
    let admin = bearer(&mint(&tokens, Role::Admin, "1", None)?)?;

    let mut conn = target.connect().await?;
    let now = Timestamp::now();
    let start = now - SignedDuration::from_secs(1);
    let end = now + SignedDuration::from_hours(1);
    let mut uris = Vec::with_capacity(usize::try_from(cfg.templates).unwrap_or(0));
    for i in 0..cfg.templates {
        let body = json!({
            "name": format!("bench {i}"),
            "kind": "fixed",
            "amount_off": 100,
            "stock_total": cfg.stock,
            "shop_id": "1",
            "claim_start": start.to_string(),
            "claim_end": end.to_string(),
            "validity_hours": 24,
            "per_user_limit": cfg.limit,
        });
        let id = create_template(target, &mut conn, &admin, &body)
            .await
            .with_context(|| format!("creating template {i}"))?;
        uris.push(target.uri(&format!("/api/v1/templates/{id}/claim"))?);
    }

    let mut auths = Vec::with_capacity(usize::try_from(cfg.users).unwrap_or(0));
    for u in 0..cfg.users {
        let id = cfg.first_user.saturating_add(u);
        auths.push(bearer(&mint(&tokens, Role::User, &id.to_string(), None)?)?);
    }
    Ok(RequestMix {
        method: Method::POST,
        uris,
        auths,
    })
}

/// A token for `sub` in `role` (merchants need their `shop_id`), valid for a day.
pub fn mint(
    tokens: &TokenService,
    role: Role,
    sub: &str,
    shop_id: Option<ShopId>,
) -> anyhow::Result<String> {
    let p = Principal {
        subject: sub.to_owned(),
        role,
        shop_id,
        session_id: None,
    };
    tokens
        .mint(&p, TOKEN_TTL)
        .map_err(|e| anyhow::anyhow!("minting a token: {e}"))
}

/// `POST /api/v1/merchant/templates` with `body`: the new template's id.
pub async fn create_template(
    target: &Target,
    conn: &mut SendRequest<Body>,
    auth: &HeaderValue,
    body: &serde_json::Value,
) -> anyhow::Result<String> {
    let path = "/api/v1/merchant/templates";
    let (status, bytes) = target
        .send_json(conn, Method::POST, path, Some(auth), Some(body))
        .await?;
    let text = String::from_utf8_lossy(&bytes);
    if status.as_u16() == 401 {
        bail!(
            "the server rejected the token (401): is the secret the server's? \
             (--jwt-secret / --data-dir) {text}"
        );
    }
    if status.as_u16() != 201 {
        bail!("{status} {text}");
    }
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).context("the created template is not JSON")?;
    match &v["id"] {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        _ => bail!("the created template has no id: {text}"),
    }
}

/// The JWT secret: given, or read from `DIR/jwt-secret` (the embedded server's generated one).
pub fn read_secret(
    given: Option<&str>,
    data_dir: Option<&std::path::Path>,
) -> anyhow::Result<Vec<u8>> {
    if let Some(s) = given {
        return Ok(s.trim().as_bytes().to_vec());
    }
    let Some(dir) = data_dir else {
        bail!("the server's JWT secret is needed: --jwt-secret S or --data-dir DIR");
    };
    let path = dir.join("jwt-secret");
    let s =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(s.trim().as_bytes().to_vec())
}
