//! How a line explains its amount: the calculation trace, read back into named fields and one
//! sentence, for the accountants' page and the exports.
//!
//! Accountants check `quantity × rate = amount`; on many lines it is not so (a minimum, a flat
//! fee, included units, packages, an averaged rate, an adjustment's difference). The trace the
//! engine writes (src/pricing/engine.rs) holds every step; this module reads it — pure, no I/O —
//! and says in `why` what makes the product differ, exactly when it differs. Traces written by
//! older versions stay readable: a field they lack becomes `None` (or the line's own figure).

use crate::domain::LedgerLine;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use std::str::FromStr;

/// One tier's (or the single price row's) part of the line's raw amount.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierUse {
    pub from: Decimal,
    /// `None`: unbounded.
    pub to: Option<Decimal>,
    /// Units priced in this tier (packages, for `package`).
    pub units: Decimal,
    /// The tier's unit price (a package's price, for `package`).
    pub rate: Decimal,
    /// `units × rate + flat_fee`, unrounded.
    pub amount: Decimal,
    /// The tier's flat fee, when it was charged.
    pub flat_fee: Option<Decimal>,
}

/// Everything an accountant needs to recompute a line's amount by hand.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// `graduated`, `volume`, `package`, `flat`, `per_unit`; empty for a reversal, whose trace
    /// names no price.
    pub model: String,
    pub price_id: String,
    /// The version's `effective_from` (`2026-01-01`), or `open`.
    pub price_version: String,
    pub tiers: Vec<TierUse>,
    pub included_quantity: Decimal,
    /// The quantity the tiers saw: `max(q − included, 0)`.
    pub billable_quantity: Option<Decimal>,
    /// Units per package (`package` only).
    pub package_size: Option<Decimal>,
    /// The `min_charge`, when it raised the amount.
    pub minimum_applied: Option<Decimal>,
    /// The sum of the flat fees charged, when any was.
    pub flat_fee_applied: Option<Decimal>,
    /// The line's amount before the minimum and before rounding.
    pub raw_amount: Decimal,
    /// The line's amount as priced (for an adjustment: the line after it, not the difference).
    pub rounded_amount: Decimal,
    /// `half_up` or `half_even`; empty when the trace does not say.
    pub rounding: String,
    /// For an adjustment or a reversal: the line's amount before this revision.
    pub previous_amount: Option<Decimal>,
    /// For an adjustment or a reversal: why this revision exists.
    pub reason: Option<String>,
    /// One sentence, present exactly when `quantity × rate ≠ amount` on this revision.
    pub why: Option<String>,
}

/// Reads `line`'s trace into an [`Explanation`].
pub fn explain(line: &LedgerLine) -> Explanation {
    let trace = line.trace.to_value();
    let price_ref = text(&trace, "price_ref").unwrap_or_else(|| line.price_ref.clone());
    let (price_id, price_version) = match price_ref.rsplit_once('@') {
        Some((id, version)) => (id.to_owned(), version.to_owned()),
        None => (price_ref.clone(), String::new()),
    };
    let tiers: Vec<TierUse> = trace
        .get("tiers")
        .and_then(Value::as_array)
        .map(|tiers| tiers.iter().filter_map(tier_use).collect())
        .unwrap_or_default();
    let fees: Vec<Decimal> = tiers.iter().filter_map(|t| t.flat_fee).collect();
    let flat_fee_applied = if fees.is_empty() {
        None
    } else {
        crate::domain::checked_sum(fees)
    };
    let rounded_amount = number(&trace, "rounded_amount").unwrap_or(line.total_amount);
    let adjusted = line.is_adjustment();
    let previous_amount = if adjusted {
        line.total_amount.checked_sub(line.amount)
    } else {
        None
    };
    let previous_quantity = if adjusted {
        line.total_quantity.checked_sub(line.quantity)
    } else {
        None
    };
    let trace_reason = text(&trace, "reason");
    let reason = match (adjusted, trace_reason) {
        (_, Some(reason)) => Some(reason),
        (true, None) => Some(match previous_quantity {
            Some(before) if before != line.total_quantity => format!(
                "a re-run found quantity {} instead of the {} already sent",
                line.total_quantity, before
            ),
            _ => format!(
                "a re-run priced the same quantity {} at another amount",
                line.total_quantity
            ),
        }),
        (false, None) => None,
    };
    let mut explanation = Explanation {
        model: text(&trace, "model").unwrap_or_default(),
        price_id,
        price_version,
        tiers,
        included_quantity: number(&trace, "included").unwrap_or(Decimal::ZERO),
        billable_quantity: number(&trace, "billable_quantity"),
        package_size: number(&trace, "package_size"),
        minimum_applied: number(&trace, "minimum_applied"),
        flat_fee_applied,
        raw_amount: number(&trace, "raw_amount").unwrap_or(rounded_amount),
        rounded_amount,
        rounding: text(&trace, "rounding").unwrap_or_default(),
        previous_amount,
        reason,
        why: None,
    };
    let product_matches = line
        .quantity
        .checked_mul(line.rate)
        .is_some_and(|p| p == line.amount);
    if !product_matches {
        explanation.why = Some(why(line, &explanation, previous_quantity));
    }
    explanation
}

