//! What the pages show, computed from ledger lines: amounts with their currency's decimals,
//! rates with one number of decimals per currency, subtotals and totals (the same sums as
//! `tally lines`: every revision's amount, so that the page and the CLI agree to the cent),
//! a period's status, and a line's explanation.

use crate::domain::{LedgerLine, LineStatus, REVERSAL_REASON};
use crate::export::RateDecimals;
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// An amount as a plain decimal with exactly `decimals` decimals (`1234.50`), for `data-amount`.
pub fn plain(amount: Decimal, decimals: u32) -> String {
    let rounded = amount.round_dp(decimals);
    format!("{rounded:.prec$}", prec = decimals as usize)
}

/// An amount for people: [`plain`] with thin spaces between thousands (`1 234.50`).
pub fn readable(amount: Decimal, decimals: u32) -> String {
    let text = plain(amount, decimals);
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.as_str()),
    };
    let (whole, fraction) = match digits.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (digits, None),
    };
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push('\u{202f}');
        }
        grouped.push(c);
    }
    match fraction {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

/// The kind of a revision, as `tally lines` names it.
pub fn kind(line: &LedgerLine) -> &'static str {
    if line.trace.reason().as_deref() == Some(REVERSAL_REASON) {
        "reversal"
    } else if line.is_adjustment() {
        "adjustment"
    } else {
        "line"
    }
}

/// One number of decimals for the rates of each currency, the same as the exports'
/// (`export::RateDecimals`: the currency's own, or more when one of its rates needs more).
pub fn rate_decimals(lines: &[LedgerLine]) -> RateDecimals {
    RateDecimals::of(lines)
}

/// A currency's total with its split by status.
#[derive(Debug, Clone, Serialize)]
pub struct CurrencyTotal {
    pub currency: String,
    pub amount: String,
    pub text: String,
    /// (status, readable amount) for each status that has lines.
    pub by_status: Vec<(String, String)>,
}

/// Sums every revision's amount per currency, and per status within it.
pub fn totals(lines: &[&LedgerLine]) -> Vec<CurrencyTotal> {
    let mut sums: BTreeMap<String, (u32, Decimal, BTreeMap<&'static str, Decimal>)> =
        BTreeMap::new();
    for l in lines {
        let entry = sums.entry(l.currency.to_string()).or_insert((
            l.currency.minor_units(),
            Decimal::ZERO,
            BTreeMap::new(),
        ));
        entry.1 = entry.1.checked_add(l.amount).unwrap_or(entry.1);
        let by = entry.2.entry(l.status.as_str()).or_insert(Decimal::ZERO);
        *by = by.checked_add(l.amount).unwrap_or(*by);
    }
    sums.into_iter()
        .map(|(currency, (decimals, total, by))| CurrencyTotal {
            amount: plain(total, decimals),
            text: readable(total, decimals),
            by_status: ["draft", "approved", "pushing", "pushed"]
                .iter()
                .filter_map(|s| by.get(s).map(|a| ((*s).to_owned(), readable(*a, decimals))))
                .collect(),
            currency,
        })
        .collect()
}

/// A period's state as the list of periods shows it.
pub fn period_status(lines: &[LedgerLine], closed: bool) -> &'static str {
    if lines.iter().any(|l| l.status == LineStatus::Draft) {
        "waiting for approval"
    } else if closed {
        "closed"
    } else if !lines.is_empty() && lines.iter().all(|l| l.status == LineStatus::Pushed) {
        "pushed"
    } else {
        "open"
    }
}

/// One revision as a row of the period page.
#[derive(Debug, Clone, Serialize)]
pub struct LineRow {
    pub id: i64,
    pub license_type: String,
    pub source: String,
    pub revision: i32,
    pub kind: &'static str,
    pub quantity: String,
    pub rate: String,
    pub amount: String,
    pub amount_text: String,
    pub currency: String,
    pub status: &'static str,
    pub draft: bool,
    /// A draft whose figures changed after it had been approved: shown as back in review.
    pub back_to_review: bool,
    pub approved_by: Option<String>,
    pub automatic: bool,
}

/// `back`: the ids of the period's drafts back in review ([`crate::store::Store::back_to_review_ids`]).
pub fn line_row(l: &LedgerLine, rates: &RateDecimals, back: &BTreeSet<i64>) -> LineRow {
    let minor = l.currency.minor_units();
    LineRow {
        id: l.id,
        license_type: l.key.license_type.to_string(),
        source: l.key.source.to_string(),
        revision: l.revision,
        kind: kind(l),
        quantity: l.quantity.normalize().to_string(),
        rate: rates.rate(l.currency, l.rate),
        amount: plain(l.amount, minor),
        amount_text: readable(l.amount, minor),
        currency: l.currency.to_string(),
        status: l.status.as_str(),
        draft: l.status == LineStatus::Draft,
        back_to_review: l.status == LineStatus::Draft && back.contains(&l.id),
        approved_by: l.approval.as_ref().map(|a| a.by.clone()),
        automatic: l
            .approval
            .as_ref()
            .is_some_and(|a| a.by.starts_with("rule:")),
    }
}

/// A customer's section of the period page.
#[derive(Debug, Clone, Serialize)]
pub struct CustomerView {
    pub account: String,
    pub lines: Vec<LineRow>,
    pub subtotals: Vec<CurrencyTotal>,
    pub drafts: usize,
}

/// The lines grouped by billing account (in account order), each group with its subtotals.
pub fn by_customer(lines: &[LedgerLine], back: &BTreeSet<i64>) -> Vec<CustomerView> {
    let rates = rate_decimals(lines);
    let mut groups: BTreeMap<String, Vec<&LedgerLine>> = BTreeMap::new();
    for l in lines {
        groups
            .entry(l.key.billing_account.to_string())
            .or_default()
            .push(l);
    }
    groups
        .into_iter()
        .map(|(account, group)| CustomerView {
            lines: group.iter().map(|l| line_row(l, &rates, back)).collect(),
            subtotals: totals(&group),
            drafts: group
                .iter()
                .filter(|l| l.status == LineStatus::Draft)
                .count(),
            account,
        })
        .collect()
}

/// A line's explanation (`pricing::explain`) as the detail page's template reads it.
pub fn explanation(line: &LedgerLine) -> serde_json::Value {
    serde_json::to_value(crate::pricing::explain::explain(line)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn amounts_keep_the_currency_decimals_and_group_thousands() {
        assert_eq!(plain(dec!(1234.5), 2), "1234.50");
        assert_eq!(plain(dec!(-4), 2), "-4.00");
        assert_eq!(plain(dec!(7), 0), "7");
        assert_eq!(readable(dec!(1234567.5), 2), "1\u{202f}234\u{202f}567.50");
        assert_eq!(readable(dec!(-123.4), 2), "-123.40");
    }
}
