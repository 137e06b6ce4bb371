//! What both adapters' partition leases share: the lease tables (`reminder_leases`,
//! `outbox_leases`, one row per partition: `part`, `owner`, `token`, `until_ms`) and the
//! owner rules. The grant itself is an upsert, which differs by dialect.

use crate::error::refused;
use stampede_core::ports::StoreError;

/// The longest owner a lease row stores (MySQL's column width; SQLite keeps the same rule).
pub const MAX_OWNER_CHARS: usize = 64;

/// The lease tables (their names are interpolated into SQL, so only these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseTable {
    Reminders,
    Outbox,
}

impl LeaseTable {
    pub fn name(self) -> &'static str {
        match self {
            LeaseTable::Reminders => "reminder_leases",
            LeaseTable::Outbox => "outbox_leases",
        }
    }
}

/// An owner the lease row stores and compares exactly: the column's width, not empty (the
/// value of a row nobody took yet), no trailing spaces (PAD SPACE collations ignore them).
pub fn check_owner(owner: &str) -> Result<(), StoreError> {
    if owner.is_empty() || owner.chars().count() > MAX_OWNER_CHARS || owner.ends_with(' ') {
        return Err(refused(format!(
            "lease owner {owner:?}: 1 to {MAX_OWNER_CHARS} characters, no trailing space"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_checked() {
        assert!(check_owner("node-1").is_ok());
        assert!(check_owner(&"é".repeat(64)).is_ok());
        for bad in ["", "node ", &"x".repeat(65)] {
            assert!(check_owner(bad).is_err(), "{bad:?}");
        }
    }
}
