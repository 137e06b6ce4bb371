//! Coupon discovery's read path: the claimable templates of a shop page, a product page and
//! a cart, answered from this node's memory.
//!
//! Per shop (the platform is shop `0`) the node caches the shop's active, not yet closed
//! templates: one store query on a miss, none on a hit. Stock and the user's count come from
//! the hot state, never from the database. Which templates show, and in what order, is
//! `stampede_domain::discovery`.
//!
//! Coherence: every template creation or change bumps a generation counter of the shop's
//! stripe (this node's changes through the back-office observer, other nodes' through the
//! shop invalidation channel); a cached listing whose generation is behind is loaded again, so a
//! terminated template leaves every listing on the next request. A listing loaded while a
//! change committed carries the generation read before its query, so it is reloaded at once.
//! Ends need no signal (the claim window is checked on every request) and neither does
//! selling out (stock is read live). A lost broadcast is bounded by the listing's TTL.

use crate::claim_ports::{HotState, Standing};
use crate::claims::PublicTemplate;
use crate::clock::Clock;
use crate::error::AppError;
use crate::ports::{StoreError, TemplateQuery, TemplateStore};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::{SignedDuration, Timestamp};
use quick_cache::sync::Cache;
use serde::Serialize;
use stampede_domain::ValidationErrors;
use stampede_domain::auth::Principal;
use stampede_domain::discovery::{
    self as rules, Candidate, Listing, Place, SortKey, StockLevel, stock_level,
};
use stampede_domain::ids::{GoodsId, ShopId, TemplateId, UserId};
use stampede_domain::money::Money;
use stampede_domain::settlement::Cart;
use stampede_domain::template::{Template, TemplateStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Generation stripes: a change reloads the listings of its stripe's shops only.
const STRIPES: usize = 4_096;

#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// Templates opening within this much of now are listed (upcoming sales).
    pub horizon: SignedDuration,
    /// Shops whose listing this node keeps.
    pub capacity: u64,
    /// How long a listing lives without any change signal (bounds a lost broadcast).
    pub ttl: Duration,
    /// Most active templates one shop's listing holds (newest first).
    pub max_per_shop: u32,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            horizon: SignedDuration::from_hours(24),
            capacity: 100_000,
            ttl: Duration::from_secs(60),
            max_per_shop: 1_000,
        }
    }
}

/// One shop's listed templates and their pre-rendered JSON, each side by side in one block:
/// a page walks a shop's templates in order, so keeping them contiguous (rather than one
/// allocation per template, scattered over a heap of 200,000 templates) spares a cache
/// miss per template and lets the copy of the fragments stream.
struct ShopListing {
    generation: u64,
    /// When it was read from the store (a listing older than the TTL is read again).
    loaded: Instant,
    templates: Vec<Template>,
    /// The templates' fragments (everything of the public view but stock and status, see
    /// [`static_fragment`]) back to back; template `i`'s ends at `ends[i]`.
    fragments: String,
    ends: Vec<usize>,
}

impl ShopListing {
    fn new(generation: u64, templates: Vec<Template>) -> Self {
        let mut fragments = String::with_capacity(templates.len() * 512);
        let mut ends = Vec::with_capacity(templates.len());
        for t in &templates {
            fragments.push_str(&static_fragment(t));
            ends.push(fragments.len());
        }
        Self {
            generation,
            loaded: Instant::now(),
            templates,
            fragments,
            ends,
        }
    }

    fn fragment(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.fragments[start..self.ends[i]]
    }

    /// Template `i` and its fragment.
    fn entry(&self, i: usize) -> (&Template, &str) {
        (&self.templates[i], self.fragment(i))
    }
}

/// The templates a page considers, each with its fragment (borrowed from the listings).
#[derive(Default)]
struct Picked<'a> {
    templates: Vec<&'a Template>,
    fragments: Vec<&'a str>,
}

impl<'a> Picked<'a> {
    fn push(&mut self, (t, f): (&'a Template, &'a str)) {
        self.templates.push(t);
        self.fragments.push(f);
    }
}

