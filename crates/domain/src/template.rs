//! The coupon template: what a valid one is, and how it may change afterwards.
//!
//! Creation goes `TemplateDraft` (loosely typed fields from the edge) → `validate` →
//! `Template`, gathering every rule violation at once. Changes go through `Template::apply`,
//! which returns the new state or why the change is refused; stores call it inside their
//! transaction so the rule is decided on the row they locked.

use crate::ids::{GoodsId, ShopId, TemplateId};
use crate::money::Money;
use crate::time::truncate_ms;
use crate::validation::ValidationErrors;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

pub const MAX_STOCK: i64 = 20_000_000;
pub const MAX_GOODS: usize = 100;
pub const MAX_VALIDITY_HOURS: i64 = 8_760;
pub const MAX_PER_USER_LIMIT: i64 = 100;
pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_INSTRUCTIONS_CHARS: usize = 1_000;

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum $name { $(#[serde(rename = $text)] $variant),+ }

        // By hand: utoipa's derive does not see a `serde(rename)` whose text comes from a
        // macro argument, and published the Rust variant names instead of the wire's.
        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}

        impl $name {
            pub const ALL: &'static [&'static str] = &[$($text),+];

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some(Self::$variant),)+ _ => None }
            }

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }
    };
}

wire_enum!(
    /// Who funds the coupon: one shop, or the platform (admins only).
    Source { Shop => "shop", Platform => "platform" }
);
wire_enum!(
    /// What the discount applies to: the whole shop (whole order for platform coupons) or
    /// only the listed goods.
    Scope { Shop => "shop", Goods => "goods" }
);
wire_enum!(
    Kind { Fixed => "fixed", Threshold => "threshold", Percent => "percent" }
);
wire_enum!(
    TemplateStatus { Active => "active", Ended => "ended", Terminated => "terminated" }
);

/// A coupon template as stored and as sent on the wire.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Template {
    pub id: TemplateId,
    pub shop_id: ShopId,
    pub name: String,
    pub instructions: String,
    pub source: Source,
    pub scope: Scope,
    /// Listed goods for `scope = goods`; empty otherwise.
    pub goods_ids: Vec<GoodsId>,
    pub kind: Kind,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>, minimum = 1))]
    pub amount_off: Option<Money>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>, minimum = 0))]
    pub threshold: Option<Money>,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 99))]
    pub percent_off: Option<u8>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>, minimum = 1))]
    pub max_off: Option<Money>,
    pub stock_total: i64,
    /// What is left to issue.
    pub stock: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub claim_start: Timestamp,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub claim_end: Timestamp,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub valid_from: Option<Timestamp>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub valid_until: Option<Timestamp>,
    pub validity_hours: Option<u32>,
    pub per_user_limit: u32,
    pub status: TemplateStatus,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: Timestamp,
}

/// Loosely typed creation input: each field as the edge could read it, `None` when absent
/// (or when the edge already reported a type error for it).
#[derive(Debug, Clone, Default)]
pub struct TemplateDraft {
    pub name: Option<String>,
    pub instructions: Option<String>,
    pub source: Option<Source>,
    pub scope: Option<Scope>,
    pub goods_ids: Option<Vec<GoodsId>>,
    pub kind: Option<Kind>,
    pub amount_off: Option<i64>,
    pub threshold: Option<i64>,
    pub percent_off: Option<i64>,
    pub max_off: Option<i64>,
    pub stock_total: Option<i64>,
    pub claim_start: Option<Timestamp>,
    pub claim_end: Option<Timestamp>,
    pub valid_from: Option<Timestamp>,
    pub valid_until: Option<Timestamp>,
    pub validity_hours: Option<i64>,
    pub per_user_limit: Option<i64>,
}

fn money(errs: &mut ValidationErrors, field: &str, v: Option<i64>) -> Option<Money> {
    match Money::parse(v?) {
        Ok(m) => Some(m),
        Err(e) => {
            errs.add(field, e.to_string());
            None
        }
    }
}

