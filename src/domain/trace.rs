//! A line's calculation trace, held as compact canonical JSON text.
//!
//! Every line carries how its amount was calculated (tiers, minimum, rounding; a reversal's
//! reason). As a `serde_json::Value` tree a trace took about 4 KB per line, and a run holds a
//! line several times over (computed, planned, read back): most of a run's memory at 10,000
//! lines. As text it is a few hundred bytes, compared as text.
//!
//! The text is canonical (object keys sorted, no whitespace) whatever serde_json's features, so
//! that a trace computed now and the same trace read back from the store compare equal: the
//! store may keep keys in another order (Postgres' JSONB does).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::fmt;

/// A calculation trace: a JSON value, kept as its canonical text.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Trace(Box<str>);

impl Trace {
    /// The trace of a value, in canonical form.
    pub fn from_value(value: &Value) -> Trace {
        let mut text = String::new();
        write_canonical(value, &mut text);
        Trace(text.into_boxed_str())
    }

    /// A trace that says nothing: `{}`.
    pub fn empty() -> Trace {
        Trace("{}".into())
    }

    /// The trace as a JSON value, to read a field or to show it.
    pub fn to_value(&self) -> Value {
        // The text was written from a value, so it parses; `Null` keeps this total regardless.
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trace's top-level `reason`, when it has one (a reversal's).
    pub fn reason(&self) -> Option<String> {
        match self.to_value() {
            Value::Object(mut map) => match map.remove("reason") {
                Some(Value::String(reason)) => Some(reason),
                _ => None,
            },
            _ => None,
        }
    }
}

impl Default for Trace {
    fn default() -> Self {
        Trace::empty()
    }
}

impl From<Value> for Trace {
    fn from(value: Value) -> Self {
        Trace::from_value(&value)
    }
}

impl fmt::Debug for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Serialized as the JSON value it is (an object in `--format json`, in the store's JSON
/// column), not as a string of JSON.
impl Serialize for Trace {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Trace {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(|value| Trace::from_value(&value))
    }
}

/// Compact JSON with every object's keys in sorted order. Written by hand because serde_json
/// keeps insertion order when any crate in the build enables its `preserve_order` feature.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(inner) = map.get(key) {
                    write_canonical(inner, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_same_value_in_any_key_order_is_the_same_trace() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":"2.50","x":[1,{"d":null,"c":true}]}}"#)
                .unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a":{"x":[1,{"c":true,"d":null}],"y":"2.50"},"b":1}"#)
                .unwrap();
        assert_eq!(Trace::from_value(&a), Trace::from_value(&b));
        assert_eq!(
            Trace::from_value(&a).as_str(),
            r#"{"a":{"x":[1,{"c":true,"d":null}],"y":"2.50"},"b":1}"#
        );
        assert_ne!(Trace::from_value(&a), Trace::from_value(&json!({"b": 2})));
    }

    #[test]
    fn a_trace_round_trips_through_json_as_a_value() {
        let trace = Trace::from_value(&json!({"reason": "gone", "tiers": [{"units": "3"}]}));
        let text = serde_json::to_string(&trace).unwrap();
        assert_eq!(text, r#"{"reason":"gone","tiers":[{"units":"3"}]}"#);
        let back: Trace = serde_json::from_str(&text).unwrap();
        assert_eq!(back, trace);
        assert_eq!(back.reason().as_deref(), Some("gone"));
        assert_eq!(back.to_value()["tiers"][0]["units"], "3");
        assert_eq!(Trace::empty().reason(), None);
    }

    #[test]
    fn strings_are_escaped_in_keys_and_values() {
        let trace = Trace::from_value(&json!({"a\"b": "line\nbreak – ok"}));
        assert_eq!(trace.to_value()["a\"b"], "line\nbreak – ok");
    }
}
