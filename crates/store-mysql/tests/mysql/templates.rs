//! What only the sharded layout shows about templates: shops really spread over the databases.
//! Everything else templates do is in the conformance suite (`conformance.rs`).

use crate::helpers::*;
use std::collections::HashSet;

both_layouts!(shops_spread_over_every_database);

async fn shops_spread_over_every_database(ctx: Ctx) {
    let store = &ctx.store;
    for s in 1..=10 {
        create(store, &template(1_000 + s, s, "spread")).await;
    }
    let databases: HashSet<usize> = (1..=10).map(|s| store.router().route(s).database).collect();
    assert_eq!(databases.len(), store.router().databases());
}
