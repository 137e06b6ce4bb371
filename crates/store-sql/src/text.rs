//! SQL text both dialects accept: placeholder lists, multi-row inserts, and the filters of
//! template and coupon listings with the values they bind. Only fixed fragments and table
//! names are ever put into SQL text; every value is bound.

use crate::columns::Binder;
use stampede_core::ports::TemplateQuery;
use stampede_domain::coupon::CouponStatus;
use stampede_domain::ids::ShopId;
use stampede_domain::template::TemplateStatus;
use stampede_domain::time::to_ms;

/// `?, ?, …` for each column of a comma-separated column list.
pub fn placeholders(columns: &str) -> String {
    vec!["?"; columns.split(',').count()].join(", ")
}

/// `<verb> INTO <table> (<columns>) VALUES (?, …), …` for `rows` rows. `verb` is the
/// dialect's: `INSERT`, `INSERT IGNORE` (MySQL) or `INSERT OR IGNORE` (SQLite).
pub fn multi_insert(verb: &str, table: &str, columns: &str, rows: usize) -> String {
    let row = format!("({})", placeholders(columns));
    let values = vec![row.as_str(); rows].join(", ");
    format!("{verb} INTO {table} ({columns}) VALUES {values}")
}

/// Escapes `%`, `_` and `\` so a user's name filter matches literally in `LIKE … ESCAPE '\'`.
pub fn like_pattern(needle: &str) -> String {
    let mut out = String::with_capacity(needle.len() + 2);
    out.push('%');
    for c in needle.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The condition of a template status filter, binding `now` once: an `active` row past its
/// `claim_end` counts as `ended` until the end sweep writes it.
pub fn template_status_condition(status: TemplateStatus) -> &'static str {
    match status {
        TemplateStatus::Active => "(status = 'active' AND claim_end_ms > ?)",
        TemplateStatus::Ended => "(status = 'ended' OR (status = 'active' AND claim_end_ms <= ?))",
        TemplateStatus::Terminated => "(status = 'terminated' AND ? IS NOT NULL)",
    }
}

/// Offset of the first row of a 1-based `page` (0 reads as 1) of `size` rows, and the end of
/// that page.
pub fn page_window(page: u32, size: u32) -> (u64, u64) {
    let size = u64::from(size);
    let offset = u64::from(page.max(1) - 1) * size;
    (offset, offset + size)
}

enum Arg {
    Int(i64),
    Text(String),
}

/// The `WHERE` conditions of a template listing and the values they bind, in order.
pub struct TemplateFilter {
    conditions: Vec<&'static str>,
    args: Vec<Arg>,
}

impl TemplateFilter {
    /// `shop` limits the list to one shop; `name_like` is the dialect's case-insensitive
    /// `name LIKE ? ESCAPE …` condition.
    pub fn new(q: &TemplateQuery, shop: Option<ShopId>, name_like: &'static str) -> Self {
        let mut f = TemplateFilter {
            conditions: Vec::new(),
            args: Vec::new(),
        };
        if let Some(shop) = shop {
            f.conditions.push("shop_id = ?");
            f.args.push(Arg::Int(shop.get()));
        }
        if let Some(status) = q.status {
            f.conditions.push(template_status_condition(status));
            f.args.push(Arg::Int(to_ms(q.now)));
        }
        if let Some(kind) = q.kind {
            f.conditions.push("kind = ?");
            f.args.push(Arg::Text(kind.as_str().to_owned()));
        }
        if let Some(name) = &q.name {
            f.conditions.push(name_like);
            f.args.push(Arg::Text(like_pattern(name)));
        }
        if let Some(goods) = q.goods_id {
            f.conditions
                .push("id IN (SELECT template_id FROM {goods} WHERE goods_id = ?)");
            f.args.push(Arg::Int(goods.get()));
        }
        // Claim windows `[claim_start, claim_end)` overlapping `[claim_from, claim_to)`.
        if let Some(from) = q.claim_from {
            f.conditions.push("claim_end_ms > ?");
            f.args.push(Arg::Int(to_ms(from)));
        }
        if let Some(to) = q.claim_to {
            f.conditions.push("claim_start_ms < ?");
            f.args.push(Arg::Int(to_ms(to)));
        }
        f
    }

    /// ` WHERE …`, or nothing when no filter applies; `goods_table` is the goods index of
    /// the templates table the clause is for.
    pub fn where_clause(&self, goods_table: &str) -> String {
        if self.conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conditions.join(" AND ")).replace("{goods}", goods_table)
        }
    }

    pub fn bind<B: Binder>(&self, mut q: B) -> B {
        for arg in &self.args {
            q = match arg {
                Arg::Int(v) => q.int(*v),
                Arg::Text(v) => q.text(v),
            };
        }
        q
    }
}

