//! The best stackable combination, exactly.
//!
//! Without a platform coupon the shops do not interact: each takes its largest discount. With
//! platform coupon `p` the value of a choice is `Σ D_s + f_p(X − R)`, where `X = Σ P_s`,
//! `R = Σ min(D_s, P_s)` is how much the shop discounts eat of the goods `p` covers, and `f_p`
//! is `p`'s discount rule (zero below its threshold). `f_p` never decreases and, above the
//! threshold, grows by at most one cent per cent, which gives two facts the search uses:
//! - per shop, only the Pareto front of (discount `D`, reduction `min(D, P_s)`) matters: "no
//!   coupon", every distinct discount below `P_s` (smallest coupon id for equal discounts),
//!   and the largest discount; a shop where `p` covers nothing just takes its largest;
//! - an upper bound for a partial choice `(D, R)` with the shops left: write each remaining
//!   discount as its reduction plus an excess (`≤ max(0, maxD_s − P_s)`); the value is at most
//!   `D + Σ excess + k(ρ)` with `k(ρ) = ρ + f_p(X − R − ρ)` non-decreasing in ρ, and ρ at most
//!   both the remaining reductions and `X − R − threshold` (the platform must still apply).
//!
//! For each platform coupon, a depth-first search over the shops with that bound (options
//! tried largest discount first) finds the optimum; the incumbent carries over between
//! platform coupons, starting from the best choice without one. Leaves where the platform
//! coupon takes nothing off are skipped: the same shop choice without it is as good and has
//! one coupon fewer.
//!
//! With a binding platform threshold the problem contains subset sum, so no exact method is
//! fast on every input. Realistic carts (a few shops) take tens to hundreds of search nodes;
//! contrived ones (ten-odd shops in one cart, each with several close shop coupons, under a
//! binding percent threshold) can take millions. The search therefore stops after
//! `SEARCH_BUDGET` nodes and answers the best valid combination found so far, with
//! `Best::exact = false`.

use super::cart::Cart;
use super::eligibility::{Candidate, Coverage, Rule, assess, money};
use crate::coupon::UserCoupon;
use crate::ids::CouponId;
use crate::money::Money;
use crate::template::Template;
use jiff::Timestamp;
use serde::Serialize;

/// The best combination of a user's coupons for a cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Best {
    /// Ascending; empty when no coupon applies.
    pub coupon_ids: Vec<CouponId>,
    /// Total discount, minor units.
    #[cfg_attr(feature = "openapi", schema(value_type = i64, minimum = 0))]
    pub discount: Money,
    /// Subtotal minus discount, minor units.
    #[cfg_attr(feature = "openapi", schema(value_type = i64, minimum = 0))]
    pub payable: Money,
    /// False only when the search hit its node budget (contrived carts, see `stacking`):
    /// the combination is then valid but maybe not the optimum. Worth a log line; not sent.
    #[serde(skip)]
    pub exact: bool,
}

/// The optimum over every valid combination of `coupons` (pairs of a coupon and its
/// template) on `cart` at `now`; unusable coupons are simply left out.
pub fn best(coupons: &[(UserCoupon, Template)], cart: &Cart, now: Timestamp) -> Best {
    let candidates: Vec<Candidate> = coupons
        .iter()
        .filter_map(|(c, t)| assess(c, t, cart, now).ok())
        .collect();
    best_of(&candidates, cart)
}

pub(super) fn best_of(candidates: &[Candidate], cart: &Cart) -> Best {
    let (found, exact) = solve(candidates, cart.shops().len());
    Best {
        coupon_ids: found.ids,
        discount: money(found.total),
        payable: money(cart.subtotal().cents() - found.total),
        exact,
    }
}

/// A shop coupon as a per-shop option.
#[derive(Debug, Clone, Copy)]
struct ShopOption {
    discount: i64,
    id: CouponId,
}

/// The best combination found so far, under the order: larger total, then fewer coupons,
/// then the smaller ascending id list.
#[derive(Debug)]
struct Incumbent {
    total: i64,
    /// Ascending.
    ids: Vec<CouponId>,
}

