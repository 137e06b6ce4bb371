//! Authentication: HS256 access tokens (`TokenService`), argon2 passwords, and the login /
//! refresh / logout / account use cases (`AuthService`).
//!
//! Access tokens are stateless and short-lived; refresh tokens are random, stored only as
//! SHA-256 hashes, rotated on every use, and grouped into a session so that presenting a
//! rotated token (a sign of theft) revokes the whole session.

use crate::clock::Clock;
use crate::error::AppError;
use crate::ids::IdGenerator;
use crate::login::LoginThrottle;
use crate::ports::{Account, AccountStore, RefreshOutcome, StoreError};
use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::{SignedDuration, Timestamp};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stampede_domain::ValidationErrors;
use stampede_domain::auth::{Principal, Role};
use stampede_domain::ids::ShopId;
use std::sync::Arc;

/// Clock skew tolerated when checking `exp`.
const LEEWAY_SECS: i64 = 5;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shop_id: Option<String>,
    exp: i64,
    iat: i64,
    jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
}

/// Installs jsonwebtoken's RustCrypto backend once per process (it panics on first use when
/// it has to guess). Safe to call repeatedly.
pub fn install_crypto_provider() {
    let _already = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}

pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Verified tokens a node remembers (each ~0.5 KB): the shoppers of a busy minute.
const VERIFIED_TOKENS: usize = 65_536;

/// Signs and verifies access tokens.
pub struct TokenService {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    clock: Arc<dyn Clock>,
    /// Tokens whose signature and claims were checked, with their principal and expiry.
    /// A token is a pure function of its claims and the secret, so a remembered one needs
    /// only its expiry checked again; decoding and the HMAC were a tenth of a product
    /// page's CPU. Keyed by the whole token, never by a digest of it.
    verified: quick_cache::sync::Cache<Box<str>, (Principal, i64)>,
}

impl TokenService {
    pub fn new(secret: &[u8], clock: Arc<dyn Clock>) -> Self {
        install_crypto_provider();
        let mut validation = Validation::new(Algorithm::HS256);
        // `exp` is checked against our clock below, so tests can drive time.
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            clock,
            verified: quick_cache::sync::Cache::new(VERIFIED_TOKENS),
        }
    }

    /// A signed token for `p`, valid for `ttl` from now.
    pub fn mint(&self, p: &Principal, ttl: SignedDuration) -> Result<String, AppError> {
        let now = self.clock.now().as_second();
        let claims = Claims {
            sub: p.subject.clone(),
            role: p.role.as_str().to_owned(),
            shop_id: p.shop_id.map(|s| s.to_string()),
            exp: now.saturating_add(ttl.as_secs()),
            iat: now,
            jti: random_token(12),
            sid: p.session_id.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AppError::Internal(Box::new(e)))
    }

    /// The principal of a valid token. Rejects other algorithms (including `none`), bad
    /// signatures, expired tokens and malformed claims alike, with a reason for the logs.
    pub fn verify(&self, token: &str) -> Result<Principal, AppError> {
        let unauth = |why: &str| AppError::Unauthenticated(why.to_owned());
        let expired = |exp: i64| exp.saturating_add(LEEWAY_SECS) <= self.clock.now().as_second();
        if let Some((p, exp)) = self.verified.get(token) {
            if expired(exp) {
                return Err(unauth("the token has expired"));
            }
            return Ok(p);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| unauth("the token is invalid"))?;
        let c = data.claims;
        if expired(c.exp) {
            return Err(unauth("the token has expired"));
        }
        let exp = c.exp;
        let role = Role::parse(&c.role).ok_or_else(|| unauth("the token has an unknown role"))?;
        if c.sub.is_empty() || c.sub.len() > 64 {
            return Err(unauth("the token has no valid subject"));
        }
        let shop_id = match role {
            Role::Merchant => Some(
                c.shop_id
                    .as_deref()
                    .and_then(ShopId::parse)
                    .ok_or_else(|| unauth("a merchant token needs a shop_id"))?,
            ),
            _ => None,
        };
        let p = Principal {
            subject: c.sub,
            role,
            shop_id,
            session_id: c.sid,
        };
        self.verified.insert(token.into(), (p.clone(), exp));
        Ok(p)
    }
}

