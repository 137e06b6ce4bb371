//! Back-office template endpoints: merchants for their own shop, admins for any. One file
//! per route action.

mod create;
mod list;
mod read;
mod stock;
mod terminate;

use crate::error::{ApiError, ApiResult};
use stampede_domain::ids::TemplateId;

pub use create::{__path_create_template, CreateTemplateBody, create_template, read_create_body};
pub use list::{__path_list_templates, ListParams, TemplatePage, list_templates};
pub use read::{__path_audit, __path_get_template, AuditPage, audit, get_template};
pub use stock::{__path_add_stock, AddStockBody, add_stock};
pub use terminate::{__path_terminate, terminate};

/// The template a path names; an id that cannot exist is simply not found.
fn template_id(raw: &str) -> ApiResult<TemplateId> {
    TemplateId::parse(raw).ok_or_else(ApiError::not_found)
}
