//! The cart of a quote or lock body: its lines read field by field (type errors as
//! `items[i].field`), then checked as a cart, every error of both at once.

use crate::error::{ApiError, ApiResult};
use crate::extract::Fields;
use serde_json::Value;
use stampede_domain::ValidationErrors;
use stampede_domain::ids::{GoodsId, ShopId};
use stampede_domain::settlement::{Cart, CartItemDraft};
use utoipa::ToSchema;

/// One cart line of a quote or lock body.
#[derive(ToSchema)]
// Unknown fields of a line are refused like the body's.
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documents the contract; handlers read fields with `Fields`
pub struct CartLine {
    goods_id: GoodsId,
    /// A positive shop id (the platform, `0`, sells nothing).
    #[schema(value_type = String, pattern = "^([1-9][0-9]{0,17}|[1-8][0-9]{18}|9[0-1][0-9]{17}|92[0-1][0-9]{16}|922[0-2][0-9]{15}|9223[0-2][0-9]{14}|92233[0-6][0-9]{13}|922337[0-1][0-9]{12}|92233720[0-2][0-9]{10}|922337203[0-5][0-9]{9}|9223372036[0-7][0-9]{8}|92233720368[0-4][0-9]{7}|922337203685[0-3][0-9]{6}|9223372036854[0-6][0-9]{5}|92233720368547[0-6][0-9]{4}|922337203685477[0-4][0-9]{3}|9223372036854775[0-7][0-9]{2}|922337203685477580[0-6]|9223372036854775807)$")]
    shop_id: ShopId,
    /// Minor units, at most 1,000,000,000,000.
    #[schema(minimum = 0, maximum = 1_000_000_000_000i64)]
    unit_price: i64,
    #[schema(minimum = 1, maximum = 10_000)]
    quantity: i64,
}

/// Reads `items` into cart lines, reporting type errors as `items[i].field`.
pub(crate) fn read_items(
    f: &mut Fields,
    errs: &mut ValidationErrors,
) -> Option<Vec<CartItemDraft>> {
    let raw = f.value("items")?;
    let Value::Array(lines) = raw else {
        errs.add("items", "must be an array of cart lines");
        return None;
    };
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.into_iter().enumerate() {
        let Value::Object(map) = line else {
            errs.add(&format!("items[{i}]"), "must be an object");
            out.push(CartItemDraft::default());
            continue;
        };
        let mut lf = Fields::new(map);
        let draft = CartItemDraft {
            goods_id: lf.id("goods_id", GoodsId::parse),
            shop_id: lf.id("shop_id", ShopId::parse),
            unit_price: lf.int("unit_price"),
            quantity: lf.int("quantity"),
        };
        for e in lf.finish().into_vec() {
            errs.add(&format!("items[{i}].{}", e.field), e.message);
        }
        out.push(draft);
    }
    Some(out)
}

/// The cart, with every error of the body and of the cart at once.
pub(crate) fn cart_of(
    drafts: Option<Vec<CartItemDraft>>,
    mut errs: ValidationErrors,
) -> ApiResult<Cart> {
    let drafts = match drafts {
        Some(d) => d,
        None => {
            if !errs.as_slice().iter().any(|e| e.field == "items") {
                errs.add("items", "is required");
            }
            return Err(ApiError::validation(errs));
        }
    };
    match Cart::validate(&drafts) {
        Ok(cart) if errs.is_empty() => Ok(cart),
        Ok(_) => Err(ApiError::validation(errs)),
        Err(more) => {
            for e in more.into_vec() {
                // A line the edge already reported is reported once.
                if !errs.as_slice().iter().any(|x| x.field == e.field) {
                    errs.add(&e.field, e.message);
                }
            }
            Err(ApiError::validation(errs))
        }
    }
}