impl Incumbent {
    /// Could a combination with at most `bound` total and at least `count` coupons beat it?
    fn may_improve(&self, bound: i64, count: usize) -> bool {
        bound > self.total || (bound == self.total && count <= self.ids.len())
    }

    fn offer(&mut self, total: i64, count: usize, ids: impl FnOnce() -> Vec<CouponId>) {
        if total < self.total || (total == self.total && count > self.ids.len()) {
            return;
        }
        let mut ids = ids();
        ids.sort_unstable();
        if total > self.total || count < self.ids.len() || ids < self.ids {
            self.total = total;
            self.ids = ids;
        }
    }
}

/// Search nodes one `best` may visit over all platform coupons: 3–4 ns each in
/// release, so about a millisecond at worst.
const SEARCH_BUDGET: u64 = 300_000;

/// The best combination, and whether the search finished (it is then the exact optimum).
fn solve(candidates: &[Candidate], shop_count: usize) -> (Incumbent, bool) {
    // Per shop: usable shop coupons, largest discount first, one per distinct discount (the
    // smallest id: swapping an id for a smaller one never makes the sorted list larger).
    let mut per_shop: Vec<Vec<ShopOption>> = vec![Vec::new(); shop_count];
    let mut platforms: Vec<(&Candidate, &[i64])> = Vec::new();
    for c in candidates {
        match &c.coverage {
            Coverage::Shop(s) => {
                if let Some(opts) = per_shop.get_mut(*s) {
                    opts.push(ShopOption {
                        discount: c.discount,
                        id: c.id,
                    });
                }
            }
            Coverage::Platform(p) => platforms.push((c, p)),
        }
    }
    for opts in &mut per_shop {
        opts.sort_unstable_by(|a, b| b.discount.cmp(&a.discount).then(a.id.cmp(&b.id)));
        opts.dedup_by_key(|o| o.discount);
    }

    let mut best = Incumbent {
        total: per_shop
            .iter()
            .filter_map(|o| o.first())
            .map(|o| o.discount)
            .sum(),
        ids: per_shop
            .iter()
            .filter_map(|o| o.first())
            .map(|o| o.id)
            .collect(),
    };
    best.ids.sort_unstable();

    // Strong platform coupons first, for an early strong incumbent.
    platforms.sort_unstable_by(|a, b| b.0.discount.cmp(&a.0.discount).then(a.0.id.cmp(&b.0.id)));
    let max_total = best.total;
    let mut search = Search::new();
    let mut budget = SEARCH_BUDGET;
    let count = platforms.len();
    for (i, (p, covered)) in platforms.into_iter().enumerate() {
        // Nothing with `p` can beat the incumbent if even all shop maxima plus `p` alone can't.
        if !best.may_improve(max_total + p.discount, 1) {
            continue;
        }
        search.prepare(p, covered, &per_shop);
        // Each platform coupon gets a fair share of what the earlier ones left.
        let share = budget / (count - i) as u64;
        search.budget = share;
        search.dfs(0, search.base_discount, 0, &mut best);
        budget -= share - search.budget;
    }
    (best, !search.truncated)
}

#[derive(Debug, Clone, Copy)]
struct Step {
    discount: i64,
    reduction: i64,
    id: Option<CouponId>,
}

/// The search for one platform coupon; buffers are reused across platform coupons.
#[derive(Debug)]
struct Search {
    platform: Option<CouponId>,
    rule: Rule,
    /// `X`: the platform coupon's eligible amount before shop discounts.
    covered: i64,
    /// The least reduced amount it still gives a discount on (threshold, at least 1).
    floor: i64,
    /// Shops whose choice is forced (the platform covers none of their goods).
    base_ids: Vec<CouponId>,
    base_discount: i64,
    /// The options of the branching shops, flat: shop `i` owns `steps[starts[i]..starts[i+1]]`.
    steps: Vec<Step>,
    starts: Vec<usize>,
    /// Suffix sums over branching shops: Σ max(0, maxD − P) and Σ min(maxD, P).
    rest_excess: Vec<i64>,
    rest_reduction: Vec<i64>,
    /// Shop coupon ids chosen on the current path.
    path: Vec<CouponId>,
    /// Nodes the search of the current platform coupon may still visit.
    budget: u64,
    /// Some search ran out of budget.
    truncated: bool,
}

