//! The `claim` scenario's setup: templates created through the back-office API with an admin
//! token, and one user token per simulated user, all signed with the server's JWT secret.
//! The load fires `POST /api/v1/templates/{id}/claim` for random (user, template) pairs.

use crate::auth::Tokens;
use crate::client::Target;
use crate::setup::{create_template, open_window};
use crate::workload::RequestMix;
use anyhow::{Context, bail};
use hyper::Method;
use serde_json::json;

/// The `claim` flags (their docs are the `--help` text).
#[derive(Debug, Clone, clap::Args)]
pub struct ClaimSetup {
    /// Simulated users (one token each).
    #[arg(long, default_value_t = 10_000)]
    pub users: u64,
    /// First user id (users are consecutive ids).
    #[arg(long, default_value_t = 1)]
    pub first_user: u64,
    /// Templates created for the run.
    #[arg(long, default_value_t = 10)]
    pub templates: u64,
    /// Stock of each template (1..=20,000,000).
    #[arg(long, default_value_t = 1_000_000)]
    pub stock: u64,
    /// Per-user limit of each template (1..=100).
    #[arg(long, default_value_t = 1)]
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
