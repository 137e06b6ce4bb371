//! The event contract of `docs/events.md`, read from the document itself: every fenced
//! ```` ```json <name> ```` block is the schema of the envelope or of one type's `data`. Tests
//! that produce events pass them to [`assert_documented`], so the page and the code cannot
//! drift apart.

use serde_json::Value;
use stampede_core::claim_ports::OutboxEvent;
use stampede_core::event_ports::cloud_event;
use std::collections::BTreeMap;
use std::sync::LazyLock;

const DOC: &str = include_str!("../../../../docs/events.md");

/// Schema name (`envelope` or an event type) → schema.
static SCHEMAS: LazyLock<BTreeMap<String, Value>> = LazyLock::new(|| {
    let mut schemas = BTreeMap::new();
    let mut lines = DOC.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.strip_prefix("```json ") else {
            continue;
        };
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        let schema: Value = serde_json::from_str(&body.join("\n"))
            .unwrap_or_else(|e| panic!("docs/events.md, schema {name}: {e}"));
        assert!(
            schemas.insert(name.trim().to_owned(), schema).is_none(),
            "{name} twice"
        );
    }
    schemas
});

fn check(name: &str, instance: &Value) {
    let schema = SCHEMAS
        .get(name)
        .unwrap_or_else(|| panic!("docs/events.md has no schema for {name}"));
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("schema {name}: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{name} does not match docs/events.md: {errors:?}\n{instance:#}"
    );
}

/// Each event, as the relay publishes it, matches the documented envelope and its type's
/// `data` schema.
pub fn assert_documented(events: &[OutboxEvent]) {
    assert!(!events.is_empty(), "no events to check");
    for e in events {
        let ce = cloud_event(e, "stampede-test");
        check("envelope", &ce);
        assert_eq!(ce["subject"], e.aggregate_id.to_string());
        match e.kind.as_str() {
            // Same data as `template.created`, after the change.
            "template.terminated" => {
                check("template.created", &ce["data"]);
                assert_eq!(ce["data"]["status"], "terminated");
            }
            kind => check(kind, &ce["data"]),
        }
    }
}

#[test]
fn every_event_type_has_a_schema() {
    let types: Vec<String> = SCHEMAS["envelope"]["properties"]["type"]["enum"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(types.len(), 9, "{types:?}");
    for t in &types {
        assert!(
            SCHEMAS.contains_key(t) || t == "template.terminated",
            "{t} has no schema"
        );
    }
    // Every schema compiles, and nothing documents a type the envelope does not list.
    for (name, schema) in SCHEMAS.iter() {
        jsonschema::options()
            .build(schema)
            .unwrap_or_else(|e| panic!("schema {name}: {e}"));
        assert!(name == "envelope" || types.contains(name), "{name}");
    }
}

#[test]
fn a_payload_that_drifted_is_caught() {
    let drifted = OutboxEvent {
        id: "coupon.locked:1:o".into(),
        kind: "coupon.locked".into(),
        aggregate_id: 1,
        payload: r#"{"coupon_id":"1","user_id":"2","order_id":"o","template_id":"3","status":"locked","at":"2026-01-01T00:00:00Z"}"#.into(),
        created_at_ms: 1_800_000_000_000,
        traceparent: None,
    };
    let missing_discount = std::panic::catch_unwind(|| assert_documented(&[drifted]));
    assert!(missing_discount.is_err(), "a missing field must fail");
}