/// Argon2id hashing with the crate's recommended parameters.
pub fn hash_password(password: &str) -> Result<String, AppError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AppError::Internal(e.to_string().into()))
}

pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

pub struct NewAccount {
    pub username: String,
    pub password: String,
    pub role: Role,
    pub shop_id: Option<ShopId>,
}

impl NewAccount {
    /// Usernames: 3–64 of `[A-Za-z0-9._@-]`; passwords: 8–128 characters; merchants need a
    /// shop, other roles must not have one.
    pub fn validate(&self) -> ValidationErrors {
        let mut errs = ValidationErrors::new();
        let u = &self.username;
        if !(3..=64).contains(&u.len())
            || !u
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b))
        {
            errs.add(
                "username",
                "must be 3 to 64 characters of letters, digits and . _ @ -",
            );
        }
        if !(8..=128).contains(&self.password.chars().count()) {
            errs.add("password", "must be 8 to 128 characters");
        }
        match (self.role, self.shop_id) {
            (Role::Merchant, None) => errs.add("shop_id", "is required for merchant accounts"),
            (Role::Merchant, Some(_)) | (_, None) => {}
            (_, Some(_)) => errs.add("shop_id", "only merchant accounts belong to a shop"),
        }
        errs
    }
}

pub struct AuthService {
    accounts: Arc<dyn AccountStore>,
    tokens: Arc<TokenService>,
    ids: Arc<IdGenerator>,
    clock: Arc<dyn Clock>,
    access_ttl: SignedDuration,
    refresh_ttl: SignedDuration,
    /// Verified against when the username is unknown, so timing does not reveal which
    /// usernames exist.
    dummy_hash: String,
    /// Failed-attempt limits and the cap on argon2 work (none: no limits).
    throttle: Option<LoginThrottle>,
}

/// Why a login was refused before its password was checked (the metric's `reason`).
fn refuse(reason: &'static str, who: &str, detail: String, retry_after_secs: u64) -> AppError {
    metrics::counter!("stampede_login_refused_total", "reason" => reason).increment(1);
    tracing::warn!(reason, who, retry_after_secs, "login refused");
    if reason == "overloaded" {
        AppError::Overloaded {
            detail,
            retry_after_secs,
        }
    } else {
        AppError::RateLimited {
            detail,
            retry_after_secs,
        }
    }
}

impl AuthService {
    pub fn new(
        accounts: Arc<dyn AccountStore>,
        tokens: Arc<TokenService>,
        ids: Arc<IdGenerator>,
        clock: Arc<dyn Clock>,
        access_ttl: SignedDuration,
        refresh_ttl: SignedDuration,
    ) -> Result<Self, AppError> {
        let dummy_hash = hash_password(&random_token(16))?;
        Ok(Self {
            accounts,
            tokens,
            ids,
            clock,
            access_ttl,
            refresh_ttl,
            dummy_hash,
            throttle: None,
        })
    }

    /// Limits failed logins per account and per IP and caps password checks in flight.
    pub fn with_throttle(mut self, throttle: LoginThrottle) -> Self {
        self.throttle = Some(throttle);
        self
    }

    pub fn tokens(&self) -> &TokenService {
        &self.tokens
    }