/// The public view's fields that do not change while a template is listed, in the view's
/// order (`PublicTemplate`: these, then `remaining_stock` and `status`).
#[derive(Serialize)]
struct StaticFields<'a> {
    id: TemplateId,
    shop_id: ShopId,
    name: &'a str,
    instructions: &'a str,
    source: stampede_domain::template::Source,
    scope: stampede_domain::template::Scope,
    goods_ids: &'a [GoodsId],
    kind: stampede_domain::template::Kind,
    amount_off: Option<Money>,
    threshold: Option<Money>,
    percent_off: Option<u8>,
    max_off: Option<Money>,
    claim_start: Timestamp,
    claim_end: Timestamp,
    valid_from: Option<Timestamp>,
    valid_until: Option<Timestamp>,
    validity_hours: Option<u32>,
    per_user_limit: u32,
}

fn static_fragment(t: &Template) -> String {
    let fields = StaticFields {
        id: t.id,
        shop_id: t.shop_id,
        name: &t.name,
        instructions: &t.instructions,
        source: t.source,
        scope: t.scope,
        goods_ids: &t.goods_ids,
        kind: t.kind,
        amount_off: t.amount_off,
        threshold: t.threshold,
        percent_off: t.percent_off,
        max_off: t.max_off,
        claim_start: t.claim_start,
        claim_end: t.claim_end,
        valid_from: t.valid_from,
        valid_until: t.valid_until,
        validity_hours: t.validity_hours,
        per_user_limit: t.per_user_limit,
    };
    // Serialising plain fields cannot fail; an empty fragment would still be valid JSON
    // once the dynamic fields follow, but it is never expected.
    let json = serde_json::to_string(&fields).unwrap_or_default();
    json.strip_prefix('{')
        .and_then(|j| j.strip_suffix('}'))
        .map(str::to_owned)
        .unwrap_or_default()
}

/// A rendered discovery answer: the JSON of a [`DiscoveryPage`] and whether it is partial.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub body: String,
    pub partial: bool,
}

/// One template in a discovery answer.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DiscoveredTemplate {
    #[serde(flatten)]
    pub template: PublicTemplate,
    /// `plenty`, `few` (at most 10 % of the total or at most 10 left) or `sold_out`.
    pub stock_level: StockLevel,
    /// What it takes off: on the reference `price` (listings) or on the cart (claimable).
    #[cfg_attr(feature = "openapi", schema(value_type = i64, minimum = 0))]
    pub discount: Money,
    /// User callers only: coupons of it the user holds (what the limit counts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_claimed: Option<u32>,
    /// User callers only: the template's per-user limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_limit: Option<u32>,
    /// User callers only: whether a claim now would pass (window open, stock left, under
    /// the limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_claim: Option<bool>,
}

/// One page of a discovery answer.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DiscoveryPage {
    /// Most useful first: larger discount, then the claim window closing sooner, then id.
    pub items: Vec<DiscoveredTemplate>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// Present (`true`) only when the hot state could not be read: stock is the stored one
    /// and per-user fields are left out.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

/// Paging and display options every discovery read takes (as the edge read them).
#[derive(Debug, Clone, Default)]
pub struct PageParams {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub include_sold_out: bool,
}

pub struct Discovery {
    store: Arc<dyn TemplateStore>,
    hot: Arc<dyn HotState>,
    clock: Arc<dyn Clock>,
    cfg: DiscoveryConfig,
    listings: Cache<ShopId, Arc<ShopListing>>,
    generations: Box<[AtomicU64]>,
    db_queries: AtomicU64,
}

impl Discovery {
    pub fn new(
        store: Arc<dyn TemplateStore>,
        hot: Arc<dyn HotState>,
        clock: Arc<dyn Clock>,
        cfg: DiscoveryConfig,
    ) -> Self {
        // quick_cache rather than moka here: this lookup runs on every product page, and
        // moka's per-read bookkeeping was a visible share of one; the TTL is checked on the
        // listing itself.
        let listings = Cache::new(usize::try_from(cfg.capacity).unwrap_or(usize::MAX));
        Self {
            store,
            hot,
            clock,
            cfg,
            listings,
            generations: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            db_queries: AtomicU64::new(0),
        }
    }

    /// Store queries made to fill listings (for metrics and tests): flat in steady state.
    pub fn db_queries(&self) -> u64 {
        self.db_queries.load(Ordering::Relaxed)
    }

    /// A template of `shop` was created or changed (after its commit).
    pub fn changed(&self, shop: ShopId) {
        self.stripe(shop).fetch_add(1, Ordering::AcqRel);
    }

