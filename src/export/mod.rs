//! Exports accountants open: the ledger's lines as CSV and XLSX, with the calculation columns
//! that say how every amount was reached (docs/PRICING.md "How a line explains itself").
//!
//! `tally lines --format csv|xlsx` and the review page's downloads write exactly these bytes, so
//! that what a person checks in a spreadsheet is what the terminal shows. The rules shared by
//! every output live here: rates with one number of decimals per currency (the currency's
//! minor units, or more when one of its rates needs them), amounts with the currency's minor
//! units, and totals per currency *and* status (a draft and a pushed amount are never added).

mod csv;
mod xlsx;

pub use self::csv::lines_csv;
pub use self::xlsx::lines_xlsx;

use crate::domain::{Currency, LedgerLine, LineStatus, REVERSAL_REASON, checked_sum};
use crate::pricing::explain::{Explanation, explain};
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// The number of decimals every rate of a currency is shown with: the currency's minor units,
/// or more when a rate of that currency (a line's, or a tier's in its trace) needs them. One
/// number per currency, so that the rates of a column line up and none looks rounded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateDecimals(BTreeMap<Currency, u32>);

impl RateDecimals {
    /// The decimals of the rates of `lines`, per currency.
    pub fn of(lines: &[LedgerLine]) -> RateDecimals {
        let mut map: BTreeMap<Currency, u32> = BTreeMap::new();
        for l in lines {
            let needed = std::iter::once(l.rate)
                .chain(explain(l).tiers.iter().map(|t| t.rate))
                .map(|r| r.normalize().scale())
                .max()
                .unwrap_or(0);
            let entry = map.entry(l.currency).or_insert(l.currency.minor_units());
            *entry = (*entry).max(needed);
        }
        RateDecimals(map)
    }

    /// The decimals of `currency`'s rates (its minor units when no line of it was seen).
    pub fn get(&self, currency: Currency) -> u32 {
        self.0
            .get(&currency)
            .copied()
            .unwrap_or(currency.minor_units())
    }

    /// `rate` written with its currency's decimals.
    pub fn rate(&self, currency: Currency, rate: Decimal) -> String {
        with_decimals(rate, self.get(currency))
    }
}

/// `value` with at least `decimals` digits after the point (never fewer: an unrounded raw
/// amount such as 2.505 keeps its third digit, a rate is never cut).
pub fn with_decimals(value: Decimal, decimals: u32) -> String {
    let mut v = value;
    if v.scale() < decimals {
        v.rescale(decimals);
    } else if v.normalize().scale() <= decimals {
        // More digits than needed, all trailing zeros ("11.0000" for a 2-decimal currency
        // whose rates need 2): the same number, written like its neighbours.
        v = v.normalize();
        v.rescale(decimals);
    }
    v.to_string()
}

/// An amount of `currency`, with its minor units.
pub fn amount(currency: Currency, value: Decimal) -> String {
    with_decimals(value, currency.minor_units())
}

/// Sums of the listed revisions' amounts per currency and status: what the customers are
/// billed, split by how far each amount is (a draft is not yet an invoice). `None` when a sum
/// does not fit a `Decimal`.
pub fn totals_by_status(lines: &[LedgerLine]) -> Option<BTreeMap<(Currency, Status), Decimal>> {
    let mut groups: BTreeMap<(Currency, Status), Vec<Decimal>> = BTreeMap::new();
    for l in lines {
        groups
            .entry((l.currency, Status(l.status)))
            .or_default()
            .push(l.amount);
    }
    groups
        .into_iter()
        .map(|(k, amounts)| checked_sum(amounts).map(|sum| (k, sum)))
        .collect()
}

/// A line status ordered as a line moves (draft, approved, pushing, pushed), to list totals in
/// that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub LineStatus);

impl Status {
    fn rank(&self) -> u8 {
        match self.0 {
            LineStatus::Draft => 0,
            LineStatus::Approved => 1,
            LineStatus::Pushing => 2,
            LineStatus::Pushed => 3,
        }
    }
}

