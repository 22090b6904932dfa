//! How a staged page's records are written into one column, and its fingerprint.
//!
//! A page is staged as one row (see the `staged_pages` migration): its records as a JSON array
//! of `[record_key, customer_key, item, quantity]`, the quantity as a decimal string so that it
//! comes back exactly as it was read (scale kept), in the order the peer listed them. JSON
//! because both stores keep it as plain text an operator can read with `psql` or `sqlite3`; the
//! four fields are all totals and evidence need, the payload is not kept.
//!
//! The fingerprint is the SHA-256 of that text: the same records in the same order give the same
//! fingerprint, whichever run read them, which is how a re-run knows a page is already staged.

use crate::domain::{Sha256Writer, StagedQuantity, StagedRecord};
use anyhow::Context;
use rust_decimal::Decimal;
use serde::{Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// One page's records, encoded, with their fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageBody {
    pub body: String,
    pub fingerprint: String,
}

impl PageBody {
    pub fn of(records: &[StagedRecord]) -> PageBody {
        // Serializing strings cannot fail; an empty array is the honest fallback.
        let body = serde_json::to_string(&Rows(records)).unwrap_or_else(|_| "[]".to_owned());
        let fingerprint = fingerprint(&body);
        PageBody { body, fingerprint }
    }

    /// The fingerprint [`PageBody::of`] gives these records, without the text: a re-run
    /// compares every page it reads with what is staged, and keeps what it reads only where
    /// they differ.
    pub fn fingerprint_of(records: &[StagedRecord]) -> String {
        let mut hasher = Sha256Writer::default();
        if serde_json::to_writer(&mut hasher, &Rows(records)).is_err() {
            // As `of` falls back: serializing strings cannot fail.
            return fingerprint("[]");
        }
        hex::encode(hasher.finish())
    }
}

/// A page's records as the JSON array of rows they are staged as, written straight from the
/// records: every page a run stages or re-reads is encoded, and a row of copies with a string
/// per quantity cost an allocation per record.
struct Rows<'a>(&'a [StagedRecord]);

impl Serialize for Rows<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|r| {
            (
                r.record_key.as_str(),
                r.customer_key.as_str(),
                r.item.as_str(),
                Quantity(r.quantity),
            )
        }))
    }
}

/// A quantity as `Decimal`'s `Display` writes it, serialized as a string, with a shortcut for
/// the whole numbers (scale 0, a person's 1) that most records carry: their digits are the
/// mantissa's, written by the integer formatter instead of the decimal one (a tenth of a
/// million-record run's staging).
struct Quantity(Decimal);

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.scale() == 0 {
            fmt::Display::fmt(&self.0.mantissa(), f)
        } else {
            fmt::Display::fmt(&self.0, f)
        }
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// SHA-256 (hex) of a page's encoded records.
pub fn fingerprint(body: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(body.as_bytes()))
}

/// The records of a staged page, as [`PageBody::of`] wrote them. `what` names the page for the
/// error, should the text not be what tally writes (edited by hand, or damaged).
pub fn decode(body: &str, what: &dyn Fn() -> String) -> anyhow::Result<Vec<StagedQuantity>> {
    let rows: Vec<(String, String, String, String)> = serde_json::from_str(body)
        .with_context(|| format!("{}: the staged records are not tally's JSON", what()))?;
    rows.into_iter()
        .map(|(record_key, customer_key, item, quantity)| {
            let quantity = Decimal::from_str(&quantity).with_context(|| {
                format!(
                    "{}: record {record_key:?} has the quantity {quantity:?}, not a decimal",
                    what()
                )
            })?;
            Ok(StagedQuantity {
                record_key,
                customer_key,
                item,
                quantity,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, quantity: &str) -> StagedRecord {
        StagedRecord {
            record_key: key.into(),
            customer_key: "Acme \"East\"".into(),
            item: "billable_user".into(),
            quantity: Decimal::from_str(quantity).unwrap(),
        }
    }

    #[test]
    fn records_come_back_exactly_with_scale_and_order() {
        let page = PageBody::of(&[record("b@x", "1.50"), record("a@x", "2")]);
        let back = decode(&page.body, &|| "page 1".into()).unwrap();
        let keys: Vec<_> = back.iter().map(|r| r.record_key.as_str()).collect();
        assert_eq!(keys, ["b@x", "a@x"]);
        assert_eq!(back[0].quantity.to_string(), "1.50");
        assert_eq!(back[0].customer_key, "Acme \"East\"");
    }

    #[test]
    fn a_page_is_written_as_earlier_versions_wrote_it() {
        // The staged text (and so the fingerprint a re-run compares) of pages staged before:
        // a change here would make every re-run stage its month again once.
        let page = PageBody::of(&[record("b@x", "1.50"), record("a@x", "2")]);
        assert_eq!(
            page.body,
            r#"[["b@x","Acme \"East\"","billable_user","1.50"],["a@x","Acme \"East\"","billable_user","2"]]"#
        );
        assert_eq!(PageBody::of(&[]).body, "[]");
        for records in [&[][..], &[record("b@x", "1.50"), record("a@x", "2")][..]] {
            assert_eq!(
                PageBody::fingerprint_of(records),
                PageBody::of(records).fingerprint
            );
        }
    }

    #[test]
    fn a_fingerprint_changes_with_any_field_and_with_order() {
        let base = PageBody::of(&[record("a", "1"), record("b", "1")]).fingerprint;
        assert_eq!(
            base,
            PageBody::of(&[record("a", "1"), record("b", "1")]).fingerprint
        );
        assert_ne!(
            base,
            PageBody::of(&[record("a", "1"), record("b", "2")]).fingerprint
        );
        assert_ne!(
            base,
            PageBody::of(&[record("b", "1"), record("a", "1")]).fingerprint
        );
    }

    #[test]
    fn a_quantity_is_written_as_decimal_writes_it() {
        for text in [
            "1",
            "0",
            "-7",
            "1.0",
            "1.50",
            "0.001",
            "79228162514264337593543950335",
            "-12.3400",
        ] {
            let quantity = Decimal::from_str(text).unwrap();
            assert_eq!(
                Quantity(quantity).to_string(),
                quantity.to_string(),
                "{text}"
            );
            assert_eq!(Quantity(quantity).to_string(), text);
        }
    }

    #[test]
    fn damaged_text_names_the_page() {
        let error = decode("[[\"a\",\"c\",\"i\",\"x\"]]", &|| "page 7 of acct".into())
            .unwrap_err()
            .to_string();
        assert!(error.contains("page 7 of acct"), "{error}");
        assert!(decode("{", &|| "page 2".into()).is_err());
    }
}
