//! The JSON form of a page of billable users, read straight into the two fields a staged
//! record needs: the person's `id` and `organization` (no I/O).
//!
//! Why a hand-written visitor rather than `serde_json::Value` or a derived struct: a `Value`
//! builds a map of every field of every person only to read two of them, which was half of
//! a million-user run's CPU (allocating and freeing those maps); a derived struct would also
//! accept a JSON array as a person (derived structs take sequences) and refuse a person
//! whose field is repeated, where the documented reading is "an object; the last of a
//! repeated field counts". This visitor reads only objects, skips other fields without
//! building them, and keeps the rules and messages of the `Value` reading it replaced.

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::fmt;

/// One element of the page's array: the person's `(id, organization)`, or what is wrong with
/// it, said as "the record at index N …" continues. A wrong element does not fail the
/// array's parse, so the message can name the element instead of a byte offset.
#[derive(Debug, PartialEq)]
pub struct Person(pub Result<(u64, String), String>);

impl<'de> Deserialize<'de> for Person {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PersonVisitor)
    }
}

struct PersonVisitor;

impl<'de> Visitor<'de> for PersonVisitor {
    type Value = Person;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a person (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Person, A::Error> {
        let (mut id, mut organization) = (None, None);
        while let Some(field) = map.next_key::<Field>()? {
            // A repeated field overwrites: the last one counts, as in a JSON object read whole.
            match field {
                Field::Id => id = Some(map.next_value::<Value>()?),
                Field::Organization => organization = Some(map.next_value::<Value>()?),
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Person(check(id, organization)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Person, A::Error> {
        let value = Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        Ok(not_an_object(&value))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Person, E> {
        Ok(not_an_object(&Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Person, E> {
        Ok(not_an_object(&Value::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Person, E> {
        Ok(not_an_object(&Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Person, E> {
        Ok(not_an_object(&Value::from(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Person, E> {
        Ok(not_an_object(&Value::from(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Person, E> {
        Ok(not_an_object(&Value::Null))
    }
}

/// The fields a person is read for; every other is skipped unread.
enum Field {
    Id,
    Organization,
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Field, E> {
                Ok(match name {
                    "id" => Field::Id,
                    "organization" => Field::Organization,
                    _ => Field::Other,
                })
            }
        }
        deserializer.deserialize_identifier(FieldVisitor)
    }
}

/// `id` a non-negative integer, `organization` a string with something in it, in that order.
fn check(id: Option<Value>, organization: Option<Value>) -> Result<(u64, String), String> {
    let id = match id {
        Some(value) => value
            .as_u64()
            .ok_or_else(|| format!("field `id` is not a non-negative integer: {value}"))?,
        None => return Err("has no field `id`".to_owned()),
    };
    match organization {
        Some(Value::String(org)) if !org.trim().is_empty() => Ok((id, org)),
        Some(Value::String(_)) => Err(format!("(id {id}) has an empty field `organization`")),
        Some(value) => Err(format!(
            "(id {id}) field `organization` is not a string: {value}"
        )),
        None => Err(format!("(id {id}) has no field `organization`")),
    }
}

fn not_an_object(value: &Value) -> Person {
    let text = value.to_string();
    let shown = match text.char_indices().nth(80) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    };
    Person(Err(format!("is not a JSON object: {shown}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<(u64, String), String> {
        serde_json::from_str::<Person>(json).unwrap().0
    }

    #[test]
    fn a_person_is_read_for_its_id_and_organization_only() {
        let person = r#"{"id": 552, "name": {"first": "Abbie", "tags": [1, null]},
            "organization": "Micro\u0073oft \"Corp\""}"#;
        assert_eq!(read(person), Ok((552, "Microsoft \"Corp\"".to_owned())));
    }

    #[test]
    fn the_last_of_a_repeated_field_counts() {
        let person = r#"{"id": "x", "organization": "A", "id": 7, "organization": "B"}"#;
        assert_eq!(read(person), Ok((7, "B".to_owned())));
    }

    #[test]
    fn each_wrong_person_is_said_as_the_whole_value_reading_said_it() {
        for (json, expected) in [
            (r#"{"organization": "A"}"#, "has no field `id`"),
            (
                r#"{"id": "552", "organization": "A"}"#,
                r#"field `id` is not a non-negative integer: "552""#,
            ),
            (
                r#"{"id": 1.5, "organization": "A"}"#,
                "field `id` is not a non-negative integer: 1.5",
            ),
            (
                r#"{"id": -3, "organization": "A"}"#,
                "field `id` is not a non-negative integer: -3",
            ),
            (r#"{"id": 552}"#, "(id 552) has no field `organization`"),
            (
                r#"{"id": 552, "organization": " "}"#,
                "(id 552) has an empty field `organization`",
            ),
            (
                r#"{"id": 552, "organization": null}"#,
                "(id 552) field `organization` is not a string: null",
            ),
            ("[552, \"A\"]", r#"is not a JSON object: [552,"A"]"#),
            ("\"Acme\"", r#"is not a JSON object: "Acme""#),
            ("null", "is not a JSON object: null"),
            ("true", "is not a JSON object: true"),
        ] {
            assert_eq!(read(json), Err(expected.to_owned()), "{json}");
        }
    }

    #[test]
    fn a_long_wrong_value_is_shown_shortened() {
        let long = format!("[\"{}\"]", "x".repeat(200));
        let error = read(&long).unwrap_err();
        assert!(error.ends_with('…'), "{error}");
        assert!(error.chars().count() < 110, "{error}");
    }

    #[test]
    fn broken_json_fails_the_page_not_the_person() {
        assert!(serde_json::from_str::<Vec<Person>>(r#"[{"id": 1, "organization": "A"}"#).is_err());
        assert!(serde_json::from_str::<Vec<Person>>(r#"{"id": 1}"#).is_err());
    }
}
