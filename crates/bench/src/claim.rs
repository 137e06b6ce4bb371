//! The `claim` scenario's setup: templates created through the back-office API with an admin
//! token, and one user token per simulated user, all signed with the server's JWT secret.

use crate::client::{Target, bearer};
use crate::load::RequestMix;
use anyhow::{Context, bail};
use hyper::Method;
use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use stampede_core::auth::TokenService;
use stampede_core::clock::SystemClock;
use stampede_domain::auth::{Principal, Role};
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
    let mint = |role: Role, sub: String| {
        let p = Principal {
            subject: sub,
            role,
            shop_id: None,
            session_id: None,
        };
        tokens
            .mint(&p, TOKEN_TTL)
            .map_err(|e| anyhow::anyhow!("minting a token: {e}"))
    };
    let admin = bearer(&mint(Role::Admin, "1".into())?)?;

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
        let path = "/api/v1/merchant/templates";
        let (status, bytes) = target
            .send_json(&mut conn, Method::POST, path, Some(&admin), Some(&body))
            .await?;
        let text = String::from_utf8_lossy(&bytes);
        if status.as_u16() == 401 {
            bail!(
                "the server rejected the admin token (401): is the secret the server's? \
                 (--jwt-secret / --data-dir) {text}"
            );
        }
        if status.as_u16() != 201 {
            bail!("creating template {i}: {status} {text}");
        }
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).context("the created template is not JSON")?;
        let id = match &v["id"] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => bail!("the created template has no id: {text}"),
        };
        uris.push(target.uri(&format!("/api/v1/templates/{id}/claim"))?);
    }

    let mut auths = Vec::with_capacity(usize::try_from(cfg.users).unwrap_or(0));
    for u in 0..cfg.users {
        let id = cfg.first_user.saturating_add(u);
        auths.push(bearer(&mint(Role::User, id.to_string())?)?);
    }
    Ok(RequestMix {
        method: Method::POST,
        uris,
        auths,
    })
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
        bail!("claim needs the server's JWT secret: --jwt-secret S or --data-dir DIR");
    };
    let path = dir.join("jwt-secret");
    let s =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(s.trim().as_bytes().to_vec())
}
