//! One row of the pricing CSV: its columns by name, every cell parsed and checked, and the
//! problems found, with `file:row:column`. The passes over rows and prices are in `table`.

use super::Model;
use crate::domain::{BillingAccount, Currency, LicenseType};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use std::str::FromStr;

/// The exact header, in order.
pub(super) const COLUMNS: [&str; 14] = [
    "price_id",
    "license_type",
    "customer",
    "currency",
    "model",
    "tier_from",
    "tier_to",
    "unit_price",
    "flat_fee",
    "package_size",
    "included_quantity",
    "min_charge",
    "effective_from",
    "effective_to",
];

// Column indexes, named so that the code reads like the spreadsheet.
pub(super) const PRICE_ID: usize = 0;
pub(super) const LICENSE_TYPE: usize = 1;
pub(super) const CUSTOMER: usize = 2;
pub(super) const CURRENCY: usize = 3;
pub(super) const MODEL: usize = 4;
pub(super) const TIER_FROM: usize = 5;
pub(super) const TIER_TO: usize = 6;
pub(super) const UNIT_PRICE: usize = 7;
pub(super) const FLAT_FEE: usize = 8;
pub(super) const PACKAGE_SIZE: usize = 9;
pub(super) const INCLUDED_QUANTITY: usize = 10;
pub(super) const MIN_CHARGE: usize = 11;
pub(super) const EFFECTIVE_FROM: usize = 12;
pub(super) const EFFECTIVE_TO: usize = 13;

/// Columns that must agree across the rows of one price version (all but the tier columns).
pub(super) const VERSION_COLUMNS: [usize; 7] = [
    LICENSE_TYPE,
    CUSTOMER,
    CURRENCY,
    MODEL,
    PACKAGE_SIZE,
    INCLUDED_QUANTITY,
    MIN_CHARGE,
];

/// Columns that must agree across all versions of one `price_id`.
pub(super) const IDENTITY_COLUMNS: [usize; 3] = [LICENSE_TYPE, CUSTOMER, CURRENCY];

/// The problems found, at `file:row:column`.
pub(super) type Problems<'a> = crate::problem::CsvProblems<'a>;

/// One data row with every cell parsed. Only rows without a bad cell become a `Row`.
#[derive(Debug, Clone)]
pub(super) struct Row {
    /// Spreadsheet row number (header = 1).
    pub(super) row: usize,
    /// The trimmed cells as written, to compare rows and quote them in messages.
    pub(super) cells: Vec<String>,
    pub(super) price_id: String,
    pub(super) license_type: LicenseType,
    pub(super) customer: Option<BillingAccount>,
    pub(super) currency: Currency,
    pub(super) model: Model,
    pub(super) tier_from: Option<Decimal>,
    pub(super) tier_to: Option<Decimal>,
    pub(super) unit_price: Option<Decimal>,
    pub(super) flat_fee: Option<Decimal>,
    pub(super) package_size: Option<Decimal>,
    pub(super) included_quantity: Option<Decimal>,
    pub(super) min_charge: Option<Decimal>,
    pub(super) effective_from: Option<NaiveDate>,
    pub(super) effective_to: Option<NaiveDate>,
}

/// A version is identified by its price id and its effective range as written.
pub(super) type VersionKey = (String, String, String);

pub(super) fn version_key(cells: &[String]) -> VersionKey {
    (
        cells[PRICE_ID].clone(),
        cells[EFFECTIVE_FROM].clone(),
        cells[EFFECTIVE_TO].clone(),
    )
}