/// The sentence saying why `quantity × rate` is not the amount; the first cause that applies,
/// from the revision down to the price's rules.
fn why(line: &LedgerLine, e: &Explanation, previous_quantity: Option<Decimal>) -> String {
    if line.is_adjustment() {
        let before = previous_quantity.unwrap_or(Decimal::ZERO);
        let previous = e.previous_amount.unwrap_or(Decimal::ZERO);
        if e.model.is_empty() {
            return format!(
                "reversal: quantity {before} → {}, amount {previous} → {} credited in full",
                line.total_quantity, line.total_amount
            );
        }
        return format!(
            "adjustment: quantity {before} → {}, amount {previous} → {}; this revision carries the difference",
            line.total_quantity, line.total_amount
        );
    }
    let mut causes = Vec::new();
    if let Some(minimum) = e.minimum_applied {
        causes.push(format!(
            "minimum charge of {minimum} applied (raw amount {})",
            e.raw_amount
        ));
    }
    if e.model == "flat" {
        if let Some(fee) = e.flat_fee_applied {
            causes.push(format!("flat fee {fee}, whatever the quantity"));
        }
    } else if let Some(fee) = e.flat_fee_applied {
        causes.push(format!("flat fee {fee} included"));
    }
    if !e.included_quantity.is_zero() {
        causes.push(format!(
            "{} units included free, {} billed",
            e.included_quantity,
            e.billable_quantity.unwrap_or(Decimal::ZERO)
        ));
    }
    if e.model == "package" {
        let packages = e.tiers.first().map(|t| t.units).unwrap_or(Decimal::ZERO);
        let size = e.package_size.unwrap_or(Decimal::ONE);
        causes.push(format!("billed in packages of {size}: {packages} packages"));
    }
    if causes.is_empty() {
        if e.model == "graduated" {
            causes.push(format!(
                "tiers priced separately; the rate is their average {} ÷ {}, rounded to 4 decimals",
                e.rounded_amount, line.quantity
            ));
        } else if e.raw_amount != e.rounded_amount {
            causes.push(format!(
                "raw amount {} rounded {} to {}",
                e.raw_amount,
                if e.rounding.is_empty() {
                    "to the currency's minor units"
                } else {
                    e.rounding.as_str()
                },
                e.rounded_amount
            ));
        } else {
            causes.push(format!(
                "the amount {} comes from the calculation trace, not from the rate",
                line.amount
            ));
        }
    }
    let mut sentence = causes.join("; ");
    if (e.model == "package" || e.model == "graduated") && !sentence.contains("average") {
        sentence.push_str("; the rate shown is the average amount per unit");
    }
    sentence
}

fn tier_use(tier: &Value) -> Option<TierUse> {
    Some(TierUse {
        from: number(tier, "from").unwrap_or(Decimal::ZERO),
        to: number(tier, "to"),
        units: number(tier, "units")?,
        rate: number(tier, "unit_price").unwrap_or(Decimal::ZERO),
        amount: number(tier, "amount")?,
        flat_fee: number(tier, "flat_fee"),
    })
}