/// The condition a coupon listing adds for a status (`unused` and `expired` judged at `now`),
/// with the one value it binds.
pub struct CouponStatusFilter {
    pub condition: &'static str,
    arg: CouponStatusArg,
}

enum CouponStatusArg {
    Now(i64),
    Status(&'static str),
}

impl CouponStatusFilter {
    pub fn new(status: Option<CouponStatus>, now_ms: i64) -> Option<Self> {
        let now = CouponStatusArg::Now(now_ms);
        let (condition, arg) = match status? {
            CouponStatus::Unused => (" AND status = 'unused' AND valid_until_ms > ?", now),
            CouponStatus::Expired => (
                " AND (status = 'expired' OR (status = 'unused' AND valid_until_ms <= ?))",
                now,
            ),
            s @ (CouponStatus::Locked | CouponStatus::Used | CouponStatus::Revoked) => {
                (" AND status = ?", CouponStatusArg::Status(s.as_str()))
            }
        };
        Some(Self { condition, arg })
    }

    pub fn bind<B: Binder>(&self, q: B) -> B {
        match self.arg {
            CouponStatusArg::Now(ms) => q.int(ms),
            CouponStatusArg::Status(s) => q.text(s),
        }
    }
}

/// Positions an outbox relay marks per statement (well under either dialect's bind limit).
pub const MARK_CHUNK: usize = 500;

/// The next `LIMIT ?` unpublished events of outbox table `table`, in write order, with `seq`.
pub fn unpublished_events_sql(table: &str) -> String {
    format!(
        "SELECT seq, {} FROM {table} WHERE published_at_ms IS NULL ORDER BY seq LIMIT ?",
        <stampede_core::claim_ports::OutboxEvent as crate::SqlRow>::COLUMNS
    )
}

/// Marks `n` positions of `table` published (binds: the time, then the positions); events
/// already marked keep their first time.
pub fn mark_published_sql(table: &str, n: usize) -> String {
    format!(
        "UPDATE {table} SET published_at_ms = ? WHERE published_at_ms IS NULL AND seq IN ({})",
        vec!["?"; n].join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_escapes_wildcards() {
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }

    #[test]
    fn multi_row_inserts_bind_every_column_of_every_row() {
        let sql = multi_insert("INSERT IGNORE", "outbox_3", "a, b, c, d, e", 4);
        assert!(sql.starts_with("INSERT IGNORE INTO outbox_3 (a, b, c, d, e) VALUES (?, ?,"));
        assert_eq!(sql.matches('?').count(), 4 * 5);
    }

    #[test]
    fn template_filters_bind_every_value_and_interpolate_none() {
        let q = TemplateQuery {
            shop_id: None,
            status: Some(TemplateStatus::Active),
            kind: Some(stampede_domain::template::Kind::Fixed),
            name: Some("50%".into()),
            page: 1,
            page_size: 10,
            now: jiff::Timestamp::UNIX_EPOCH,
            goods_id: stampede_domain::ids::GoodsId::new(11),
            claim_from: Some(jiff::Timestamp::UNIX_EPOCH),
            claim_to: Some(jiff::Timestamp::MAX),
        };
        let f = TemplateFilter::new(&q, ShopId::new(7), "name LIKE ?");
        let clause = f.where_clause("template_goods_3");
        assert_eq!(f.args.len(), 7);
        assert_eq!(clause.matches('?').count(), f.args.len());
        assert!(
            clause.contains("FROM template_goods_3 WHERE goods_id = ?"),
            "{clause}"
        );
        assert!(
            !clause.contains("{goods}") && !clause.contains("11"),
            "{clause}"
        );
        assert!(clause.starts_with(" WHERE shop_id = ? AND (status = 'active'"));
        assert!(!clause.contains("50"));
        let none = TemplateQuery {
            status: None,
            kind: None,
            name: None,
            goods_id: None,
            claim_from: None,
            claim_to: None,
            ..q
        };
        assert_eq!(TemplateFilter::new(&none, None, "").where_clause("g"), "");
    }

    #[test]
    fn coupon_status_filters_bind_one_value_each() {
        for s in [
            CouponStatus::Unused,
            CouponStatus::Locked,
            CouponStatus::Used,
            CouponStatus::Expired,
            CouponStatus::Revoked,
        ] {
            let Some(f) = CouponStatusFilter::new(Some(s), 0) else {
                panic!("{s:?} has no filter")
            };
            assert_eq!(f.condition.matches('?').count(), 1, "{s:?}");
        }
        assert!(CouponStatusFilter::new(None, 0).is_none());
    }

    #[test]
    fn pages_are_one_based() {
        assert_eq!(page_window(1, 10), (0, 10));
        assert_eq!(page_window(0, 10), (0, 10));
        assert_eq!(page_window(3, 7), (14, 21));
    }
}
