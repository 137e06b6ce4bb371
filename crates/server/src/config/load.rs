//! Loading settings in layers: built-in defaults → optional TOML file → `STAMPEDE_…`
//! environment variables → command-line flags, then checking them once.

use super::Settings;
use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Flags that override every other layer.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
}

/// Settings plus the warnings found while loading them (printed once logging is up).
pub struct Loaded {
    pub settings: Settings,
    pub warnings: Vec<String>,
}

const ENV_PREFIX: &str = "STAMPEDE_";

fn leaf_paths(prefix: &str, v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_paths(&p, x, out);
            }
        }
        _ => {
            out.insert(prefix.to_owned());
        }
    }
}

impl Settings {
    /// Every configurable key, as `section.key` (`storage.mysql.databases`).
    pub fn known_keys() -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        leaf_paths(
            "",
            &serde_json::to_value(Settings::default()).unwrap_or_default(),
            &mut out,
        );
        out
    }

    pub fn load(config_file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Loaded> {
        let known = Self::known_keys();
        let mut warnings = Vec::new();
        for (name, _) in std::env::vars() {
            if let Some(rest) = name.strip_prefix(ENV_PREFIX) {
                let key = rest.to_ascii_lowercase().replace("__", ".");
                if !known.contains(&key) {
                    warnings.push(format!("ignoring unknown configuration variable {name}"));
                }
            }
        }
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = config_file {
            if !path.exists() {
                anyhow::bail!("configuration file {} does not exist", path.display());
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        let env = Env::prefixed(ENV_PREFIX)
            .split("__")
            .filter(move |k| known.contains(&k.as_str().to_ascii_lowercase()));
        fig = fig.merge(env);
        if let Some(l) = &overrides.listen {
            fig = fig.merge(("server.listen", l));
        }
        if let Some(d) = &overrides.data_dir {
            fig = fig.merge(("server.data_dir", d));
        }
        let settings: Settings = fig.extract().context("invalid configuration")?;
        settings.check()?;
        Ok(Loaded { settings, warnings })
    }

    /// Rules no single field's type expresses, section by section.
    fn check(&self) -> anyhow::Result<()> {
        self.ids.check()?;
        self.storage.check()?;
        self.auth.check()?;
        self.http.check()?;
        self.log.check()?;
        self.tracing.check()?;
        self.workers.check()?;
        self.reminder.check()?;
        self.settlement.check()?;
        self.resilience.check()?;
        self.flow.check(&self.engine)?;
        self.redis.check()?;
        self.distribution.check()
    }
}