/// Parses the cells of one row; on any bad cell, reports it and returns the row's version key.
pub(super) fn parse_row(
    row: usize,
    cells: Vec<String>,
    problems: &mut Problems<'_>,
) -> Result<Row, VersionKey> {
    let before = problems.count();
    let cell = |c: usize| cells[c].as_str();

    if cell(PRICE_ID).is_empty() {
        problems.at(
            row,
            PRICE_ID,
            "price_id is empty: every row names its price",
        );
    }
    if cell(LICENSE_TYPE).is_empty() {
        problems.at(
            row,
            LICENSE_TYPE,
            "license_type is empty: say what is sold, as the mapping rules name it",
        );
    }
    let currency = match Currency::from_str(cell(CURRENCY)) {
        Ok(c) => Some(c),
        Err(e) => {
            problems.at(row, CURRENCY, e.to_string());
            None
        }
    };
    let model = match cell(MODEL).to_ascii_lowercase().as_str() {
        "per_unit" => Some(Model::PerUnit),
        "graduated" => Some(Model::Graduated),
        "volume" => Some(Model::Volume),
        "package" => Some(Model::Package),
        "flat" => Some(Model::Flat),
        _ => {
            problems.at(
                row,
                MODEL,
                format!(
                    "unknown model {:?}: expected per_unit, graduated, volume, package or flat",
                    cell(MODEL)
                ),
            );
            None
        }
    };
    let mut number = |c: usize| parse_number(row, c, cell(c), problems);
    let tier_from = number(TIER_FROM);
    let tier_to = number(TIER_TO);
    let unit_price = number(UNIT_PRICE);
    let flat_fee = number(FLAT_FEE);
    let package_size = number(PACKAGE_SIZE);
    let included_quantity = number(INCLUDED_QUANTITY);
    let min_charge = number(MIN_CHARGE);
    let effective_from = parse_date(row, EFFECTIVE_FROM, cell(EFFECTIVE_FROM), problems);
    let effective_to = parse_date(row, EFFECTIVE_TO, cell(EFFECTIVE_TO), problems);

    if let (Ok(Some(from)), Ok(Some(to))) = (effective_from, effective_to)
        && to < from
    {
        problems.at(
            row,
            EFFECTIVE_TO,
            format!("effective_to {to} is before effective_from {from}: the dates run backwards"),
        );
    }
    if let (Ok(Some(from)), Ok(Some(to))) = (tier_from, tier_to)
        && to < from
    {
        problems.at(
            row,
            TIER_TO,
            format!("tier_to {to} is below tier_from {from}: the tier runs backwards"),
        );
    }

    if let Some(model) = model {
        let present = |c: usize| !cells[c].is_empty();
        let mut need = |c: usize, why: &str| {
            if !present(c) {
                problems.at(row, c, format!("{} is empty: {why}", COLUMNS[c]));
            }
        };
        match model {
            Model::PerUnit => need(UNIT_PRICE, "a per_unit price needs the price of one unit"),
            Model::Package => {
                need(UNIT_PRICE, "a package price needs the price of one package");
                need(
                    PACKAGE_SIZE,
                    "a package price needs the number of units per package",
                );
            }
            Model::Flat => need(FLAT_FEE, "a flat price charges its flat_fee"),
            Model::Graduated | Model::Volume => {
                need(
                    UNIT_PRICE,
                    "every tier needs a unit_price (0 for a free tier)",
                );
                need(
                    TIER_FROM,
                    "every tier needs its first unit (0 or 1 for the first tier)",
                );
            }
        }
        let mut refuse = |c: usize, why: &str| {
            if present(c) {
                problems.at(
                    row,
                    c,
                    format!("{} is {:?} but {why}: leave it empty", COLUMNS[c], cells[c]),
                );
            }
        };
        if !model.is_tiered() {
            let why = format!("model {model} has no tiers (use graduated or volume for tiers)");
            refuse(TIER_FROM, &why);
            refuse(TIER_TO, &why);
        }
        if model != Model::Package {
            refuse(
                PACKAGE_SIZE,
                &format!("package_size means nothing for model {model}"),
            );
        }
        match model {
            Model::PerUnit | Model::Package => refuse(
                FLAT_FEE,
                &format!("model {model} does not charge a flat fee (it would be ignored)"),
            ),
            Model::Flat => refuse(
                UNIT_PRICE,
                "model flat charges its flat_fee only (it would be ignored)",
            ),
            Model::Graduated | Model::Volume => {}
        }
        if let Ok(Some(size)) = package_size
            && size.is_zero()
        {
            problems.at(
                row,
                PACKAGE_SIZE,
                "package_size is 0: a package holds at least one unit",
            );
        }
    }

    if problems.count() > before {
        return Err(version_key(&cells));
    }
    let (
        Some(currency),
        Some(model),
        Ok(tier_from),
        Ok(tier_to),
        Ok(unit_price),
        Ok(flat_fee),
        Ok(package_size),
        Ok(included_quantity),
        Ok(min_charge),
        Ok(effective_from),
        Ok(effective_to),
    ) = (
        currency,
        model,
        tier_from,
        tier_to,
        unit_price,
        flat_fee,
        package_size,
        included_quantity,
        min_charge,
        effective_from,
        effective_to,
    )
    else {
        // Every failure above pushed a problem, so this is not reached; stay safe anyway.
        return Err(version_key(&cells));
    };
    Ok(Row {
        row,
        price_id: cells[PRICE_ID].clone(),
        license_type: LicenseType::new(cells[LICENSE_TYPE].clone()),
        customer: (!cells[CUSTOMER].is_empty())
            .then(|| BillingAccount::new(cells[CUSTOMER].clone())),
        currency,
        model,
        tier_from,
        tier_to,
        unit_price,
        flat_fee,
        package_size,
        included_quantity,
        min_charge,
        effective_from,
        effective_to,
        cells,
    })
}

