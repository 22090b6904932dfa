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
/// records would be de-duplicated by the store and one would go unbilled); its payload then
/// holds every usage as sent under `usages`. A single usage's payload is the usage as sent,
/// resources included.
pub fn stage_usages(
    usages: &[serde_json::Value],
    org_id: &str,
) -> Result<Vec<StagedRecord>, String> {
    let mut by_name: BTreeMap<String, (Decimal, Vec<serde_json::Value>)> = BTreeMap::new();
    for (index, usage) in usages.iter().enumerate() {
        let (name, quantity) = read_usage(usage).map_err(|e| format!("usages[{index}] {e}"))?;
        let entry = by_name
            .entry(name)
            .or_insert_with(|| (Decimal::ZERO, Vec::new()));
        entry.0 = entry.0.checked_add(quantity).ok_or_else(|| {
            format!("usages[{index}]: the sum of totalUsage overflows a decimal number")
        })?;
        entry.1.push(usage.clone());
    }
    Ok(by_name
        .into_iter()
        .map(|(name, (quantity, mut sent))| {
            let payload = if sent.len() == 1 {
                sent.pop().unwrap_or_default()
            } else {
                serde_json::json!({
                    "name": name,
                    "totalUsage": quantity.to_string(),
                    "usages": sent,
                })
            };
            StagedRecord {
                record_key: name.clone(),
                customer_key: org_id.to_owned(),
                item: name,
                quantity,
                payload,
            }
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
    let quantity = Decimal::from_str(total.trim()).map_err(|e| {
        format!("({name:?}) field `totalUsage` {total:?} is not a decimal number: {e}")
    })?;
    if quantity.is_sign_negative() && !quantity.is_zero() {
        return Err(format!(
            "({name:?}) field `totalUsage` {total:?} is negative; usage cannot be"
        ));
    }
    Ok((name, quantity.normalize()))
}

fn preview(value: &serde_json::Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
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
    fn one_record_per_usage_name_with_the_usage_as_evidence() {
        let usage = json!({"name": "Genesys Cloud CX 3", "totalUsage": "5.500",
            "resources": [{"name": "a@x.example", "date": "2026-10-02T08:00:00.000Z"}]});
        let records = stage_usages(std::slice::from_ref(&usage), ORG).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].record_key, "Genesys Cloud CX 3");
        assert_eq!(records[0].customer_key, ORG);
        assert_eq!(records[0].item, "Genesys Cloud CX 3");
        assert_eq!(records[0].quantity, dec!(5.5));
        assert_eq!(records[0].payload, usage);
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
        assert_eq!(records[0].payload["usages"], json!([a, b]));
    }

    #[test]
    fn a_malformed_usage_names_its_index_and_field() {
        for (usage, expected) in [
            (json!({"totalUsage": "1"}), "`name`"),
            (json!({"name": "CX", "totalUsage": "abc"}), "`totalUsage`"),
            (json!({"name": "CX", "totalUsage": 5.5}), "`totalUsage`"),
            (json!({"name": "CX"}), "`totalUsage`"),
            (json!({"name": "CX", "totalUsage": "-1"}), "negative"),
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