fn forbid<T>(errs: &mut ValidationErrors, field: &str, v: &Option<T>, why: &str) {
    if v.is_some() {
        errs.add(field, why);
    }
}

impl TemplateDraft {
    /// Checks every creation rule and returns the template to store, or all violations.
    /// `now` decides whether the claim window is still ahead; `id` and `shop_id` are decided
    /// by the caller (id generator, and the acting principal's rights).
    pub fn validate(
        self,
        id: TemplateId,
        shop_id: ShopId,
        now: Timestamp,
    ) -> Result<Template, ValidationErrors> {
        let mut errs = ValidationErrors::new();

        let name = match self.name.as_deref().map(str::trim) {
            None => {
                errs.add("name", "is required");
                String::new()
            }
            Some("") => {
                errs.add("name", "must not be blank");
                String::new()
            }
            Some(n) if n.chars().count() > MAX_NAME_CHARS => {
                errs.add(
                    "name",
                    format!("must be at most {MAX_NAME_CHARS} characters"),
                );
                String::new()
            }
            Some(n) if n.chars().any(char::is_control) => {
                errs.add("name", "must not contain control characters");
                String::new()
            }
            Some(n) => n.to_owned(),
        };
        let instructions = self.instructions.unwrap_or_default();
        if instructions.chars().count() > MAX_INSTRUCTIONS_CHARS {
            errs.add(
                "instructions",
                format!("must be at most {MAX_INSTRUCTIONS_CHARS} characters"),
            );
        }

        let source = self.source.unwrap_or(Source::Shop);
        let scope = self.scope.unwrap_or(Scope::Shop);
        let goods_ids = match (scope, self.goods_ids) {
            (Scope::Goods, None) => {
                errs.add("goods_ids", "is required when scope is goods");
                Vec::new()
            }
            (Scope::Goods, Some(ids)) => {
                if ids.is_empty() || ids.len() > MAX_GOODS {
                    errs.add("goods_ids", format!("must list 1 to {MAX_GOODS} goods ids"));
                }
                let mut sorted = ids.clone();
                sorted.sort_unstable();
                sorted.dedup();
                if sorted.len() != ids.len() {
                    errs.add("goods_ids", "must not repeat an id");
                }
                ids
            }
            (Scope::Shop, Some(ids)) if !ids.is_empty() => {
                errs.add("goods_ids", "must be empty when scope is shop");
                Vec::new()
            }
            (Scope::Shop, _) => Vec::new(),
        };

        let amount_off = money(&mut errs, "amount_off", self.amount_off);
        let threshold = money(&mut errs, "threshold", self.threshold);
        let max_off = money(&mut errs, "max_off", self.max_off);
        let mut percent_off = None;
        match self.kind {
            None => errs.add(
                "kind",
                format!("is required: one of {}", Kind::ALL.join(", ")),
            ),
            Some(Kind::Fixed) => {
                require_positive(
                    &mut errs,
                    "amount_off",
                    self.amount_off,
                    amount_off,
                    "fixed",
                );
                if threshold.is_some_and(|t| t > Money::ZERO) {
                    errs.add(
                        "threshold",
                        "fixed coupons have no threshold; use kind threshold",
                    );
                }
                forbid(
                    &mut errs,
                    "percent_off",
                    &self.percent_off,
                    "only percent coupons have percent_off",
                );
                forbid(
                    &mut errs,
                    "max_off",
                    &self.max_off,
                    "only percent coupons have max_off",
                );
            }
            Some(Kind::Threshold) => {
                require_positive(
                    &mut errs,
                    "amount_off",
                    self.amount_off,
                    amount_off,
                    "threshold",
                );
                match (threshold, amount_off) {
                    (None, _) if self.threshold.is_none() => {
                        errs.add("threshold", "is required for threshold coupons")
                    }
                    (Some(t), Some(a)) if t <= a => {
                        errs.add("threshold", "must be greater than amount_off")
                    }
                    _ => {}
                }
                forbid(
                    &mut errs,
                    "percent_off",
                    &self.percent_off,
                    "only percent coupons have percent_off",
                );
                forbid(
                    &mut errs,
                    "max_off",
                    &self.max_off,
                    "only percent coupons have max_off",
                );
            }
            Some(Kind::Percent) => {
                match self.percent_off {
                    None => errs.add("percent_off", "is required for percent coupons"),
                    Some(p @ 1..=99) => percent_off = u8::try_from(p).ok(),
                    Some(_) => errs.add("percent_off", "must be between 1 and 99"),
                }
                forbid(
                    &mut errs,
                    "amount_off",
                    &self.amount_off,
                    "percent coupons take percent_off, not amount_off",
                );
                if max_off == Some(Money::ZERO) {
                    errs.add("max_off", "must be greater than 0 (omit it for no cap)");
                }
            }
        }

        let stock_total = match self.stock_total {
            None => {
                errs.add("stock_total", "is required");
                0
            }
            Some(s) if !(1..=MAX_STOCK).contains(&s) => {
                errs.add("stock_total", format!("must be between 1 and {MAX_STOCK}"));
                0
            }
            Some(s) => s,
        };

        let claim_start = self.claim_start.map(truncate_ms);
        let claim_end = self.claim_end.map(truncate_ms);
        if claim_start.is_none() {
            errs.add("claim_start", "is required");
        }
        match claim_end {
            None => errs.add("claim_end", "is required"),
            Some(end) if claim_start.is_some_and(|s| end <= s) => {
                errs.add("claim_end", "must be after claim_start")
            }
            Some(end) if end <= now => errs.add("claim_end", "must be in the future"),
            Some(_) => {}
        }

        let valid_from = self.valid_from.map(truncate_ms);
        let valid_until = self.valid_until.map(truncate_ms);
        let mut validity_hours = None;
        match (valid_from, valid_until, self.validity_hours) {
            (None, None, None) => errs.add(
                "validity",
                "is required: give valid_from and valid_until (absolute) or validity_hours (relative)",
            ),
            (Some(_), _, Some(_)) => errs.add(
                "validity_hours",
                "give either valid_from and valid_until (absolute) or validity_hours (relative), not both",
            ),
            (Some(_), None, None) => errs.add("valid_until", "is required with valid_from"),
            (None, Some(_), None) => errs.add("valid_from", "is required with valid_until (or give validity_hours)"),
            (Some(from), Some(until), None) => {
                if until <= from {
                    errs.add("valid_until", "must be after valid_from");
                }
            }
            (None, _, Some(h)) => {
                if (1..=MAX_VALIDITY_HOURS).contains(&h) {
                    validity_hours = u32::try_from(h).ok();
                } else {
                    errs.add("validity_hours", format!("must be between 1 and {MAX_VALIDITY_HOURS}"));
                }
            }
        }
        if let (Some(until), Some(start)) = (valid_until, claim_start)
            && until <= start
            && !errs.has("valid_until")
        {
            errs.add(
                "valid_until",
                "must be after claim_start, or every coupon is born expired",
            );
        }

        let per_user_limit = match self.per_user_limit {
            None => 1,
            Some(n) if (1..=MAX_PER_USER_LIMIT).contains(&n) => u32::try_from(n).unwrap_or(1),
            Some(_) => {
                errs.add(
                    "per_user_limit",
                    format!("must be between 1 and {MAX_PER_USER_LIMIT}"),
                );
                1
            }
        };

        let (Some(claim_start), Some(claim_end)) = (claim_start, claim_end) else {
            return Err(errs);
        };
        let Some(kind) = self.kind else {
            return Err(errs);
        };
        let now = truncate_ms(now);
        errs.finish(Template {
            id,
            shop_id,
            name,
            instructions,
            source,
            scope,
            goods_ids,
            kind,
            amount_off: if kind == Kind::Percent {
                None
            } else {
                amount_off
            },
            threshold: match kind {
                Kind::Fixed => None,
                Kind::Threshold => threshold,
                Kind::Percent => Some(threshold.unwrap_or(Money::ZERO)),
            },
            percent_off,
            max_off: if kind == Kind::Percent { max_off } else { None },
            stock_total,
            stock: stock_total,
            claim_start,
            claim_end,
            valid_from,
            valid_until,
            validity_hours,
            per_user_limit,
            status: TemplateStatus::Active,
            created_at: now,
            updated_at: now,
        })
    }
}

