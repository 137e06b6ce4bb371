//! Tokens signed with the server's JWT secret, as the setups need them: the secret itself
//! (`--jwt-secret`, or the embedded server's generated `DIR/jwt-secret`), admin, merchant and
//! user tokens as `Authorization` values, and the error to give when the server rejects one.

use crate::client::bearer;
use anyhow::{Context, bail};
use hyper::header::HeaderValue;
use jiff::SignedDuration;
use stampede_core::auth::TokenService;
use stampede_core::clock::SystemClock;
use stampede_domain::auth::{Principal, Role};
use stampede_domain::ids::ShopId;
use std::path::Path;
use std::sync::Arc;

/// Tokens outlive any run.
const TOKEN_TTL: SignedDuration = SignedDuration::from_hours(24);

/// The JWT secret: given, or read from `DIR/jwt-secret` (the embedded server's generated one).
pub fn read_secret(given: Option<&str>, data_dir: Option<&Path>) -> anyhow::Result<Vec<u8>> {
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

/// Signs a run's tokens, each valid for a day.
pub struct Tokens(TokenService);

impl Tokens {
    pub fn new(secret: &[u8]) -> Self {
        Self(TokenService::new(secret, Arc::new(SystemClock)))
    }

    /// `Bearer <token>` for `sub` in `role` (merchants need their `shop_id`).
    pub fn bearer(
        &self,
        role: Role,
        sub: &str,
        shop_id: Option<ShopId>,
    ) -> anyhow::Result<HeaderValue> {
        let p = Principal {
            subject: sub.to_owned(),
            role,
            shop_id,
            session_id: None,
        };
        let token = self.0.mint(&p, TOKEN_TTL).context("minting a token")?;
        bearer(&token)
    }

    /// The back office's admin (subject `1`).
    pub fn admin(&self) -> anyhow::Result<HeaderValue> {
        self.bearer(Role::Admin, "1", None)
    }

    pub fn merchant(&self, sub: &str, shop: ShopId) -> anyhow::Result<HeaderValue> {
        self.bearer(Role::Merchant, sub, Some(shop))
    }

    pub fn user(&self, id: u64) -> anyhow::Result<HeaderValue> {
        self.bearer(Role::User, &id.to_string(), None)
    }

    /// Users `first .. first + n`, in order.
    pub fn users(&self, first: u64, n: u64) -> anyhow::Result<Vec<HeaderValue>> {
        (0..n).map(|u| self.user(first.saturating_add(u))).collect()
    }
}

/// The error for a 401: most likely the secret is not the server's.
pub fn rejected(text: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the server rejected the token (401): is the secret the server's? \
         (--jwt-secret / --data-dir) {text}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_consecutive_and_verify() -> anyhow::Result<()> {
        let secret = b"bench-test-secret-bench-test-secret-0123";
        let auths = Tokens::new(secret).users(41, 3)?;
        let check = TokenService::new(secret, Arc::new(SystemClock));
        let subjects: Vec<String> = auths
            .iter()
            .map(|a| {
                let token = a.to_str()?.strip_prefix("Bearer ").unwrap_or_default();
                Ok(check.verify(token)?.subject)
            })
            .collect::<anyhow::Result<_>>()?;
        assert_eq!(subjects, ["41", "42", "43"]);
        Ok(())
    }

    #[test]
    fn the_secret_is_given_or_read() -> anyhow::Result<()> {
        assert_eq!(read_secret(Some(" s \n"), None)?, b"s");
        let dir = std::env::temp_dir().join(format!("bench-secret-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("jwt-secret"), "from-file\n")?;
        let read = read_secret(None, Some(&dir));
        std::fs::remove_dir_all(&dir)?;
        assert_eq!(read?, b"from-file");
        assert!(read_secret(None, None).is_err());
        Ok(())
    }
}
