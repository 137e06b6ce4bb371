//! The cart a quote or a lock prices: validated lines, their shops and subtotals.

use crate::ids::{GoodsId, ShopId};
use crate::money::{MAX_MONEY, Money};
use crate::validation::ValidationErrors;
use serde::Serialize;

pub const MAX_CART_ITEMS: usize = 100;
pub const MAX_QUANTITY: i64 = 10_000;

/// One cart line as the edge could read it; `None` when absent (or when the edge already
/// reported a type error for it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CartItemDraft {
    pub goods_id: Option<GoodsId>,
    pub shop_id: Option<ShopId>,
    /// Minor units.
    pub unit_price: Option<i64>,
    pub quantity: Option<i64>,
}

/// A validated cart line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CartItem {
    pub goods_id: GoodsId,
    /// A real shop, never `ShopId::PLATFORM`.
    pub shop_id: ShopId,
    pub unit_price: Money,
    pub quantity: u32,
}

impl CartItem {
    /// `unit_price × quantity`; within `MAX_MONEY` for every line of a validated cart.
    pub fn line_total(&self) -> Money {
        super::eligibility::money(self.line_cents())
    }

    pub(super) fn line_cents(&self) -> i64 {
        self.unit_price
            .cents()
            .saturating_mul(i64::from(self.quantity))
    }
}

/// The subtotal of one shop's lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ShopSubtotal {
    pub shop_id: ShopId,
    pub subtotal: Money,
}

/// A validated cart: 1–100 lines of real shops, every amount within `MAX_MONEY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cart {
    items: Vec<CartItem>,
    /// Index into `shops` of each line's shop.
    item_shop: Vec<usize>,
    /// Ascending by shop id.
    shops: Vec<ShopSubtotal>,
    subtotal: Money,
}

impl Cart {
    /// Checks every line and returns the cart, or every violation at once (fields
    /// `items`, `items[i].goods_id`, `items[i].shop_id`, `items[i].unit_price`,
    /// `items[i].quantity`, `items[i]` for a line total over the maximum). Repeated goods are
    /// allowed: the lines simply add up.
    pub fn validate(items: &[CartItemDraft]) -> Result<Cart, ValidationErrors> {
        let mut errs = ValidationErrors::new();
        if items.is_empty() || items.len() > MAX_CART_ITEMS {
            errs.add("items", format!("must list 1 to {MAX_CART_ITEMS} items"));
        }
        let mut lines = Vec::with_capacity(items.len());
        for (i, d) in items.iter().enumerate() {
            if let Some(line) = validate_line(&mut errs, i, d) {
                lines.push(line);
            }
        }
        let total = lines
            .iter()
            .try_fold(0i64, |acc, l| acc.checked_add(l.line_cents()))
            .filter(|t| *t <= MAX_MONEY);
        let Some(total) = total else {
            errs.add(
                "items",
                format!("the subtotal must be at most {MAX_MONEY} minor units"),
            );
            return Err(errs);
        };
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(Cart::from_lines(lines, total))
    }

    fn from_lines(items: Vec<CartItem>, total: i64) -> Cart {
        let mut shop_ids: Vec<ShopId> = items.iter().map(|i| i.shop_id).collect();
        shop_ids.sort_unstable();
        shop_ids.dedup();
        let mut sums = vec![0i64; shop_ids.len()];
        let mut item_shop = Vec::with_capacity(items.len());
        for item in &items {
            let s = shop_ids.binary_search(&item.shop_id).unwrap_or_default();
            sums[s] += item.line_cents();
            item_shop.push(s);
        }
        let shops = shop_ids
            .into_iter()
            .zip(sums)
            .map(|(shop_id, s)| ShopSubtotal {
                shop_id,
                subtotal: super::eligibility::money(s),
            })
            .collect();
        Cart {
            items,
            item_shop,
            shops,
            subtotal: super::eligibility::money(total),
        }
    }

    pub fn items(&self) -> &[CartItem] {
        &self.items
    }

    pub fn subtotal(&self) -> Money {
        self.subtotal
    }

    /// The shops of the cart with their subtotals, ascending by shop id.
    pub fn shops(&self) -> &[ShopSubtotal] {
        &self.shops
    }

    /// The subtotal of `shop`'s lines; zero when it has none.
    pub fn shop_subtotal(&self, shop: ShopId) -> Money {
        self.shop_index(shop)
            .map_or(Money::ZERO, |s| self.shops[s].subtotal)
    }

    pub(super) fn shop_index(&self, shop: ShopId) -> Option<usize> {
        self.shops.binary_search_by_key(&shop, |s| s.shop_id).ok()
    }

    /// Lines with the index of their shop.
    pub(super) fn lines(&self) -> impl Iterator<Item = (usize, &CartItem)> {
        self.item_shop.iter().copied().zip(&self.items)
    }
}

fn validate_line(errs: &mut ValidationErrors, i: usize, d: &CartItemDraft) -> Option<CartItem> {
    let field = |name: &str| format!("items[{i}].{name}");
    if d.goods_id.is_none() {
        errs.add(&field("goods_id"), "is required");
    }
    match d.shop_id {
        None => errs.add(&field("shop_id"), "is required"),
        Some(s) if s.is_platform() => {
            errs.add(&field("shop_id"), "must be a shop, not the platform")
        }
        Some(_) => {}
    }
    let unit_price = match d.unit_price.map(Money::parse) {
        None => {
            errs.add(&field("unit_price"), "is required");
            None
        }
        Some(Err(e)) => {
            errs.add(&field("unit_price"), e.to_string());
            None
        }
        Some(Ok(m)) => Some(m),
    };
    let quantity = match d.quantity {
        None => {
            errs.add(&field("quantity"), "is required");
            None
        }
        Some(q) if (1..=MAX_QUANTITY).contains(&q) => u32::try_from(q).ok(),
        Some(_) => {
            errs.add(
                &field("quantity"),
                format!("must be between 1 and {MAX_QUANTITY}"),
            );
            None
        }
    };
    let (Some(goods_id), Some(shop_id), Some(unit_price), Some(quantity)) =
        (d.goods_id, d.shop_id, unit_price, quantity)
    else {
        return None;
    };
    if shop_id.is_platform() {
        return None;
    }
    let line = CartItem {
        goods_id,
        shop_id,
        unit_price,
        quantity,
    };
    if line.line_cents() > MAX_MONEY {
        errs.add(
            &format!("items[{i}]"),
            format!("unit_price × quantity must be at most {MAX_MONEY} minor units"),
        );
        return None;
    }
    Some(line)
}