fn require_positive(
    errs: &mut ValidationErrors,
    field: &str,
    raw: Option<i64>,
    parsed: Option<Money>,
    kind: &str,
) {
    match (raw, parsed) {
        (None, _) => errs.add(field, format!("is required for {kind} coupons")),
        (Some(_), Some(m)) if m == Money::ZERO => errs.add(field, "must be greater than 0"),
        _ => {}
    }
}

/// A change to an existing template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateChange {
    /// Raise `stock_total` and `stock` by this much (≥ 1, checked at the edge).
    AddStock(i64),
    /// Stop claims now (merchant or admin).
    Terminate,
    /// Mark an active template whose claim window has passed as ended (system).
    End,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("the template was terminated")]
    Terminated,
    #[error("the template's claim window has ended")]
    Ended,
    #[error("stock_total would exceed {MAX_STOCK}")]
    StockCap,
    #[error("add must be at least 1")]
    InvalidAdd,
}

impl Template {
    /// The status at `now`: an active template whose window has passed is ended even before
    /// the background sweep writes it down.
    pub fn effective_status(&self, now: Timestamp) -> TemplateStatus {
        match self.status {
            TemplateStatus::Active if now >= self.claim_end => TemplateStatus::Ended,
            s => s,
        }
    }

    /// This template with its status as seen at `now` (for responses).
    pub fn as_of(mut self, now: Timestamp) -> Template {
        self.status = self.effective_status(now);
        self
    }