    /// Changes may have been missed (a broadcast subscription was re-established).
    pub fn forget_all(&self) {
        for g in self.generations.iter() {
            g.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn stripe(&self, shop: ShopId) -> &AtomicU64 {
        let x = (shop.get() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        &self.generations[(x >> 52) as usize % STRIPES]
    }

    /// The active, not yet closed templates of `shop`, from cache when current.
    async fn listing(&self, shop: ShopId) -> Result<Arc<ShopListing>, StoreError> {
        let generation = self.stripe(shop).load(Ordering::Acquire);
        if let Some(l) = self.listings.get(&shop)
            && l.generation == generation
            && l.loaded.elapsed() < self.cfg.ttl
        {
            metrics::counter!("stampede_discovery_listing_hits_total").increment(1);
            return Ok(l);
        }
        metrics::counter!("stampede_discovery_listing_loads_total").increment(1);
        self.db_queries.fetch_add(1, Ordering::Relaxed);
        let page = self
            .store
            .list_templates(&TemplateQuery {
                shop_id: Some(shop),
                status: Some(TemplateStatus::Active),
                kind: None,
                name: None,
                page: 1,
                page_size: self.cfg.max_per_shop,
                now: self.clock.now(),
                goods_id: None,
                claim_from: None,
                claim_to: None,
            })
            .await?;
        let l = Arc::new(ShopListing::new(generation, page.items));
        self.listings.insert(shop, l.clone());
        Ok(l)
    }

    /// The listings of `shops` (kept by the caller while it borrows from them).
    async fn listings(&self, shops: &[ShopId]) -> Result<Vec<Arc<ShopListing>>, AppError> {
        let mut out = Vec::with_capacity(shops.len());
        for &shop in shops {
            out.push(self.listing(shop).await?);
        }
        Ok(out)
    }

    /// The templates of `listings` that apply to `place` and are listed at `now`.
    fn pick<'a>(
        &self,
        listings: &'a [Arc<ShopListing>],
        place: Option<Place>,
        now: Timestamp,
    ) -> Picked<'a> {
        let opens_by = rules::opens_by(now, self.cfg.horizon);
        let mut out = Picked::default();
        for l in listings {
            for (i, t) in l.templates.iter().enumerate() {
                if rules::listed_by(t, now, opens_by) && place.is_none_or(|p| rules::applies(t, p))
                {
                    out.push(l.entry(i));
                }
            }
        }
        out
    }

    /// The hot state's view of `ts`; when it cannot be read, the stored stock and no
    /// per-user fields (`partial`).
    async fn standing(&self, ts: &[&Template], user: Option<UserId>) -> (Vec<Standing>, bool) {
        match self.hot.standing(ts, user).await {
            Ok(s) if s.len() == ts.len() => (s, false),
            Ok(_) => {
                tracing::error!("the hot state answered for another number of templates");
                (vec![Standing::default(); ts.len()], true)
            }
            Err(e) => {
                tracing::warn!(error = %e, "discovery answers without the hot state");
                metrics::counter!("stampede_discovery_partial_total").increment(1);
                (vec![Standing::default(); ts.len()], true)
            }
        }
    }

    /// Templates of a shop page.
    pub async fn shop(
        &self,
        who: &Principal,
        shop: ShopId,
        include_platform: bool,
        price: Option<i64>,
        page: PageParams,
    ) -> Result<Rendered, AppError> {
        let place = Place::Shop {
            shop,
            include_platform,
        };
        let mut shops = vec![shop];
        if include_platform && !shop.is_platform() {
            shops.push(ShopId::PLATFORM);
        }
        self.listed_page(who, &shops, place, price, page).await
    }

    /// Templates that apply to one product of `shop`.
    pub async fn goods(
        &self,
        who: &Principal,
        shop: ShopId,
        goods: GoodsId,
        price: Option<i64>,
        page: PageParams,
    ) -> Result<Rendered, AppError> {
        let place = Place::Goods { shop, goods };
        let shops: &[ShopId] = if shop.is_platform() {
            &[ShopId::PLATFORM]
        } else {
            &[shop, ShopId::PLATFORM]
        };
        self.listed_page(who, shops, place, price, page).await
    }

    async fn listed_page(
        &self,
        who: &Principal,
        shops: &[ShopId],
        place: Place,
        price: Option<i64>,
        page: PageParams,
    ) -> Result<Rendered, AppError> {
        let mut errs = ValidationErrors::new();
        let price = match Money::parse(price.unwrap_or(rules::DEFAULT_REFERENCE_PRICE)) {
            Ok(m) => m,
            Err(e) => {
                errs.add("price", e.to_string());
                Money::ZERO
            }
        };
        let listing = self.listing_params(&page, &mut errs);
        errs.finish(()).map_err(AppError::Validation)?;
        // Per-user fields only for a user token (others get the listing alone).
        let user = crate::claims::user_of(who).ok();
        let now = listing.now;
        let listings = self.listings(shops).await?;
        let picked = self.pick(&listings, Some(place), now);
        let (standing, partial) = self.standing(&picked.templates, user).await;
        Ok(render(
            &picked,
            &standing,
            partial,
            &listing,
            |t| Some(rules::reference_discount(t, price)),
            now,
        ))
    }

    /// The templates `who` (a user) could still claim that would lower `cart`'s price, with
    /// what each takes off this cart on its own.
    pub async fn claimable(
        &self,
        who: &Principal,
        cart: &Cart,
        page: PageParams,
    ) -> Result<Rendered, AppError> {
        let user = crate::claims::user_of(who)?;
        let mut errs = ValidationErrors::new();
        let listing = self.listing_params(&page, &mut errs);
        errs.finish(()).map_err(AppError::Validation)?;
        let now = listing.now;
        let mut shops: Vec<ShopId> = cart.shops().iter().map(|s| s.shop_id).collect();
        shops.push(ShopId::PLATFORM);
        let listings = self.listings(&shops).await?;
        let all = self.pick(&listings, None, now);
        let mut open = Picked::default();
        for (&t, &f) in all.templates.iter().zip(&all.fragments) {
            if t.claim_start <= now {
                open.push((t, f));
            }
        }
        let (standing, partial) = self.standing(&open.templates, Some(user)).await;
        // Only what a claim now would get: open, in stock, under the limit.
        let mut picked = Picked::default();
        let mut kept = Vec::with_capacity(standing.len());
        for ((&t, &f), s) in open.templates.iter().zip(&open.fragments).zip(standing) {
            let c = Candidate {
                template: t,
                remaining: s.stock.unwrap_or(t.stock),
                held: s.held,
            };
            if c.can_claim(now).unwrap_or(partial) {
                picked.push((t, f));
                kept.push(s);
            }
        }
        Ok(render(
            &picked,
            &kept,
            partial,
            &Listing {
                include_sold_out: false,
                ..listing
            },
            |t| rules::cart_discount(t, user, cart, now),
            now,
        ))
    }

    /// Adds to `errs` what is wrong with `price` and `page`, so the edge can report them
    /// with its own errors at once (the reads check them again).
    pub fn check(&self, price: Option<i64>, page: &PageParams, errs: &mut ValidationErrors) {
        if let Some(p) = price
            && let Err(e) = Money::parse(p)
        {
            errs.add("price", e.to_string());
        }
        self.listing_params(page, errs);
    }

    fn listing_params(&self, page: &PageParams, errs: &mut ValidationErrors) -> Listing {
        let limit = match page.limit {
            None => rules::DEFAULT_PAGE_SIZE,
            Some(n) if (1..=rules::MAX_PAGE_SIZE).contains(&n) => n,
            Some(_) => {
                errs.add(
                    "limit",
                    format!("must be between 1 and {}", rules::MAX_PAGE_SIZE),
                );
                rules::DEFAULT_PAGE_SIZE
            }
        };
        let after = match page.cursor.as_deref() {
            None | Some("") => None,
            Some(c) => {
                let k = decode_cursor(c);
                if k.is_none() {
                    errs.add("cursor", "is not a cursor this API returned");
                }
                k
            }
        };
        Listing {
            now: self.clock.now(),
            horizon: self.cfg.horizon,
            include_sold_out: page.include_sold_out,
            limit,
            after,
        }
    }
}

/// Ranks `ts` and writes the page's JSON from the pre-rendered fragments: byte for byte
/// what serialising the [`DiscoveryPage`] of [`page_of`] gives (a test checks it).
fn render(
    ts: &Picked<'_>,
    standing: &[Standing],
    partial: bool,
    listing: &Listing,
    discount: impl Fn(&Template) -> Option<Money>,
    now: Timestamp,
) -> Rendered {
    let (page, fragments) = ranked(ts, standing, listing, discount);
    let size: usize = fragments.iter().map(|f| f.len() + 200).sum();
    let mut body = String::with_capacity(64 + size);
    body.push_str("{\"items\":[");
    for (i, (r, fragment)) in page.items.iter().zip(fragments).enumerate() {
        let c = r.candidate;
        let t = c.template;
        if i > 0 {
            body.push(',');
        }
        body.push('{');
        body.push_str(fragment);
        // itoa rather than `write!`: the formatting machinery was a visible share of a page.
        let mut n = itoa::Buffer::new();
        body.push_str(",\"remaining_stock\":");
        body.push_str(n.format(c.remaining.max(0)));
        body.push_str(",\"status\":\"");
        body.push_str(t.effective_status(now).as_str());
        body.push_str("\",\"stock_level\":\"");
        body.push_str(stock_level(c.remaining, t.stock_total).as_str());
        body.push_str("\",\"discount\":");
        body.push_str(n.format(r.discount.cents()));
        if let Some(held) = c.held {
            body.push_str(",\"user_claimed\":");
            body.push_str(n.format(held));
            body.push_str(",\"user_limit\":");
            body.push_str(n.format(t.per_user_limit));
            body.push_str(",\"can_claim\":");
            body.push_str(if c.can_claim(now).unwrap_or(false) {
                "true"
            } else {
                "false"
            });
        }
        body.push('}');
    }
    body.push(']');
    if let Some(k) = page.next {
        body.push_str(",\"next_cursor\":\"");
        body.push_str(&encode_cursor(k));
        body.push('"');
    }
    if partial {
        body.push_str(",\"partial\":true");
    }
    body.push('}');
    Rendered { body, partial }
}

/// The ranked page and, per item, its template's fragment.
fn ranked<'a>(
    ts: &Picked<'a>,
    standing: &[Standing],
    listing: &Listing,
    discount: impl Fn(&Template) -> Option<Money>,
) -> (rules::Page<'a>, Vec<&'a str>) {
    let candidates = ts.templates.iter().zip(standing).map(|(&t, s)| Candidate {
        template: t,
        remaining: s.stock.unwrap_or(t.stock).max(0),
        held: s.held,
    });
    let page = rules::rank(candidates, listing, discount);
    let fragments = page
        .items
        .iter()
        .map(|r| {
            ts.templates
                .iter()
                .position(|&t| std::ptr::eq(t, r.candidate.template))
                .and_then(|i| ts.fragments.get(i).copied())
                .unwrap_or("")
        })
        .collect();
    (page, fragments)
}