    /// Validates (`NewAccount::validate`) and stores a new account.
    pub async fn create_account(&self, new: NewAccount) -> Result<Account, AppError> {
        new.validate().finish(())?;
        let password = new.password;
        let password_hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| AppError::Internal(Box::new(e)))??;
        let account = Account {
            id: self.ids.next()?,
            username: new.username,
            password_hash,
            role: new.role,
            shop_id: new.shop_id,
            created_at: stampede_domain::time::truncate_ms(self.clock.now()),
        };
        match self.accounts.create_account(&account).await {
            Ok(()) => Ok(account),
            Err(StoreError::Duplicate(_)) => Err(AppError::Conflict {
                code: stampede_domain::ErrorCode::Conflict,
                detail: "this username is taken".into(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn login(&self, username: &str, password: &str) -> Result<TokenPair, AppError> {
        self.login_from(username, password, None).await
    }

    /// Login from client address `ip` (when known). With a throttle: a locked-out account or
    /// IP is refused with 429 `RATE_LIMITED` and `Retry-After` before any password work; a
    /// full verification queue answers 503 `OVERLOADED`; failures count toward both limits,
    /// a success clears the account's.
    pub async fn login_from(
        &self,
        username: &str,
        password: &str,
        ip: Option<&str>,
    ) -> Result<TokenPair, AppError> {
        let keys = self.throttle.as_ref().map(|_| {
            (
                crate::login::account_key(username),
                ip.map(crate::login::ip_key),
            )
        });
        if let (Some(th), Some((acct, ipk))) = (&self.throttle, &keys) {
            self.check_locks(th, acct, ipk.as_deref(), username).await?;
        }
        let _permit = match &self.throttle {
            Some(th) => Some(
                match tokio::time::timeout(th.queue_wait, th.verifications.clone().acquire_owned())
                    .await
                {
                    Ok(Ok(p)) => p,
                    _ => {
                        return Err(refuse(
                            "overloaded",
                            username,
                            "too many logins are being checked; retry shortly".into(),
                            1,
                        ));
                    }
                },
            ),
            None => None,
        };
        let account = self.accounts.account_by_username(username).await?;
        let hash = account
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |a| a.password_hash.clone());
        let pw = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || verify_password(&pw, &hash))
            .await
            .map_err(|e| AppError::Internal(Box::new(e)))?;
        drop(_permit);
        let account = match account {
            Some(a) if ok => a,
            _ => {
                if let (Some(th), Some((acct, ipk))) = (&self.throttle, &keys) {
                    self.count_failure(th, acct, ipk.as_deref()).await;
                }
                return Err(AppError::Unauthenticated(
                    "wrong username or password".into(),
                ));
            }
        };
        if let (Some(th), Some((acct, _))) = (&self.throttle, &keys)
            && let Err(e) = th.attempts.reset(acct).await
        {
            tracing::warn!(error = %e, "could not clear an account's failed logins");
        }
        let session_id = random_token(16);
        let refresh = random_token(32);
        let now = self.clock.now();
        let expires = now.checked_add(self.refresh_ttl).unwrap_or(Timestamp::MAX);
        self.accounts
            .create_session(
                &session_id,
                account.id,
                &sha256_hex(refresh.as_bytes()),
                expires,
                now,
            )
            .await?;
        self.pair(&account, session_id, refresh)
    }

    /// Refuses a login whose account or IP is locked out. A throttle store that fails is
    /// logged and skipped: logins go on, still capped by the verification semaphore.
    async fn check_locks(
        &self,
        th: &LoginThrottle,
        acct: &str,
        ip: Option<&str>,
        username: &str,
    ) -> Result<(), AppError> {
        let now = self.clock.now().as_millisecond();
        for (key, reason) in [(Some(acct), "account_locked"), (ip, "ip_locked")] {
            let Some(key) = key else { continue };
            match th.attempts.locked_until(key, now).await {
                Ok(Some(until)) => {
                    let secs = u64::try_from((until - now).max(0))
                        .unwrap_or(0)
                        .div_ceil(1000);
                    let what = if reason == "ip_locked" {
                        "this address"
                    } else {
                        "this account"
                    };
                    return Err(refuse(
                        reason,
                        username,
                        format!("too many failed logins for {what}; retry after {secs} s"),
                        secs.max(1),
                    ));
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "login throttle unreadable; not enforced"),
            }
        }
        Ok(())
    }

    async fn count_failure(&self, th: &LoginThrottle, acct: &str, ip: Option<&str>) {
        let now = self.clock.now().as_millisecond();
        for (key, policy) in [(Some(acct), &th.account), (ip, &th.ip)] {
            let Some(key) = key else { continue };
            match th.attempts.record_failure(key, now, policy).await {
                Ok((n, Some(until))) => {
                    tracing::warn!(
                        key,
                        failures = n,
                        lockout_ms = until - now,
                        "login lockout started"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not count a failed login"),
            }
        }
    }

    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, AppError> {
        let next = random_token(32);
        let now = self.clock.now();
        let expires = now.checked_add(self.refresh_ttl).unwrap_or(Timestamp::MAX);
        let outcome = self
            .accounts
            .rotate_refresh(
                &sha256_hex(refresh_token.as_bytes()),
                &sha256_hex(next.as_bytes()),
                expires,
                now,
            )
            .await?;
        match outcome {
            RefreshOutcome::Rotated {
                account,
                session_id,
            } => self.pair(&account, session_id, next),
            RefreshOutcome::Reused => Err(AppError::Unauthenticated(
                "this refresh token was already used; the session has been revoked".into(),
            )),
            RefreshOutcome::Invalid => Err(AppError::Unauthenticated(
                "the refresh token is invalid or expired".into(),
            )),
        }
    }

    /// Ends the caller's session (from the access token) and, if given, the session of
    /// `refresh_token`. Idempotent.
    pub async fn logout(
        &self,
        who: &Principal,
        refresh_token: Option<&str>,
    ) -> Result<(), AppError> {
        let now = self.clock.now();
        if let Some(sid) = &who.session_id {
            self.accounts.revoke_session(sid, now).await?;
        }
        if let Some(rt) = refresh_token
            && let Some(sid) = self
                .accounts
                .session_of_refresh(&sha256_hex(rt.as_bytes()))
                .await?
        {
            self.accounts.revoke_session(&sid, now).await?;
        }
        Ok(())
    }

    fn pair(
        &self,
        account: &Account,
        session_id: String,
        refresh: String,
    ) -> Result<TokenPair, AppError> {
        let principal = Principal {
            subject: account.id.to_string(),
            role: account.role,
            shop_id: account.shop_id,
            session_id: Some(session_id),
        };
        Ok(TokenPair {
            access_token: self.tokens.mint(&principal, self.access_ttl)?,
            refresh_token: refresh,
            token_type: "Bearer",
            expires_in: self.access_ttl.as_secs(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn svc(secret: &[u8]) -> (TokenService, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::default());
        (TokenService::new(secret, clock.clone()), clock)
    }

    fn merchant() -> Principal {
        Principal {
            subject: "9".into(),
            role: Role::Merchant,
            shop_id: ShopId::new(3),
            session_id: None,
        }
    }

    #[test]
    fn round_trip() {
        let (s, _) = svc(b"secret-secret-secret-secret-1234");
        let t = s.mint(&merchant(), SignedDuration::from_mins(5));
        let back = t.and_then(|t| s.verify(&t));
        assert_eq!(back.ok(), Some(merchant()));
    }

    #[test]
    fn a_remembered_token_still_expires_and_its_forgeries_are_still_refused() {
        let (s, clock) = svc(b"secret-secret-secret-secret-1234");
        let Ok(t) = s.mint(&merchant(), SignedDuration::from_mins(5)) else {
            panic!()
        };
        assert_eq!(s.verify(&t).ok(), Some(merchant()));
        assert_eq!(s.verify(&t).ok(), Some(merchant()), "remembered");
        // Another signature on the same claims, and the claims with one byte changed.
        let (head, sig) = t.rsplit_once('.').unwrap_or_default();
        let flipped = if sig.starts_with('A') { "B" } else { "A" };
        assert!(s.verify(&format!("{head}.{flipped}{}", &sig[1..])).is_err());
        assert!(s.verify(&format!("{t}x")).is_err());
        clock.advance(SignedDuration::from_mins(6));
        assert!(s.verify(&t).is_err(), "expired after it was remembered");
    }

    #[test]
    fn expired_forged_and_none_are_rejected() {
        let (s, clock) = svc(b"secret-secret-secret-secret-1234");
        let Ok(t) = s.mint(&merchant(), SignedDuration::from_mins(5)) else {
            panic!()
        };
        let (other, _) = svc(b"another-secret-another-secret-12");
        assert!(other.verify(&t).is_err(), "forged");
        clock.advance(SignedDuration::from_mins(6));
        assert!(s.verify(&t).is_err(), "expired");
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD
                .encode(br#"{"sub":"1","role":"admin","exp":99999999999,"iat":1,"jti":"x"}"#)
        );
        assert!(s.verify(&none).is_err(), "alg none");
    }

    #[test]
    fn passwords() {
        let Ok(h) = hash_password("correct horse") else {
            panic!()
        };
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("x", "not a phc string"));
    }
}
