//! Reads a JSON object field by field into typed values, collecting every problem (wrong
//! type, out of range, unknown field) instead of stopping at the first, which is what serde
//! would do. Each reader records the field as known; `finish` flags the rest as unknown.

use jiff::Timestamp;
use serde_json::{Map, Value};
use stampede_domain::ValidationErrors;
use std::collections::BTreeSet;

pub struct Fields {
    map: Map<String, Value>,
    known: BTreeSet<&'static str>,
    pub errors: ValidationErrors,
}

impl Fields {
    pub fn new(map: Map<String, Value>) -> Self {
        Self {
            map,
            known: BTreeSet::new(),
            errors: ValidationErrors::new(),
        }
    }

    /// The raw value of `name`; JSON `null` counts as absent.
    fn take(&mut self, name: &'static str) -> Option<Value> {
        self.known.insert(name);
        self.map.remove(name).filter(|v| !v.is_null())
    }

    /// The raw JSON value of `name` (marked known), for nested structures.
    pub fn value(&mut self, name: &'static str) -> Option<Value> {
        self.take(name)
    }

    pub fn string(&mut self, name: &'static str) -> Option<String> {
        match self.take(name)? {
            Value::String(s) => Some(s),
            _ => {
                self.errors.add(name, "must be a string");
                None
            }
        }
    }

    /// A JSON integer within i64. As JSON Schema's `integer`, a number with a zero fraction
    /// (`100.0`, `1e2`) is that integer; other fractions, strings and numbers past i64 (or,
    /// written as floats, past 2^53, where they stop being exact) are refused, so "100.5
    /// cents" or "1e30" never reaches the domain.
    pub fn int(&mut self, name: &'static str) -> Option<i64> {
        match self.take(name)? {
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Some(i),
                (None, _) if n.is_u64() => {
                    self.errors.add(name, "is too large");
                    None
                }
                (None, Some(f)) if f.fract() == 0.0 && f.abs() <= EXACT => Some(f as i64),
                (None, Some(f)) if f.fract() == 0.0 => {
                    self.errors.add(name, "is too large");
                    None
                }
                (None, _) => {
                    self.errors.add(name, "must be a whole number");
                    None
                }
            },
            _ => {
                self.errors.add(name, "must be an integer");
                None
            }
        }
    }

    pub fn time(&mut self, name: &'static str) -> Option<Timestamp> {
        let raw = self.take(name)?;
        match raw.as_str().and_then(stampede_domain::template::parse_time) {
            Some(t) => Some(t),
            None => {
                self.errors.add(
                    name,
                    "must be an RFC 3339 timestamp with offset, e.g. 2026-11-21T10:00:00Z",
                );
                None
            }
        }
    }

    /// A string naming one of `allowed`, parsed by `parse`.
    pub fn choice<T>(
        &mut self,
        name: &'static str,
        allowed: &[&str],
        parse: fn(&str) -> Option<T>,
    ) -> Option<T> {
        let raw = self.take(name)?;
        match raw.as_str().and_then(parse) {
            Some(v) => Some(v),
            None => {
                self.errors
                    .add(name, format!("must be one of: {}", allowed.join(", ")));
                None
            }
        }
    }

    /// An id given as a decimal string (ids are strings on the wire).
    pub fn id<T>(&mut self, name: &'static str, parse: fn(&str) -> Option<T>) -> Option<T> {
        let raw = self.take(name)?;
        match raw.as_str().and_then(parse) {
            Some(v) => Some(v),
            None => {
                self.errors
                    .add(name, "must be a positive integer id given as a string");
                None
            }
        }
    }

    pub fn id_list<T>(
        &mut self,
        name: &'static str,
        parse: fn(&str) -> Option<T>,
    ) -> Option<Vec<T>> {
        let raw = self.take(name)?;
        let Value::Array(items) = raw else {
            self.errors
                .add(name, "must be an array of ids given as strings");
            return None;
        };
        let parsed: Option<Vec<T>> = items.iter().map(|v| v.as_str().and_then(parse)).collect();
        if parsed.is_none() {
            self.errors.add(
                name,
                "must be an array of positive integer ids given as strings",
            );
        }
        parsed
    }

    /// Flags every field no reader asked for, then returns the gathered errors.
    pub fn finish(mut self) -> ValidationErrors {
        for key in self.map.keys() {
            if !self.known.contains(key.as_str()) {
                self.errors.add(key, "is not a known field");
            }
        }
        self.map.clear();
        self.errors
    }

    /// The names read so far (for tests that compare with the documented schema).
    pub fn known(&self) -> impl Iterator<Item = &&'static str> {
        self.known.iter()
    }
}

/// Floats are exact integers up to here (2^53).
const EXACT: f64 = 9_007_199_254_740_992.0;

/// Rewrites every number with a zero fraction (`100.0`, `1e2`) as that integer, for bodies
/// read by serde, so they follow JSON Schema's `integer` as `Fields::int` does. Other
/// fractions stay floats and the typed read refuses them.
pub fn integral_floats(v: &mut Value) {
    match v {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() <= EXACT
            {
                *v = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats),
        Value::Object(map) => map.values_mut().for_each(integral_floats),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::Fields;
    use serde_json::{Map, Value, json};

    fn int(v: Value) -> (Option<i64>, bool) {
        let mut m = Map::new();
        m.insert("n".into(), v);
        let mut f = Fields::new(m);
        let n = f.int("n");
        (n, f.finish().is_empty())
    }

    #[test]
    fn integers_are_json_schema_integers() {
        assert_eq!(int(json!(100)), (Some(100), true));
        assert_eq!(int(json!(-3)), (Some(-3), true));
        // A zero fraction is the integer, as JSON Schema's `integer` says.
        assert_eq!(int(json!(100.0)), (Some(100), true));
        assert_eq!(
            int(serde_json::from_str("1e2").unwrap_or_default()),
            (Some(100), true)
        );
        assert_eq!(
            int(json!(9_007_199_254_740_992.0)),
            (Some(9_007_199_254_740_992), true)
        );
        // Fractions, inexact floats, overflow and other types are refused.
        for v in [
            json!(10.5),
            json!(9_007_199_254_740_994.0),
            serde_json::from_str("1e30").unwrap_or_default(),
            serde_json::from_str("18446744073709551615").unwrap_or_default(),
            json!("5"),
            json!(true),
        ] {
            assert_eq!(int(v.clone()), (None, false), "{v}");
        }
    }
}
