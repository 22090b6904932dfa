//! The billable-usage report (`BillingUsageReport`, docs/connectors/genesys.md) and how it becomes staged
//! records: pure functions over values, no I/O.

use crate::domain::{Period, StagedRecord};
use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::str::FromStr;

/// The report's `status` while Genesys is still computing it.
pub const IN_PROGRESS: &str = "InProgress";
/// The report's `status` once its usages are final.
pub const COMPLETE: &str = "Complete";

/// The fields of a `BillingUsageReport` tally reads; `usages` stay raw JSON so that each is
/// kept as evidence exactly as Genesys sent it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BillingUsageReport {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub start_date: Option<String>,
    #[serde(default)]
    pub end_date: Option<String>,
    /// `InProgress` or `Complete`.
    pub status: String,
    #[serde(default)]
    pub usages: Vec<serde_json::Value>,
}

/// The range of the report that covers `period`: `[first instant of the month, first instant
/// of the next month)` in UTC, as Genesys bills by UTC month. Written `YYYY-MM-DDTHH:MM:SSZ`.
pub fn month_range(period: Period) -> (String, String) {
    let format = |at: DateTime<Utc>| at.to_rfc3339_opts(SecondsFormat::Secs, true);
    (
        format(period.start_utc(chrono_tz::UTC)),
        format(period.end_utc(chrono_tz::UTC)),
    )
}

/// Checks that a complete report covers the range asked for: a report of another range would
/// bill the wrong month. A missing date is not an error (the field is informative).
pub fn check_range(report: &BillingUsageReport, start: &str, end: &str) -> Result<(), String> {
    for (field, got, want) in [
        ("startDate", &report.start_date, start),
        ("endDate", &report.end_date, end),
    ] {
        let Some(got) = got else { continue };
        let same = match (
            DateTime::parse_from_rfc3339(got.trim()),
            DateTime::parse_from_rfc3339(want),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if !same {
            return Err(format!(
                "the report's {field} is {got:?}, but tally asked for {want}: refusing to bill \
                 a report of another range"
            ));
        }
    }
    Ok(())
}

/// The staged records of a complete report: one per usage name, keyed by the name, with
/// `customer_key` = `org_id` and the name as `item`.
///
/// A name listed twice is summed into one record (its `record_key` is the name, so two
/// records would be de-duplicated by the store and one would go unbilled).
pub fn stage_usages(
    usages: &[serde_json::Value],
    org_id: &str,
) -> Result<Vec<StagedRecord>, String> {
    let mut by_name: BTreeMap<String, Decimal> = BTreeMap::new();
    for (index, usage) in usages.iter().enumerate() {
        let (name, quantity) = read_usage(usage).map_err(|e| format!("usages[{index}] {e}"))?;
        let sum = by_name.entry(name).or_insert(Decimal::ZERO);
        *sum = sum.checked_add(quantity).ok_or_else(|| {
            format!("usages[{index}]: the sum of totalUsage overflows a decimal number")
        })?;
    }
    Ok(by_name
        .into_iter()
        .map(|(name, quantity)| StagedRecord {
            record_key: name.clone(),
            customer_key: org_id.to_owned(),
            item: name,
            quantity,
        })
        .collect())
}

/// A usage's name and `totalUsage` (a decimal in a string, kept fractional: `"5.500"` is 5.5).
fn read_usage(usage: &serde_json::Value) -> Result<(String, Decimal), String> {
    let object = usage
        .as_object()
        .ok_or_else(|| format!("is not a JSON object: {}", preview(usage)))?;
    let name = match object.get("name") {
        Some(serde_json::Value::String(name)) if !name.trim().is_empty() => name.clone(),
        Some(serde_json::Value::String(_)) => return Err("has an empty `name`".to_owned()),
        Some(other) => return Err(format!("field `name` is not a string: {}", preview(other))),
        None => return Err("has no field `name`".to_owned()),
    };
    let total = match object.get("totalUsage") {
        Some(serde_json::Value::String(total)) => total,
        Some(other) => {
            return Err(format!(
                "({name:?}) field `totalUsage` is not a string holding a decimal number: {}",
                preview(other)
            ));
        }
        None => return Err(format!("({name:?}) has no field `totalUsage`")),
    };
    let quantity =
        parse_total(total).map_err(|e| format!("({name:?}) field `totalUsage` {total:?} {e}"))?;
    if quantity.is_sign_negative() && !quantity.is_zero() {
        return Err(format!(
            "({name:?}) field `totalUsage` {total:?} is negative; usage cannot be"
        ));
    }
    Ok((name, quantity.normalize()))
}

/// A `totalUsage` as Genesys documents it: "a decimal number in string format", written out
/// (`"5.500"`, `"12"`), as the pricing table's numbers are. Refused, with why:
///
/// - exponent notation (`"1e3"`, `"1.5E+3"`): valid JSON and accepted by `Decimal::from_str`,
///   but not what Genesys writes; a usage in that form has passed through a floating-point
///   number somewhere upstream, which may already have dropped digits, so it is not billed as
///   if it were exact;
/// - `_` separators, spaces inside, a comma, or anything else that is not digits with at most
///   one point and an optional sign;
/// - a value that a decimal cannot hold exactly (above 79,228,162,514,264,337,593,543,950,335,
///   or more digits than fit, which `Decimal::from_str` would round silently).
fn parse_total(text: &str) -> Result<Decimal, String> {
    let trimmed = text.trim();
    let digits = trimmed.strip_prefix(['-', '+']).unwrap_or(trimmed);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let plain = !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit());
    if !plain {
        return Err(
            if digits.contains(['e', 'E']) && digits.bytes().any(|b| b.is_ascii_digit()) {
                "is in exponent notation; Genesys writes totalUsage as a plain decimal (e.g. \
                 \"5.500\"), and a number in exponent form has passed through a floating-point \
                 number that may have dropped digits, so tally does not bill from it: check the \
                 org's billable usage in Genesys Cloud and ask Genesys support why the report \
                 says so"
                    .to_owned()
            } else {
                "is not a decimal number (digits with at most one point, e.g. \"5.500\")".to_owned()
            },
        );
    }
    let too_large = || {
        format!(
            "is larger or more precise than tally can hold exactly (at most {} with up to 28 \
             decimals in all): the report cannot be billed as sent; check the org's billable \
             usage in Genesys Cloud",
            Decimal::MAX
        )
    };
    let value = Decimal::from_str(trimmed).map_err(|_| too_large())?;
    // `from_str` rounds what does not fit into 96 bits instead of failing: a rounded quantity
    // would be billed as if Genesys had sent it.
    if value.scale() as usize != fraction.len() {
        return Err(too_large());
    }
    Ok(value)
}