/// An optional, non-negative decimal. `Err(())` means a problem was reported.
pub(super) fn parse_number(
    row: usize,
    column: usize,
    text: &str,
    problems: &mut Problems<'_>,
) -> Result<Option<Decimal>, ()> {
    if text.is_empty() {
        return Ok(None);
    }
    let name = COLUMNS[column];
    // `Decimal::from_str` alone accepts a few spellings a spreadsheet never means (such as
    // `1_000`); only digits, one point and a sign are a number here.
    let plain = text
        .chars()
        .all(|c| c.is_ascii_digit() || c == '.' || c == '-' || c == '+');
    let hint = if text.contains(',') {
        " (write decimals with a point and no thousands separator, e.g. 12.50)"
    } else if text.contains(['e', 'E']) && text.chars().any(|c| c.is_ascii_digit()) {
        " (exponent notation is not accepted: write the number out, e.g. 1000)"
    } else {
        " (expected a decimal number such as 12.50)"
    };
    let value = if plain {
        Decimal::from_str(text).ok()
    } else {
        None
    };
    match value {
        None => {
            problems.at(
                row,
                column,
                format!("{name} {text:?} is not a decimal number{hint}"),
            );
            Err(())
        }
        Some(v) if v.is_sign_negative() && !v.is_zero() => {
            problems.at(
                row,
                column,
                format!("{name} {text:?} is negative: prices and quantities are 0 or more"),
            );
            Err(())
        }
        Some(v) if v.abs() > max_number() => {
            problems.at(
                row,
                column,
                format!(
                    "{name} {text:?} is too large: the table accepts numbers up to {}",
                    max_number()
                ),
            );
            Err(())
        }
        Some(v) => Ok(Some(v)),
    }
}

/// The largest number a cell may hold. Far above any real price or tier, and small enough that
/// a quantity up to 10^16 times it cannot overflow a `Decimal` (about 7.9 × 10^28): pricing must
/// never panic halfway through a run.
pub(super) fn max_number() -> Decimal {
    Decimal::from(1_000_000_000_000i64)
}

/// An optional `YYYY-MM-DD` date. `Err(())` means a problem was reported.
pub(super) fn parse_date(
    row: usize,
    column: usize,
    text: &str,
    problems: &mut Problems<'_>,
) -> Result<Option<NaiveDate>, ()> {
    if text.is_empty() {
        return Ok(None);
    }
    // chrono accepts `2026-1-5`; the table wants the one spelling that sorts as text.
    let shaped = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        Ok(d) if shaped => Ok(Some(d)),
        _ => {
            problems.at(
                row,
                column,
                format!(
                    "{} {text:?} is not a date: expected YYYY-MM-DD, e.g. 2026-10-01 (empty = open)",
                    COLUMNS[column]
                ),
            );
            Err(())
        }
    }
}

/// Comparable form of a cell: numbers by value (`12.5` = `12.50`), codes without case.
pub(super) fn comparable(column: usize, text: &str) -> String {
    match column {
        CURRENCY | MODEL => text.to_ascii_uppercase(),
        PACKAGE_SIZE | INCLUDED_QUANTITY | MIN_CHARGE => Decimal::from_str(text)
            .map(|d| d.normalize().to_string())
            .unwrap_or_else(|_| text.to_owned()),
        _ => text.to_owned(),
    }
}