    /// The template after `change` at `now`; `Ok(None)` when the change already happened
    /// (terminating twice, ending an ended template), so callers can answer idempotently.
    pub fn apply(
        &self,
        change: TemplateChange,
        now: Timestamp,
    ) -> Result<Option<Template>, ChangeError> {
        let status = self.effective_status(now);
        let mut next = self.clone();
        next.updated_at = truncate_ms(now);
        match change {
            TemplateChange::AddStock(n) => {
                if n < 1 {
                    return Err(ChangeError::InvalidAdd);
                }
                match status {
                    TemplateStatus::Terminated => return Err(ChangeError::Terminated),
                    TemplateStatus::Ended => return Err(ChangeError::Ended),
                    TemplateStatus::Active => {}
                }
                let total = self.stock_total.checked_add(n).filter(|t| *t <= MAX_STOCK);
                let Some(total) = total else {
                    return Err(ChangeError::StockCap);
                };
                next.stock_total = total;
                next.stock = self.stock.saturating_add(n);
            }
            TemplateChange::Terminate => match status {
                TemplateStatus::Terminated => return Ok(None),
                TemplateStatus::Ended => return Err(ChangeError::Ended),
                TemplateStatus::Active => next.status = TemplateStatus::Terminated,
            },
            TemplateChange::End => {
                if self.status != TemplateStatus::Active || status != TemplateStatus::Ended {
                    return Ok(None);
                }
                next.status = TemplateStatus::Ended;
            }
        }
        Ok(Some(next))
    }

    /// The JSON form written into audit entries.
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// Parses an RFC 3339 timestamp (with offset) as the API accepts it.
pub fn parse_time(s: &str) -> Option<Timestamp> {
    s.parse::<Timestamp>().ok()
}

/// A duration of `hours` hours (for relative validity).
pub fn hours(hours: u32) -> SignedDuration {
    SignedDuration::from_hours(i64::from(hours))
}

#[cfg(test)]
mod tests;