/// The page [`render`] writes, as a value (what the OpenAPI document describes).
#[cfg(test)]
fn page_of(
    ts: &Picked<'_>,
    standing: &[Standing],
    partial: bool,
    listing: &Listing,
    discount: impl Fn(&Template) -> Option<Money>,
    now: Timestamp,
) -> DiscoveryPage {
    let (page, _) = ranked(ts, standing, listing, discount);
    DiscoveryPage {
        items: page
            .items
            .iter()
            .map(|r| {
                let c = r.candidate;
                let t = c.template;
                DiscoveredTemplate {
                    template: PublicTemplate::of(t, c.remaining, now),
                    stock_level: stock_level(c.remaining, t.stock_total),
                    discount: r.discount,
                    user_claimed: c.held,
                    user_limit: c.held.map(|_| t.per_user_limit),
                    can_claim: c.can_claim(now),
                }
            })
            .collect(),
        next_cursor: page.next.map(encode_cursor),
        partial,
    }
}

/// Cursors are opaque to clients: the last item's sort key inside.
fn encode_cursor(k: SortKey) -> String {
    URL_SAFE_NO_PAD.encode(k.to_text())
}

fn decode_cursor(s: &str) -> Option<SortKey> {
    let raw = URL_SAFE_NO_PAD.decode(s).ok()?;
    SortKey::from_text(std::str::from_utf8(&raw).ok()?)
}

#[cfg(test)]
mod tests;
