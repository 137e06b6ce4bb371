//! The `claim` scenario's setup: templates created through the back-office API with an admin
//! token, and one user token per simulated user, all signed with the server's JWT secret.
//! The load fires `POST /api/v1/templates/{id}/claim` for random (user, template) pairs.

use crate::auth::Tokens;
use crate::client::Target;
use crate::load::RequestMix;
use crate::setup::{create_template, open_window};
use anyhow::{Context, bail};
use hyper::Method;
use serde_json::json;

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
    let tokens = Tokens::new(secret);
    let admin = tokens.admin()?;

    let mut conn = target.connect().await?;
    let (start, end) = open_window(1);
    let mut uris = Vec::with_capacity(usize::try_from(cfg.templates).unwrap_or(0));
    for i in 0..cfg.templates {
        let body = json!({
            "name": format!("bench {i}"),
            "kind": "fixed",
            "amount_off": 100,
            "stock_total": cfg.stock,
            "shop_id": "1",
            "claim_start": start,
            "claim_end": end,
            "validity_hours": 24,
            "per_user_limit": cfg.limit,
        });
        let id = create_template(target, &mut conn, &admin, &body)
            .await
            .with_context(|| format!("creating template {i}"))?;
        uris.push(target.uri(&format!("/api/v1/templates/{id}/claim"))?);
    }

    Ok(RequestMix {
        method: Method::POST,
        uris,
        auths: tokens.users(cfg.first_user, cfg.users)?,
    })
}
