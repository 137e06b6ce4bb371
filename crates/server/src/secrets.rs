//! Secrets the process needs at start: the JWT secret (configured, or generated once into
//! the embedded data dir) and the signing keys of outgoing webhooks.

use crate::config::{Backend, Secret, Settings};
use anyhow::Context;
use stampede_core::auth::random_token;
use std::path::Path;

/// HS256 wants a key at least as long as its hash.
const MIN_JWT_SECRET_BYTES: usize = 32;
/// Random bytes of a generated secret (stored as 64 URL-safe characters): well above the
/// minimum, so it never needs rotating for length.
const GENERATED_SECRET_BYTES: usize = 48;
/// Labels the webhook keys are derived under. Changing one changes every receiver's key.
pub const REMINDER_KEY_LABEL: &[u8] = b"stampede-reminder:";
pub const NOTIFY_KEY_LABEL: &[u8] = b"stampede-notify:";

/// The JWT secret: configured, or (embedded mode only) generated once into the data dir so
/// that `stampede token` and the server agree without any setup.
pub fn jwt_secret(settings: &Settings) -> anyhow::Result<Vec<u8>> {
    if let Some(s) = &settings.auth.jwt_secret {
        if s.expose().len() < MIN_JWT_SECRET_BYTES {
            anyhow::bail!("auth.jwt_secret must be at least {MIN_JWT_SECRET_BYTES} bytes");
        }
        return Ok(s.expose().as_bytes().to_vec());
    }
    if settings.storage.backend == Backend::Mysql {
        anyhow::bail!(
            "distributed mode needs auth.jwt_secret (STAMPEDE_AUTH__JWT_SECRET) shared by every node"
        );
    }
    let path = settings.server.data_dir.join("jwt-secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= MIN_JWT_SECRET_BYTES => Ok(s.trim().as_bytes().to_vec()),
        Ok(_) => anyhow::bail!(
            "{} is too short; delete it to generate a new one",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_secret(&path),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let secret = random_token(GENERATED_SECRET_BYTES);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(mut f) => {
            f.write_all(secret.as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(secret.into_bytes())
        }
        // Another process (a concurrent `stampede token`) created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let theirs = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok(theirs.trim().as_bytes().to_vec())
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// An outgoing-webhook signing key (completion callbacks, reminders): configured, or derived
/// from the JWT secret under `label` (so a deployment has one without setup; configure it to
/// hand receivers a key of their own).
pub fn signing_secret(
    settings: &Settings,
    configured: Option<&Secret>,
    label: &[u8],
) -> anyhow::Result<String> {
    use sha2::Digest;
    if let Some(s) = configured {
        return Ok(s.expose().to_owned());
    }
    let jwt = jwt_secret(settings)?;
    let mut h = sha2::Sha256::new();
    h.update(label);
    h.update(&jwt);
    Ok(hex::encode(h.finalize()))
}