fn preview(value: &serde_json::Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

/// A report answer read as the connector reads it: decoded; if complete, checked against the
/// range asked for and staged for `org_id`. The report parser as a pure function of its bytes,
/// for the fuzz harness.
pub fn parse_report(
    body: &[u8],
    org_id: &str,
    (start, end): (&str, &str),
) -> Result<Vec<StagedRecord>, String> {
    let report: BillingUsageReport = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if report.status != COMPLETE {
        return Err(format!("the report's status is {:?}", report.status));
    }
    check_range(&report, start, end)?;
    stage_usages(&report.usages, org_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;
    use serde_json::json;

    const ORG: &str = "4c7a4b6e-9f0a-4a8e-8d53-2f6c1b0f9e11";

    #[test]
    fn a_month_is_the_half_open_range_of_its_first_instants() {
        let (start, end) = month_range("2026-10".parse().unwrap());
        assert_eq!(start, "2026-10-01T00:00:00Z");
        assert_eq!(end, "2026-11-01T00:00:00Z");
        let (start, end) = month_range("2026-12".parse().unwrap());
        assert_eq!(start, "2026-12-01T00:00:00Z");
        assert_eq!(end, "2027-01-01T00:00:00Z");
    }

    #[test]
    fn one_record_per_usage_name() {
        let usage = json!({"name": "Genesys Cloud CX 3", "totalUsage": "5.500",
            "resources": [{"name": "a@x.example", "date": "2026-10-02T08:00:00.000Z"}]});
        let records = stage_usages(std::slice::from_ref(&usage), ORG).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].record_key, "Genesys Cloud CX 3");
        assert_eq!(records[0].customer_key, ORG);
        assert_eq!(records[0].item, "Genesys Cloud CX 3");
        assert_eq!(records[0].quantity, dec!(5.5));
    }

    #[test]
    fn a_name_listed_twice_is_summed_into_one_record() {
        let a = json!({"name": "CX 1", "totalUsage": "2", "resources": []});
        let b = json!({"name": "CX 1", "totalUsage": "0.25", "resources": []});
        let c = json!({"name": "CX 2", "totalUsage": "1", "resources": []});
        let records = stage_usages(&[a.clone(), c, b.clone()], ORG).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].item, "CX 1");
        assert_eq!(records[0].quantity, dec!(2.25));
        assert_eq!(records[1].item, "CX 2");
    }

    #[test]
    fn a_malformed_usage_names_its_index_and_field() {
        for (usage, expected) in [
            (json!({"totalUsage": "1"}), "`name`"),
            (json!({"name": "CX", "totalUsage": "abc"}), "`totalUsage`"),
            (json!({"name": "CX", "totalUsage": 5.5}), "`totalUsage`"),
            (json!({"name": "CX"}), "`totalUsage`"),
            (json!({"name": "CX", "totalUsage": "-1"}), "negative"),
            (json!({"name": "CX", "totalUsage": "1e3"}), "exponent"),
            (
                json!({"name": "CX", "totalUsage": "1_000"}),
                "not a decimal",
            ),
            (json!({"name": "CX", "totalUsage": "1,5"}), "not a decimal"),
            (json!({"name": "CX", "totalUsage": ".5"}), "not a decimal"),
            (json!("CX"), "object"),
        ] {
            let error = stage_usages(
                &[json!({"name": "ok", "totalUsage": "1"}), usage.clone()],
                ORG,
            )
            .unwrap_err();
            assert!(error.starts_with("usages[1]"), "{usage}: {error}");
            assert!(error.contains(expected), "{usage}: {error}");
        }
    }

    #[test]
    fn exponent_notation_is_refused_as_the_pricing_table_refuses_it() {
        for total in ["1e3", "1E3", "1.5e+3", "5E-1", "1e20", "1e29"] {
            let usage = json!({"name": "CX", "totalUsage": total});
            let error = stage_usages(&[usage], ORG).unwrap_err();
            assert!(error.contains("exponent notation"), "{total}: {error}");
            assert!(error.contains(&format!("{total:?}")), "{total}: {error}");
        }
    }

    #[test]
    fn huge_totals_are_a_value_when_they_fit_and_an_error_when_they_do_not() {
        let fits = stage_usages(
            &[json!({"name": "CX", "totalUsage": "100000000000000000000"})],
            ORG,
        )
        .unwrap();
        assert_eq!(fits[0].quantity, dec!(100000000000000000000));
        let max = Decimal::MAX.to_string();
        let at_max = stage_usages(&[json!({"name": "CX", "totalUsage": max})], ORG).unwrap();
        assert_eq!(at_max[0].quantity, Decimal::MAX);
        for total in [
            "79228162514264337593543950336",
            "99999999999999999999999999999999999999",
            "12345678901234567890123456789.1",
            "0.00000000000000000000000000001",
        ] {
            let usage = json!({"name": "CX", "totalUsage": total});
            let error = stage_usages(&[usage], ORG).unwrap_err();
            assert!(
                error.contains("than tally can hold exactly"),
                "{total}: {error}"
            );
        }
        // Two usages of one name that fit alone but not together.
        let half = json!({"name": "CX", "totalUsage": "50000000000000000000000000000"});
        let error = stage_usages(&[half.clone(), half], ORG).unwrap_err();
        assert!(error.contains("overflows"), "{error}");
    }

    #[test]
    fn a_report_of_another_range_is_refused() {
        let report = |start: &str, end: &str| BillingUsageReport {
            id: None,
            start_date: Some(start.into()),
            end_date: Some(end.into()),
            status: COMPLETE.into(),
            usages: vec![],
        };
        let (start, end) = month_range("2026-10".parse().unwrap());
        assert!(
            check_range(
                &report("2026-10-01T00:00:00.000Z", "2026-11-01T00:00:00.000Z"),
                &start,
                &end
            )
            .is_ok()
        );
        let error = check_range(
            &report("2026-09-01T00:00:00.000Z", "2026-10-01T00:00:00.000Z"),
            &start,
            &end,
        )
        .unwrap_err();
        assert!(error.contains("startDate"), "{error}");
    }
}
