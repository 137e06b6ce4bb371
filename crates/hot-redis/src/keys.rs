//! Key layout. Every key starts with the configured prefix; the keys of one template share the
//! hash tag `{tpl:<id>}` (so each script's keys live in one Redis Cluster slot), and a user's
//! pending coupons live under `{user:<id>}`.

use stampede_domain::ids::{DistributionId, TemplateId, UserId};

/// Separator between a claim's idempotency key and its user id in the `:keys` hash (ASCII
/// unit separator: never part of a valid `Idempotency-Key`, which is visible ASCII).
pub const KEY_SEPARATOR: char = '\u{1f}';

/// The keys of one template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateKeys {
    /// Hash: `status`, `claim_start_ms`, `claim_end_ms`, `per_user_limit`, `stock`, `shop_id`.
    pub meta: String,
    /// Hash: user id → how many coupons of the template the user holds.
    pub users: String,
    /// Hash: `claim_key \x1f user_id` → the coupon that claim made (encoded, see `codec`).
    pub keys: String,
    /// Stream: the template's claim log.
    pub log: String,
    /// String: the persister lease (holder's node id, with a time to live).
    pub lease: String,
    /// String: `updated_at` (ms) of a change made while the template was not loaded.
    pub changed: String,
    /// `P:{tpl:T}`, the start of the per-batch keys below.
    base: String,
}

impl TemplateKeys {
    pub fn new(prefix: &str, t: TemplateId) -> Self {
        let base = format!("{prefix}:{{tpl:{t}}}");
        Self {
            meta: format!("{base}:meta"),
            users: format!("{base}:users"),
            keys: format!("{base}:keys"),
            log: format!("{base}:log"),
            lease: format!("{base}:lease"),
            changed: format!("{base}:changed"),
            base,
        }
    }

    /// String: the stored answer of distribution batch `(task, first_row)` (see
    /// `lua/reserve.lua`), so a retried batch gets the same reservation again.
    pub fn dist_answer(&self, task: DistributionId, first_row: u64) -> String {
        format!("{}:dist:{task}:{first_row}", self.base)
    }

    /// String: set once the stock refused by the system of record for batch
    /// `(task, first_row)` went back (see `lua/return.lua`), so it goes back only once.
    pub fn dist_return(&self, task: DistributionId, first_row: u64) -> String {
        format!("{}:distret:{task}:{first_row}", self.base)
    }
}

/// Hash of a user's acknowledged, not yet persisted coupons: coupon id → encoded coupon.
pub fn pending(prefix: &str, user: UserId) -> String {
    format!("{prefix}:{{user:{user}}}:pending")
}

/// Set of template ids that have a claim log (what persisters scan).
pub fn claim_logs(prefix: &str) -> String {
    format!("{prefix}:claimlogs")
}

/// Pub/sub channel of template invalidations.
pub fn invalidation_channel(prefix: &str) -> String {
    format!("{prefix}:tpl-invalidate")
}

/// Pub/sub channel of users whose coupons changed (quote caches on other nodes drop them).
/// Pub/sub channel of shops whose templates changed (discovery's listings); payload: the
/// shop id in decimal, `0` for the platform.
pub fn shop_invalidation_channel(prefix: &str) -> String {
    format!("{prefix}:shop-invalidate")
}

pub fn user_invalidation_channel(prefix: &str) -> String {
    format!("{prefix}:user-invalidate")
}

/// The field of a keyed claim in the `:keys` hash.
pub fn claim_key_field(key: &str, user: UserId) -> String {
    format!("{key}{KEY_SEPARATOR}{user}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_keys_share_one_hash_tag() {
        let Some(t) = TemplateId::new(42) else {
            panic!("42 is a valid id");
        };
        let k = TemplateKeys::new("stampede", t);
        assert_eq!(k.meta, "stampede:{tpl:42}:meta");
        assert_eq!(k.log, "stampede:{tpl:42}:log");
        let Some(task) = DistributionId::new(9) else {
            panic!("9 is a valid id");
        };
        assert_eq!(k.dist_answer(task, 5_001), "stampede:{tpl:42}:dist:9:5001");
        assert_eq!(k.dist_return(task, 1), "stampede:{tpl:42}:distret:9:1");
        for key in [
            &k.meta,
            &k.users,
            &k.keys,
            &k.log,
            &k.lease,
            &k.changed,
            &k.dist_answer(task, 1),
            &k.dist_return(task, 1),
        ] {
            assert!(key.contains("{tpl:42}"), "{key}");
        }
    }
}