impl Search {
    fn new() -> Self {
        Search {
            platform: None,
            rule: Rule::Amount {
                off: 0,
                threshold: 0,
            },
            covered: 0,
            floor: 1,
            base_ids: Vec::new(),
            base_discount: 0,
            steps: Vec::new(),
            starts: Vec::new(),
            rest_excess: Vec::new(),
            rest_reduction: Vec::new(),
            path: Vec::new(),
            budget: 0,
            truncated: false,
        }
    }

    fn prepare(&mut self, p: &Candidate, covered: &[i64], per_shop: &[Vec<ShopOption>]) {
        self.platform = Some(p.id);
        self.rule = p.rule;
        self.covered = covered.iter().sum();
        self.floor = p.rule.floor_amount();
        self.base_ids.clear();
        self.base_discount = 0;
        self.steps.clear();
        self.starts.clear();
        self.rest_excess.clear();
        self.rest_reduction.clear();
        self.path.clear();
        for (opts, &p_s) in per_shop.iter().zip(covered) {
            let Some(top) = opts.first() else { continue };
            if p_s <= 0 {
                self.base_ids.push(top.id);
                self.base_discount += top.discount;
                continue;
            }
            self.starts.push(self.steps.len());
            self.rest_excess.push((top.discount - p_s).max(0));
            self.rest_reduction.push(top.discount.min(p_s));
            self.steps.push(Step {
                discount: top.discount,
                reduction: top.discount.min(p_s),
                id: Some(top.id),
            });
            // Options between the top and "none" that are not dominated by the top: a
            // discount at or above P_s reduces as much as the top does, for less.
            for o in opts.iter().skip(1).filter(|o| o.discount < p_s) {
                self.steps.push(Step {
                    discount: o.discount,
                    reduction: o.discount,
                    id: Some(o.id),
                });
            }
            self.steps.push(Step {
                discount: 0,
                reduction: 0,
                id: None,
            });
        }
        self.starts.push(self.steps.len());
        self.rest_excess.push(0);
        self.rest_reduction.push(0);
        for i in (0..self.rest_excess.len() - 1).rev() {
            self.rest_excess[i] += self.rest_excess[i + 1];
            self.rest_reduction[i] += self.rest_reduction[i + 1];
        }
    }

    fn dfs(&mut self, shop: usize, discount: i64, reduction: i64, best: &mut Incumbent) {
        if self.budget == 0 {
            self.truncated = true;
            return;
        }
        self.budget -= 1;
        let left = self.covered - reduction;
        if left < self.floor {
            return;
        }
        let count = self.base_ids.len() + self.path.len() + 1;
        if shop + 1 == self.starts.len() {
            let platform = self.rule.discount_on(left);
            if platform > 0 {
                best.offer(discount + platform, count, || {
                    let mut ids = Vec::with_capacity(count);
                    ids.extend_from_slice(&self.base_ids);
                    ids.extend_from_slice(&self.path);
                    ids.extend(self.platform);
                    ids
                });
            }
            return;
        }
        let rho = self.rest_reduction[shop].min(left - self.floor);
        let bound = discount + self.rest_excess[shop] + rho + self.rule.discount_on(left - rho);
        if !best.may_improve(bound, count) {
            return;
        }
        for k in self.starts[shop]..self.starts[shop + 1] {
            let step = self.steps[k];
            if let Some(id) = step.id {
                self.path.push(id);
            }
            self.dfs(
                shop + 1,
                discount + step.discount,
                reduction + step.reduction,
                best,
            );
            if step.id.is_some() {
                self.path.pop();
            }
        }
    }
}