fn text(value: &Value, key: &str) -> Option<String> {
    match value.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// A decimal written as a string (the trace's form) or, in a hand-made trace, as a JSON number.
fn number(value: &Value, key: &str) -> Option<Decimal> {
    match value.get(key)? {
        Value::String(s) => Decimal::from_str(s).ok(),
        Value::Number(n) => Decimal::from_str(&n.to_string()).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        BillingAccount, Currency, Evidence, LedgerLine, LicenseType, LineKey, LineStatus,
        RoundingMode, SourceName, Trace,
    };
    use crate::pricing::PricingTable;
    use chrono::Utc;
    use rust_decimal_macros::dec;

    const HEADER: &str = "price_id,license_type,customer,currency,model,tier_from,tier_to,unit_price,flat_fee,package_size,included_quantity,min_charge,effective_from,effective_to";

    /// Revision 1 of the line `rows` price for `q` units of `agent` (docs/PRICING.md's
    /// worked examples), as the ledger keeps it.
    fn line(rows: &str, q: Decimal) -> LedgerLine {
        let csv = format!("{HEADER}\n{rows}");
        let table = PricingTable::from_reader("pricing.csv", csv.as_bytes()).unwrap();
        let eur: Currency = "EUR".parse().unwrap();
        let priced = table
            .price(
                &LicenseType::new("agent"),
                &BillingAccount::new("acme"),
                eur,
                "2026-10".parse().unwrap(),
                q,
                RoundingMode::HalfUp,
            )
            .unwrap();
        let key = LineKey {
            period: "2026-10".parse().unwrap(),
            billing_account: BillingAccount::new("acme"),
            license_type: LicenseType::new("agent"),
            source: SourceName::new("billable_users"),
        };
        LedgerLine {
            id: 1,
            idempotency_key: key.idempotency_key(1),
            key,
            revision: 1,
            quantity: q,
            amount: priced.amount,
            rate: priced.rate,
            currency: eur,
            total_quantity: q,
            total_amount: priced.amount,
            price_ref: priced.price_ref.clone(),
            trace: Trace::from_value(&serde_json::to_value(&priced.trace).unwrap()),
            evidence: Evidence::default(),
            sink: "rambase".into(),
            status: LineStatus::Draft,
            external_id: None,
            push_marker: None,
            last_error: None,
            approval: None,
            run_id: 1,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            pushed_at: None,
        }
    }

    const GRADUATED: &str = "SD-LIST,agent,,EUR,graduated,1,10,12.50,,,,,2026-01-01,\n\
                             SD-LIST,agent,,EUR,graduated,11,50,10.00,,,,,2026-01-01,\n\
                             SD-LIST,agent,,EUR,graduated,51,,8.00,,,,,2026-01-01,\n";

    #[test]
    fn graduated_25_users_name_their_tiers_and_need_no_why() {
        let e = explain(&line(GRADUATED, dec!(25)));
        assert_eq!(e.model, "graduated");
        assert_eq!(
            (e.price_id.as_str(), e.price_version.as_str()),
            ("SD-LIST", "2026-01-01")
        );
        let tiers: Vec<_> = e
            .tiers
            .iter()
            .map(|t| (t.from, t.to, t.units, t.rate, t.amount))
            .collect();
        assert_eq!(
            tiers,
            vec![
                (dec!(1), Some(dec!(10)), dec!(10), dec!(12.50), dec!(125.00)),
                (
                    dec!(11),
                    Some(dec!(50)),
                    dec!(15),
                    dec!(10.00),
                    dec!(150.00)
                ),
            ]
        );
        assert_eq!(e.raw_amount, dec!(275.00));
        assert_eq!(e.rounded_amount, dec!(275.00));
        assert_eq!(e.rounding, "half_up");
        assert_eq!(e.minimum_applied, None);
        assert_eq!(e.flat_fee_applied, None);
        // 25 × 11.0000 = 275.00: nothing to explain.
        assert_eq!(e.why, None);
        assert_eq!((e.previous_amount, e.reason), (None, None));
    }

    #[test]
    fn graduated_flat_fees_are_summed_and_explained() {
        let rows = "g,agent,,EUR,graduated,1,10,10.00,5.00,,,,,\n\
                    g,agent,,EUR,graduated,11,50,8.00,3.00,,,,,\n\
                    g,agent,,EUR,graduated,51,,6.00,1.00,,,,,\n";
        let l = line(rows, dec!(15));
        assert_eq!((l.amount, l.rate), (dec!(148.00), dec!(9.8667)));
        let e = explain(&l);
        assert_eq!(e.price_version, "open");
        assert_eq!(e.flat_fee_applied, Some(dec!(8.00)));
        assert_eq!(e.tiers[0].flat_fee, Some(dec!(5.00)));
        let why = e.why.unwrap();
        assert!(why.contains("flat fee 8.00 included"), "{why}");
    }

    #[test]
    fn volume_with_a_tier_fee_says_the_fee() {
        let rows = "v,agent,,EUR,volume,0,10,10.00,,,,,,\n\
                    v,agent,,EUR,volume,11,50,8.00,20.00,,,,,\n\
                    v,agent,,EUR,volume,51,,6.00,,,,,,\n";
        let l = line(rows, dec!(15));
        assert_eq!((l.amount, l.rate), (dec!(140.00), dec!(8.00)));
        let e = explain(&l);
        assert_eq!(e.model, "volume");
        assert_eq!(e.tiers.len(), 1);
        assert_eq!(e.tiers[0].units, dec!(15));
        assert_eq!(e.why.as_deref(), Some("flat fee 20.00 included"));
        // 10 units × 10.00 = 100.00: no why.
        assert_eq!(explain(&line(rows, dec!(10))).why, None);
    }

    #[test]
    fn a_minimum_charge_is_the_why_only_when_it_applied() {
        let rows = "SD-UMBRELLA,agent,,EUR,per_unit,,,12.50,,,,100.00,2026-01-01,\n";
        let e = explain(&line(rows, dec!(6)));
        assert_eq!(e.minimum_applied, Some(dec!(100.00)));
        assert_eq!(e.raw_amount, dec!(75.00));
        assert_eq!(
            e.why.as_deref(),
            Some("minimum charge of 100.00 applied (raw amount 75.00)")
        );
        let above = explain(&line(rows, dec!(9)));
        assert_eq!((above.minimum_applied, above.why), (None, None));
    }

    #[test]
    fn included_units_are_the_why() {
        let rows = "p,agent,,EUR,per_unit,,,4.00,,,5,,,\n";
        let e = explain(&line(rows, dec!(8)));
        assert_eq!(e.included_quantity, dec!(5));
        assert_eq!(e.billable_quantity, Some(dec!(3)));
        assert_eq!(e.why.as_deref(), Some("5 units included free, 3 billed"));
    }

    #[test]
    fn packages_are_the_why() {
        let rows = "k,agent,,EUR,package,,,25.00,,10,,,,\n";
        let l = line(rows, dec!(21));
        assert_eq!((l.amount, l.rate), (dec!(75.00), dec!(3.5714)));
        let e = explain(&l);
        assert_eq!(e.package_size, Some(dec!(10)));
        assert_eq!(e.tiers[0].units, dec!(3));
        let why = e.why.unwrap();
        assert!(
            why.starts_with("billed in packages of 10: 3 packages"),
            "{why}"
        );
    }

    #[test]
    fn a_flat_fee_is_the_why_except_for_one_unit() {
        let rows = "f,agent,,EUR,flat,,,,99.90,,,,,\n";
        let e = explain(&line(rows, dec!(4)));
        assert_eq!(e.flat_fee_applied, Some(dec!(99.90)));
        assert_eq!(
            e.why.as_deref(),
            Some("flat fee 99.90, whatever the quantity")
        );
        assert_eq!(explain(&line(rows, dec!(1))).why, None);
    }

    #[test]
    fn a_rounded_midpoint_is_the_why() {
        let e = explain(&line("p,agent,,EUR,per_unit,,,0.835,,,,,,\n", dec!(3)));
        assert_eq!((e.raw_amount, e.rounded_amount), (dec!(2.505), dec!(2.51)));
        assert_eq!(
            e.why.as_deref(),
            Some("raw amount 2.505 rounded half_up to 2.51")
        );
    }

    #[test]
    fn an_adjustment_carries_its_previous_amount_and_reason() {
        // Pushed with 25 users (275.00); a re-run finds 27: revision 2 is +2 and +20.00.
        let mut l = line(GRADUATED, dec!(27));
        assert_eq!(l.amount, dec!(295.00));
        l.revision = 2;
        l.quantity = dec!(2);
        l.amount = dec!(20.00);
        let e = explain(&l);
        assert_eq!(e.previous_amount, Some(dec!(275.00)));
        assert_eq!(e.rounded_amount, dec!(295.00));
        assert_eq!(
            e.reason.as_deref(),
            Some("a re-run found quantity 27 instead of the 25 already sent")
        );
        assert_eq!(
            e.why.as_deref(),
            Some(
                "adjustment: quantity 25 → 27, amount 275.00 → 295.00; this revision carries the difference"
            )
        );
    }

    #[test]
    fn a_reversal_reads_its_reason_from_an_old_style_trace() {
        let mut l = line(GRADUATED, dec!(25));
        l.revision = 2;
        l.quantity = dec!(-25);
        l.amount = dec!(-275.00);
        l.rate = Decimal::ZERO;
        l.total_quantity = Decimal::ZERO;
        l.total_amount = dec!(0.00);
        l.price_ref = String::new();
        l.trace = serde_json::json!({ "reason": crate::domain::REVERSAL_REASON }).into();
        let e = explain(&l);
        assert_eq!(e.model, "");
        assert!(e.tiers.is_empty());
        assert_eq!(e.previous_amount, Some(dec!(275.00)));
        assert_eq!(e.reason.as_deref(), Some(crate::domain::REVERSAL_REASON));
        assert!(e.why.unwrap().starts_with("reversal: quantity 25 → 0"));
        // A trace with nothing in it is read, not refused.
        l.trace = Trace::empty();
        assert_eq!(explain(&l).rounding, "");
    }
}