impl PartialOrd for Status {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Status {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

/// `line`, `adjustment` or `reversal`: what kind of revision a row is.
pub fn kind(l: &LedgerLine) -> &'static str {
    if l.trace.reason().as_deref() == Some(REVERSAL_REASON) {
        "reversal"
    } else if l.is_adjustment() {
        "adjustment"
    } else {
        "line"
    }
}

/// The tiers of an explanation as one cell:
/// `1–10: 10 × 12.50 = 125.00; 11–50: 15 × 10.00 = 150.00`, a flat fee as `+ 5.00`,
/// packages as `3 packages × 25.00`, a flat price as `flat fee 99.90`.
pub fn tiers_text(e: &Explanation, currency: Currency, rates: &RateDecimals) -> String {
    let parts: Vec<String> = e
        .tiers
        .iter()
        .map(|t| {
            let total = amount(currency, t.amount);
            if e.model == "flat" {
                return format!("flat fee {total}");
            }
            let fee = t
                .flat_fee
                .map(|f| format!(" + {}", amount(currency, f)))
                .unwrap_or_default();
            let units = if e.model == "package" {
                format!("{} packages", t.units)
            } else {
                t.units.to_string()
            };
            let product = format!("{units} × {}{fee} = {total}", rates.rate(currency, t.rate));
            if e.model == "graduated" || e.model == "volume" {
                let range = match t.to {
                    Some(to) => format!("{}–{to}", t.from),
                    None => format!("{}–", t.from),
                };
                format!("{range}: {product}")
            } else {
                product
            }
        })
        .collect();
    parts.join("; ")
}

/// One exported row: every column of [`HEADERS`], as text or as a number with its decimals.
pub(crate) enum Cell {
    Text(String),
    /// A number and the decimals it is shown with.
    Number(Decimal, u32),
    /// A number with as many decimals as it has, at least `u32` (an unrounded raw amount).
    Exact(Decimal, u32),
    Empty,
}

/// The columns of both exports, snake_case, in this order. The first thirteen are the columns
/// of the `tally lines` table.
pub const HEADERS: [&str; 34] = [
    "period",
    "customer",
    "license_type",
    "source",
    "revision",
    "kind",
    "quantity",
    "rate",
    "amount",
    "currency",
    "status",
    "billing_system",
    "approved_by",
    "line_id",
    "total_quantity",
    "total_amount",
    "price_ref",
    "external_id",
    "idempotency_key",
    "approved_at",
    "approval_note",
    "model",
    "price_id",
    "price_version",
    "tiers",
    "included_quantity",
    "minimum_applied",
    "flat_fee_applied",
    "raw_amount",
    "rounding",
    "previous_amount",
    "reason",
    "why",
    "evidence_hash",
];

/// The cells of `l`'s row, in [`HEADERS`] order.
pub(crate) fn row(l: &LedgerLine, rates: &RateDecimals) -> Vec<Cell> {
    let e = explain(l);
    let minor = l.currency.minor_units();
    let text = |s: &str| {
        if s.is_empty() {
            Cell::Empty
        } else {
            Cell::Text(s.to_owned())
        }
    };
    let money = |d: Option<Decimal>| d.map_or(Cell::Empty, |d| Cell::Number(d, minor));
    let quantity = |d: Decimal| Cell::Exact(d, 0);
    vec![
        text(&l.key.period.to_string()),
        text(l.key.billing_account.as_str()),
        text(l.key.license_type.as_str()),
        text(l.key.source.as_str()),
        Cell::Number(Decimal::from(l.revision), 0),
        text(kind(l)),
        quantity(l.quantity),
        Cell::Number(l.rate, rates.get(l.currency)),
        Cell::Number(l.amount, minor),
        text(l.currency.code()),
        text(l.status.as_str()),
        text(&l.sink),
        text(
            &l.approval
                .as_ref()
                .map(|a| a.by.clone())
                .unwrap_or_default(),
        ),
        Cell::Number(Decimal::from(l.id), 0),
        quantity(l.total_quantity),
        Cell::Number(l.total_amount, minor),
        text(&l.price_ref),
        text(l.external_id.as_deref().unwrap_or_default()),
        text(&l.idempotency_key),
        text(
            &l.approval
                .as_ref()
                .map(|a| a.at.to_rfc3339())
                .unwrap_or_default(),
        ),
        text(
            l.approval
                .as_ref()
                .and_then(|a| a.note.as_deref())
                .unwrap_or_default(),
        ),
        text(&e.model),
        text(&e.price_id),
        text(&e.price_version),
        text(&tiers_text(&e, l.currency, rates)),
        quantity(e.included_quantity),
        money(e.minimum_applied),
        money(e.flat_fee_applied),
        Cell::Exact(e.raw_amount, minor),
        text(&e.rounding),
        money(e.previous_amount),
        text(e.reason.as_deref().unwrap_or_default()),
        text(e.why.as_deref().unwrap_or_default()),
        text(&l.evidence.hash),
    ]
}

impl Cell {
    /// The cell as CSV text: numbers with their decimals.
    pub(crate) fn text(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Number(d, decimals) | Cell::Exact(d, decimals) => with_decimals(*d, *decimals),
            Cell::Empty => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{BillingAccount, Evidence, LicenseType, LineKey, SourceName, Trace};
    use chrono::Utc;
    use rust_decimal_macros::dec;

    fn line(currency: &str, rate: Decimal, amount: Decimal, status: LineStatus) -> LedgerLine {
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
            quantity: dec!(3),
            amount,
            rate,
            currency: currency.parse().unwrap(),
            total_quantity: dec!(3),
            total_amount: amount,
            price_ref: "p@open".into(),
            trace: Trace::empty(),
            evidence: Evidence::default(),
            sink: "rambase".into(),
            status,
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

    #[test]
    fn rates_of_a_currency_share_the_decimals_its_finest_rate_needs() {
        let lines = [
            line("EUR", dec!(12.50), dec!(37.50), LineStatus::Draft),
            line("EUR", dec!(12.0833), dec!(36.25), LineStatus::Pushed),
            line("NOK", dec!(135.00), dec!(405.00), LineStatus::Draft),
            line("JPY", dec!(120), dec!(360), LineStatus::Draft),
        ];
        let rates = RateDecimals::of(&lines);
        let eur: Currency = "EUR".parse().unwrap();
        assert_eq!(rates.rate(eur, dec!(12.50)), "12.5000");
        assert_eq!(rates.rate(eur, dec!(12.0833)), "12.0833");
        assert_eq!(rates.rate("NOK".parse().unwrap(), dec!(135.00)), "135.00");
        assert_eq!(rates.rate("JPY".parse().unwrap(), dec!(120)), "120");
        // A currency with no line: its minor units.
        assert_eq!(rates.get("KWD".parse().unwrap()), 3);
        assert_eq!(with_decimals(dec!(11.0000), 2), "11.00");
        assert_eq!(with_decimals(dec!(2.505), 2), "2.505");
        assert_eq!(amount(eur, dec!(5)), "5.00");
    }

    #[test]
    fn totals_never_add_a_draft_to_what_was_pushed() {
        let lines = [
            line("EUR", dec!(10), dec!(30.00), LineStatus::Draft),
            line("EUR", dec!(10), dec!(20.00), LineStatus::Draft),
            line("EUR", dec!(10), dec!(5.00), LineStatus::Pushed),
            line("NOK", dec!(10), dec!(1.00), LineStatus::Approved),
        ];
        let totals: Vec<(String, LineStatus, Decimal)> = totals_by_status(&lines)
            .unwrap()
            .into_iter()
            .map(|((c, s), t)| (c.code().to_owned(), s.0, t))
            .collect();
        assert_eq!(
            totals,
            vec![
                ("EUR".into(), LineStatus::Draft, dec!(50.00)),
                ("EUR".into(), LineStatus::Pushed, dec!(5.00)),
                ("NOK".into(), LineStatus::Approved, dec!(1.00)),
            ]
        );
        let huge = Decimal::MAX;
        let too_much = [
            line("EUR", dec!(1), huge, LineStatus::Draft),
            line("EUR", dec!(1), huge, LineStatus::Draft),
        ];
        assert_eq!(totals_by_status(&too_much), None);
    }

    #[test]
    fn the_csv_starts_with_a_byte_order_mark_and_the_snake_case_headers() {
        let bytes = lines_csv(&[line("EUR", dec!(12.50), dec!(37.50), LineStatus::Draft)]).unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        let text = text.strip_prefix('\u{feff}').expect("a byte-order mark");
        let header = text.lines().next().unwrap();
        assert_eq!(header, HEADERS.join(","));
        assert!(text.contains(",3,12.50,37.50,EUR,draft,"), "{text}");
    }
}
