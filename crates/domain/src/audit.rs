//! One audit entry per change of a template, written by the store in the transaction that
//! makes the change, so the log can never disagree with the data.

use crate::ids::{ShopId, TemplateId};
use jiff::Timestamp;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AuditAction {
    Create,
    AddStock,
    Terminate,
    End,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Create => "create",
            AuditAction::AddStock => "add_stock",
            AuditAction::Terminate => "terminate",
            AuditAction::End => "end",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "create" => Some(Self::Create),
            "add_stock" => Some(Self::AddStock),
            "terminate" => Some(Self::Terminate),
            "end" => Some(Self::End),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    #[serde(skip)]
    pub template_id: TemplateId,
    #[serde(skip)]
    pub shop_id: ShopId,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: Timestamp,
    /// `role:subject` of who did it, or `system` for automatic changes.
    pub actor: String,
    pub action: AuditAction,
    /// The template as it was (absent for `create`).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub before: Option<serde_json::Value>,
    /// The template as it became.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub after: serde_json::Value,
}

impl AuditAction {
    /// The action recorded for a change.
    pub fn of_change(change: crate::template::TemplateChange) -> Self {
        use crate::template::TemplateChange;
        match change {
            TemplateChange::AddStock(_) => AuditAction::AddStock,
            TemplateChange::Terminate => AuditAction::Terminate,
            TemplateChange::End => AuditAction::End,
        }
    }
}

impl AuditEntry {
    /// The entry for creating `t`.
    pub fn created(t: &crate::template::Template, actor: &str) -> Self {
        AuditEntry {
            template_id: t.id,
            shop_id: t.shop_id,
            at: t.created_at,
            actor: actor.to_owned(),
            action: AuditAction::Create,
            before: None,
            after: t.snapshot(),
        }
    }

    /// The entry for a change from `before` to `after`.
    pub fn changed(
        before: &crate::template::Template,
        after: &crate::template::Template,
        change: crate::template::TemplateChange,
        actor: &str,
    ) -> Self {
        AuditEntry {
            template_id: after.id,
            shop_id: after.shop_id,
            at: after.updated_at,
            actor: actor.to_owned(),
            action: AuditAction::of_change(change),
            before: Some(before.snapshot()),
            after: after.snapshot(),
        }
    }
}
